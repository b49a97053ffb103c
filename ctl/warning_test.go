package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateAndPushWarnSSHLockout: a drop input policy with no rule
// accepting 22/tcp is a warning on stderr, at the firewall; validate exits
// 0 and push still pushes.
func TestValidateAndPushWarnSSHLockout(t *testing.T) {
	clearEnv(t)
	file := filepath.Join(t.TempDir(), "fw.yaml")
	text := "site: fw\nselectors:\n  - roles: [edge]\nroles:\n  edge:\n    firewall:\n      policies: {input: drop}\n      rules:\n        - {ports: [443]}\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	want := file + ":7:7: roles.edge.firewall.policies.input: warning: input policy drop"
	r := run(t, "", "validate", file)
	if r.code != 0 || !strings.Contains(r.stderr, want) {
		t.Fatalf("validate: %+v", r)
	}
	f := newFake()
	addr := serveFake(t, f, nil)
	r = run(t, "", "push", file, "--dev", "--addr", addr)
	if r.code != 0 || !strings.Contains(r.stderr, want) || len(f.pushes) != 1 {
		t.Fatalf("push: %+v (%d pushes)", r, len(f.pushes))
	}
}
