// Package debroot gives tests a real Debian bookworm (minbase) root
// filesystem, built once per machine with debootstrap from
// http://deb.debian.org/debian and cached between test runs.
//
// The cache lives in $HIVE_TEST_CACHE/debroot (default
// /var/tmp/hive-test-cache/debroot). Building is guarded by an exclusive
// flock on debroot.lock, so parallel test binaries build it once; the root
// is built in a temporary directory and renamed into place, and a marker
// file says it is complete. Delete the directory to rebuild.
//
// Shared returns the cached root itself: tests must treat it as read-only.
// Copy returns a private copy (cp -a --reflink=auto) in t.TempDir() that a
// test may change freely (install packages with chroot apt-get, …).
// SharedWith and CopyWith do the same for the root plus some packages
// (e.g. "systemd", "dbus"), cached per package set.
//
// Both need root and debootstrap; when missing the test is skipped, or
// failed under CI=true (see internal/testenv). They are called from test
// goroutines and block while the root is built (a few minutes, first time).
package debroot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
)

// Suite, variant and mirror of the cached root.
const (
	Suite   = "bookworm"
	Variant = "minbase"
	Mirror  = "http://deb.debian.org/debian"
	name    = Suite + "-" + Variant + "-amd64"
)

// CacheDir returns the directory holding the cached root.
func CacheDir() string {
	base := os.Getenv("HIVE_TEST_CACHE")
	if base == "" {
		base = "/var/tmp/hive-test-cache"
	}
	return filepath.Join(base, "debroot")
}

// Shared returns the path of the cached root, building it first if needed.
// The test must not modify it.
func Shared(t testing.TB) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "debootstrap")
	p, err := ensure()
	if err != nil {
		t.Fatalf("debroot: %v", err)
	}
	return p
}

// Copy returns a private copy of the root in a temporary directory removed
// when the test ends.
func Copy(t testing.TB) string {
	t.Helper()
	src := Shared(t)
	dst := filepath.Join(t.TempDir(), "root")
	out, err := exec.Command("cp", "-a", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("debroot: copy root: %v: %s", err, out)
	}
	return dst
}

// SharedWith returns a cached root that is the base root plus the named
// packages (installed with apt-get inside it from the Debian mirror),
// built once like the base root. The test must not modify it.
func SharedWith(t testing.TB, packages ...string) string {
	t.Helper()
	base := Shared(t)
	p, err := ensureWith(base, packages)
	if err != nil {
		t.Fatalf("debroot: %v", err)
	}
	return p
}

// CopyWith returns a private copy of SharedWith(packages).
func CopyWith(t testing.TB, packages ...string) string {
	t.Helper()
	src := SharedWith(t, packages...)
	dst := filepath.Join(t.TempDir(), "root")
	out, err := exec.Command("cp", "-a", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("debroot: copy root: %v: %s", err, out)
	}
	return dst
}

func ensureWith(base string, packages []string) (string, error) {
	ps := append([]string(nil), packages...)
	sort.Strings(ps)
	dir := CacheDir()
	root := filepath.Join(dir, name+"+"+strings.Join(ps, "+"))
	marker := root + ".ok"
	if _, err := os.Stat(marker); err == nil {
		return root, nil
	}
	unlock, err := lock(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(marker); err == nil {
		return root, nil
	}
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	work := filepath.Join(tmp, "root")
	if out, err := exec.Command("cp", "-a", "--reflink=auto", base, work).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy base root: %v: %s", err, out)
	}
	cmd := exec.Command("chroot", work, "sh", "-c", "apt-get update -q && apt-get install -y -q --no-install-recommends "+strings.Join(ps, " ")+" && apt-get clean")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("install %v into the root: %v: %s", ps, err, out)
	}
	if err := os.Rename(work, root); err != nil {
		return "", err
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "", err
	}
	return root, nil
}

// lock takes the cache's exclusive build lock.
func lock(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(filepath.Join(dir, "debroot.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("lock cache: %w", err)
	}
	return func() {
		syscall.Flock(int(lf.Fd()), syscall.LOCK_UN) //nolint:errcheck
		lf.Close()
	}, nil
}

func ensure() (string, error) {
	dir := CacheDir()
	root := filepath.Join(dir, name)
	marker := root + ".ok"
	if _, err := os.Stat(marker); err == nil {
		return root, nil
	}
	unlock, err := lock(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(marker); err == nil {
		return root, nil // built by someone else while we waited
	}
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "tmp-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("debootstrap", "--variant="+Variant, "--arch=amd64", Suite, filepath.Join(tmp, "root"), Mirror)
	logf, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("debootstrap %s (log in %s): %w", Suite, logf.Name(), err)
	}
	if err := os.Rename(filepath.Join(tmp, "root"), root); err != nil {
		return "", err
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		return "", err
	}
	return root, nil
}
