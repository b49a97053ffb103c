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
