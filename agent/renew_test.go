package agent

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/pki"
)

// TestRecoverPairAtEveryCrashPoint interrupts installPair at each step
// (as a crash would) and checks that recoverPair leaves a certificate and
// key that load together: the new pair once both new files were
// complete, the old pair before.
func TestRecoverPairAtEveryCrashPoint(t *testing.T) {
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	issue := func() ([]byte, []byte) {
		iss, err := ca.Issue(pki.CertRequest{Identity: pki.Identity{Kind: pki.KindAgent, Name: "web-1"}})
		if err != nil {
			t.Fatal(err)
		}
		return iss.CertPEM, iss.KeyPEM
	}
	oldCert, oldKey := issue()
	newCert, newKey := issue()
	for _, tt := range []struct {
		name    string
		crash   func(cert, key string) // the files a crash leaves, from the old pair
		wantNew bool
		did     string
	}{
		{"nothing pending", func(cert, key string) {}, false, ""},
		{"key.next written", func(cert, key string) {
			must(t, writeAtomic(key+renewNext, newKey, 0o600))
		}, false, ""},
		{"both .next written", func(cert, key string) {
			must(t, writeAtomic(key+renewNext, newKey, 0o600))
			must(t, writeAtomic(cert+renewNext, newCert, 0o644))
		}, true, "installed a renewed certificate written before a crash"},
		{"key moved, certificate not", func(cert, key string) {
			must(t, writeAtomic(key+renewNext, newKey, 0o600))
			must(t, writeAtomic(cert+renewNext, newCert, 0o644))
			must(t, os.Rename(key+renewNext, key))
		}, true, "finished installing a renewed certificate"},
		{"unusable cert.next", func(cert, key string) {
			must(t, writeAtomic(cert+renewNext, []byte("junk"), 0o644))
		}, false, "discarded an unusable half-written renewal"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cert, key := filepath.Join(dir, "agent.pem"), filepath.Join(dir, "agent-key.pem")
			must(t, writeAtomic(cert, oldCert, 0o644))
			must(t, writeAtomic(key, oldKey, 0o600))
			tt.crash(cert, key)
			did, err := recoverPair(cert, key)
			if err != nil || did != tt.did {
				t.Fatalf("recoverPair = %q, %v; want %q", did, err, tt.did)
			}
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				t.Fatalf("pair after recovery: %v", err)
			}
			want, _ := tls.X509KeyPair(oldCert, oldKey)
			if tt.wantNew {
				want, _ = tls.X509KeyPair(newCert, newKey)
			}
			if string(pair.Certificate[0]) != string(want.Certificate[0]) {
				t.Fatalf("recovered the wrong pair (want new: %v)", tt.wantNew)
			}
			for _, f := range []string{cert + renewNext, key + renewNext} {
				if _, err := os.Stat(f); err == nil {
					t.Errorf("%s left behind", f)
				}
			}
		})
	}
	// The whole installation, uninterrupted.
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "agent.pem"), filepath.Join(dir, "agent-key.pem")
	must(t, writeAtomic(cert, oldCert, 0o644))
	must(t, writeAtomic(key, oldKey, 0o600))
	must(t, installPair(cert, newCert, key, newKey))
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, %v", fi.Mode(), err)
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
