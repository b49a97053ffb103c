package ctl

import (
	"path/filepath"
	"testing"
)

// TestValidateExampleBaseline: `hivectl validate deploy/examples/baseline.yaml`
// accepts the example host baseline without a warning.
func TestValidateExampleBaseline(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "validate", filepath.Join("..", "deploy", "examples", "baseline.yaml"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("validate: %+v", r)
	}
}
