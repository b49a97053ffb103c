// Package testenv lets tests declare what they need from the machine: root,
// an external tool, network namespaces, a Docker engine. When a prerequisite
// is missing the test is skipped on a developer's machine, but fails when
// CI=true, so that a CI run never passes by silently skipping the real tests.
//
// It is imported by tests only.
package testenv

import (
	"os"
	"os/exec"
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
