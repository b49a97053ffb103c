package repo

import (
	"testing"
	"time"
)

func TestPins(t *testing.T) {
	now := time.Now()
	var p pins
	if doc, ok := signedDoc("yum/repodata/repomd.xml.asc"); !ok || doc != "yum/repodata/repomd.xml" {
		t.Fatalf("signedDoc(repomd.xml.asc) = %q, %v", doc, ok)
	}
	if doc, ok := signedDoc("apt/dists/stable/Release.gpg"); !ok || doc != "apt/dists/stable/Release" {
		t.Fatalf("signedDoc(Release.gpg) = %q, %v", doc, ok)
	}
	if _, ok := signedDoc("apt/dists/stable/InRelease"); ok {
		t.Fatal("InRelease is clear-signed, not a detached signature")
	}
	p.record("10.0.0.1:40000", "yum/repodata/repomd.xml", 7, now)
	// The same connection, and another connection from the same host.
	for _, addr := range []string{"10.0.0.1:40000", "10.0.0.1:40001"} {
		if n, ok := p.lookup(addr, "yum/repodata/repomd.xml", now); !ok || n != 7 {
			t.Errorf("lookup(%s) = %d, %v; want 7", addr, n, ok)
		}
	}
	if _, ok := p.lookup("10.0.0.2:40000", "yum/repodata/repomd.xml", now); ok {
		t.Error("another client is pinned too")
	}
	if _, ok := p.lookup("10.0.0.1:40000", "yum/repodata/repomd.xml", now.Add(pinTTL+time.Second)); ok {
		t.Error("pin outlived its TTL")
	}
	// A newer document on the connection wins over the host's older one.
	p.record("10.0.0.1:40002", "yum/repodata/repomd.xml", 8, now)
	if n, _ := p.lookup("10.0.0.1:40000", "yum/repodata/repomd.xml", now); n != 7 {
		t.Errorf("connection pin = %d, want 7", n)
	}
}
