package yumindex_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hivefleet/hive/repo/yumindex"
)

// TestStreamEqualsBuild: entries added one at a time in href order give
// the files Build gives (the same uncompressed bytes, open checksums and
// sizes) and the same repomd.xml apart from the compressed files' names.
func TestStreamEqualsBuild(t *testing.T) {
	for _, n := range []int{0, 1, 700} {
		es := entries(n)
		opt := yumindex.Options{Revision: 1700000000, Timestamp: 1700000001}
		want, err := yumindex.Build(es, opt)
		if err != nil {
			t.Fatal(err)
		}
		s, err := yumindex.NewStream(n, opt)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries(n) { // fresh entries: nothing rendered
			if err := s.Add(e); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range want.Files {
			g, w := got.Files[i], want.Files[i]
			if g.Type != w.Type || g.OpenSHA != w.OpenSHA || g.OpenSize != w.OpenSize || g.Timestamp != w.Timestamp {
				t.Fatalf("n=%d %s: stream %s %s/%d, build %s %s/%d", n, w.Type, g.Type, g.OpenSHA, g.OpenSize, w.Type, w.OpenSHA, w.OpenSize)
			}
			if !bytes.Equal(gunzip(t, g.Data), gunzip(t, w.Data)) {
				t.Fatalf("n=%d %s: content differs", n, w.Type)
			}
			if !strings.HasPrefix(g.Name, "repodata/"+g.SHA256+"-") {
				t.Fatalf("n=%d: name %s does not carry the checksum %s", n, g.Name, g.SHA256)
			}
		}
		if !bytes.Equal(got.RepoMD, yumindex.RepoMD(got.Files, opt.Revision)) {
			t.Fatalf("n=%d: repomd.xml is not RepoMD of the files", n)
		}
	}
}

func TestStreamRefusesDisorderAndWrongCount(t *testing.T) {
	es := entries(3)
	s, _ := yumindex.NewStream(3, yumindex.Options{})
	if err := s.Add(es[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(es[0]); err == nil || !strings.Contains(err.Error(), "href order") {
		t.Fatalf("out of order: %v", err)
	}
	s, _ = yumindex.NewStream(2, yumindex.Options{})
	s.Add(es[0])
	if _, err := s.Close(); err == nil || !strings.Contains(err.Error(), "2 packages announced, 1 added") {
		t.Fatalf("short: %v", err)
	}
	s, _ = yumindex.NewStream(1, yumindex.Options{})
	s.Add(es[0])
	if err := s.Add(es[1]); err == nil || !strings.Contains(err.Error(), "more than the 1") {
		t.Fatalf("long: %v", err)
	}
}
