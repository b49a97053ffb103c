package keyring

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpenRotate(t *testing.T) {
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	sealed, id, err := k.Seal("db-pass", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Open("db-pass", sealed, id); err != nil || string(got) != "hunter2" {
		t.Fatalf("open = %q, %v", got, err)
	}
	// Bound to the name.
	if _, err := k.Open("other", sealed, id); !errors.Is(err, ErrOpen) {
		t.Fatalf("open under another name: %v", err)
	}
	// Tampered.
	bad := append([]byte(nil), sealed...)
	bad[len(bad)-1] ^= 1
	if _, err := k.Open("db-pass", bad, id); !errors.Is(err, ErrOpen) {
		t.Fatalf("tampered: %v", err)
	}
	// Rotation: new values use the new key, old ones still open.
	nid, err := k.Rotate()
	if err != nil || nid == id || k.Primary() != nid {
		t.Fatalf("rotate = %q, %v", nid, err)
	}
	if _, id2, _ := k.Seal("x", []byte("y")); id2 != nid {
		t.Fatal("seal did not use the new primary")
	}
	if got, err := k.Open("db-pass", sealed, id); err != nil || string(got) != "hunter2" {
		t.Fatalf("old value after rotation: %q, %v", got, err)
	}
	if err := k.Remove(nid); err == nil {
		t.Fatal("removed the primary key")
	}
	if err := k.Remove(id); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Open("db-pass", sealed, id); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("open with removed key: %v", err)
	}
}

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keyring.json")
	k, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, %v", fi.Mode(), err)
	}
	sealed, id, _ := k.Seal("n", []byte("v"))
	k2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("load: %v %v", created, err)
	}
	if got, err := k2.Open("n", sealed, id); err != nil || string(got) != "v" {
		t.Fatalf("open after reload: %q %v", got, err)
	}
	if err := os.WriteFile(path, []byte(`{"primary":"x","keys":[{"id":"x","key":"c2hvcnQ="}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestImportExport(t *testing.T) {
	a, _ := New()
	b, _ := New()
	sealed, id, _ := a.Seal("n", []byte("v"))
	if b.Has(id) {
		t.Fatal("b has a's key")
	}
	keys := a.Export([]string{id, "nope"})
	if len(keys) != 1 {
		t.Fatalf("export = %v", keys)
	}
	bad := keys[0]
	bad.ID = "00000000"
	if err := b.Import(bad); err == nil {
		t.Fatal("key with a wrong id imported")
	}
	if err := b.Import(keys[0]); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Open("n", sealed, id); err != nil || string(got) != "v" {
		t.Fatalf("open after import: %q %v", got, err)
	}
	if b.Primary() == id {
		t.Fatal("imported key became primary")
	}
}
