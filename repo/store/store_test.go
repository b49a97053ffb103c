package store_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/hivefleet/hive/repo/store"
)

func TestPutCommitDiscard(t *testing.T) {
	s, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Put(strings.NewReader("hello"), 10)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(p.File()); string(b) != "hello" {
		t.Errorf("pending content %q", b)
	}
	if s.Has(p.Sum) {
		t.Errorf("visible before commit")
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(p.Sum)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "hello" {
		t.Errorf("blob %q", b)
	}
	if _, err := s.Put(bytes.NewReader(make([]byte, 11)), 10); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("over limit: %v", err)
	}
	d, _ := s.Put(strings.NewReader("gone"), 0)
	d.Discard()
	if s.Has(d.Sum) {
		t.Errorf("discarded blob visible")
	}
	ents, _ := os.ReadDir(s.TempDir())
	if len(ents) != 0 {
		t.Errorf("%d temporary files left", len(ents))
	}
	if _, err := s.Open("../../etc/passwd"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bad sum: %v", err)
	}
}

// TestCommitAndPutAllWithFiles: files written with a commit or a PutAll
// land at their paths with their content, next to the blobs, and no
// temporary file stays behind.
func TestCommitAndPutAllWithFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Put(strings.NewReader("blob"), 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := dir + "/record.json"
	if err := p.Commit(store.File{Path: rec, Data: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(rec); string(b) != `{"a":1}` || !s.Has(p.Sum) {
		t.Errorf("commit: record %q, blob present %v", b, s.Has(p.Sum))
	}
	gen := dir + "/gen.json"
	sums, err := s.PutAll([][]byte{[]byte("one"), []byte("two")}, store.File{Path: gen, Data: []byte("g")})
	if err != nil {
		t.Fatal(err)
	}
	for _, sum := range sums {
		if !s.Has(sum) {
			t.Errorf("blob %s missing", sum)
		}
	}
	if b, _ := os.ReadFile(gen); string(b) != "g" {
		t.Errorf("generation file %q", b)
	}
	// A file that cannot be renamed into place (a non-empty directory is
	// there) fails the call, leaving no temporary file behind.
	if _, err := s.PutAll([][]byte{[]byte("three")}, store.File{Path: dir, Data: nil}); err == nil {
		t.Errorf("write over a directory succeeded")
	}
	ents, _ := os.ReadDir(s.TempDir())
	if len(ents) != 0 {
		t.Errorf("%d temporary files left", len(ents))
	}
}
