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
