package atomicfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/internal/atomicfile"
)

func TestWriteAndRemoveStale(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	if err := atomicfile.WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A failed Prepare leaves the target and no temporary file.
	err := atomicfile.Write(p, []byte("two"), atomicfile.Options{Perm: 0o600, Prepare: func(*os.File) error { return errors.New("no") }})
	if err == nil {
		t.Fatal("prepare error ignored")
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("target %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left over: %v", ents)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// Leftovers of crashed writes go; everything else stays.
	stale := []string{".state.json.hive-tmp-123", ".x.hive-tmp-9"}
	keep := []string{"state.json", "a.hive-tmp-1", ".b.hive-tmp-", ".c.hive-tmp-12x", ".d.tmp-5", "e"}
	for _, n := range append(append([]string(nil), stale...), keep[1:]...) {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".dir.hive-tmp-1"), 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := atomicfile.RemoveStale(dir, nil)
	if err != nil || len(removed) != len(stale) {
		t.Fatalf("removed %v, %v", removed, err)
	}
	for _, n := range append(keep, ".dir.hive-tmp-1") {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	if !atomicfile.IsTempOf(".state.json.hive-tmp-77", p) || atomicfile.IsTempOf(".state.json.hive-tmp-77", filepath.Join(dir, "json")) {
		t.Error("IsTempOf")
	}
	if removed, err := atomicfile.RemoveStale(filepath.Join(dir, "missing"), nil); err != nil || removed != nil {
		t.Errorf("missing dir: %v %v", removed, err)
	}
}

// TestPending: a streamed write is invisible until Commit, can be read
// back first, and Discard leaves nothing; CommitAs names the target once
// the content is known; a temporary directory on the same file system
// works.
func TestPending(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "big.bin")
	p, err := atomicfile.Create(target, atomicfile.Options{Perm: 0o644})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	for i := 0; i < 100; i++ {
		if _, err := p.Write(make([]byte, 1<<10)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target visible before Commit: %v", err)
	}
	if fi, err := p.File().Stat(); err != nil || fi.Size() != 100<<10 {
		t.Fatalf("read back: %v %v", fi, err)
	}
	if err := p.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	p.Discard() // no-op after Commit
	if fi, err := os.Stat(target); err != nil || fi.Size() != 100<<10 || fi.Mode().Perm() != 0o644 {
		t.Fatalf("committed: %v %v", fi, err)
	}
	if err := p.Commit(); err == nil {
		t.Error("second Commit accepted")
	}

	// Discarded: nothing left.
	p2, err := atomicfile.Create(filepath.Join(dir, "gone"), atomicfile.Options{Perm: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	p2.Write([]byte("x"))
	p2.Discard()
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("after Discard: %v", ents)
	}

	// Named after writing, temporary file elsewhere, parents created.
	tmp := filepath.Join(dir, "tmp")
	p3, err := atomicfile.Create(filepath.Join(tmp, "put"), atomicfile.Options{Perm: 0o644, TempDir: tmp, MkdirPerm: 0o755})
	if err != nil {
		t.Fatal(err)
	}
	p3.Write([]byte("blob"))
	final := filepath.Join(dir, "blobs", "ab", "abcd")
	if err := p3.CommitAs(final); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(final); string(b) != "blob" {
		t.Fatalf("CommitAs: %q", b)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("temporary directory left: %v", ents)
	}
}

// TestNoClobber: an existing target is never replaced (an error wrapping
// fs.ErrExist, the old content kept, no temporary file left); a missing
// one is written.
func TestNoClobber(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ca-key.pem")
	o := atomicfile.Options{Perm: 0o600, NoClobber: true}
	if err := atomicfile.Write(p, []byte("first"), o); err != nil {
		t.Fatal(err)
	}
	err := atomicfile.Write(p, []byte("second"), o)
	if !errors.Is(err, os.ErrExist) {
		t.Fatalf("overwrite = %v; want ErrExist", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "first" {
		t.Fatalf("target %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left over: %v", ents)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	// NoSync keeps atomicity for readers.
	if err := atomicfile.Write(filepath.Join(dir, "index"), []byte("i"), atomicfile.Options{Perm: 0o644, NoSync: true}); err != nil {
		t.Fatal(err)
	}
}
