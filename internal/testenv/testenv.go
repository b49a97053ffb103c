// Package testenv lets tests declare what they need from the machine: root,
// an external tool, network namespaces, a Docker engine. When a prerequisite
// is missing the test is skipped on a developer's machine, but fails when
// CI=true, so that a CI run never passes by silently skipping the real tests.
//
// It is imported by tests only.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips t, or fails it when running under CI, with the reason.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing under CI=true: "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// RequireRoot requires the test to run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}

// RequireTool requires each named program on PATH and returns the path of
// the first.
func RequireTool(t testing.TB, names ...string) string {
	t.Helper()
	first := ""
	for i, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			Missing(t, "needs %s on PATH", n)
			return ""
		}
		if i == 0 {
			first = p
		}
	}
	return first
}

// RequireNetns requires root and the ip tool, for tests that create network
// namespaces.
func RequireNetns(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	RequireTool(t, "ip")
}

// SkipShort skips a slow test under -short, also in CI (make test never
// passes -short).
func SkipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow test skipped with -short")
	}
}

// HeavyLock takes /tmp/hive-heavy.lock for the docker part of a test (the
// project's lock for tests that load the machine); the wait is not timed.
// When an ancestor process already holds it (`flock /tmp/hive-heavy.lock
// go test ...`), the test runs under that lock instead of waiting on itself.
func HeavyLock(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/tmp/hive-heavy.lock", os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err == nil && ancestorHolds(st.Ino) {
		t.Log("/tmp/hive-heavy.lock is held by an ancestor process: running under it")
		return
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN) })
}

// ancestorHolds reports whether a flock on the file with inode ino is held
// by this process's parent or one of its ancestors (from /proc/locks).
func ancestorHolds(ino uint64) bool {
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return false
	}
	holders := map[int]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		// 1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF
		if len(f) < 6 || f[1] != "FLOCK" {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 || dev[2] != strconv.FormatUint(ino, 10) {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil {
			holders[pid] = true
		}
	}
	for pid := os.Getppid(); pid > 1; {
		if holders[pid] {
			return true
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return false
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
		rest := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(rest) < 2 {
			return false
		}
		pid, _ = strconv.Atoi(rest[1])
	}
	return false
}
