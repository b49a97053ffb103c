package ctl

import (
	"path/filepath"
	"strings"
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

// TestValidateServiceVolumePlacement: `hivectl validate` catches a service
// that mounts a volume its placement cannot reach (issue 16), with the
// position of the mount or constraint.
func TestValidateServiceVolumePlacement(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "validate", filepath.Join("..", "site", "testdata", "errors", "service-volumes.yaml"))
	if r.code != 1 {
		t.Fatalf("validate: %+v", r)
	}
	for _, want := range []string{
		`service-volumes.yaml:35:21: services.managers-only.placement.constraints[0]: "node.role==manager" excludes every node holding volume "pg"`,
		`service-volumes.yaml:38:15: services.unreachable.mounts[0].volume: volume "lonely" is held by the nodes of role plain, and none of them can be a swarm node`,
		`services.many.mounts[0].volume: 3 replicas would mount volume "pg" on different nodes`,
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
}

// TestValidateExampleWorkloads: the example workloads site (a database on a
// DRBD volume, a web service with published ports) is valid.
func TestValidateExampleWorkloads(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "validate", filepath.Join("..", "deploy", "examples", "workloads.yaml"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("validate: %+v", r)
	}
}
