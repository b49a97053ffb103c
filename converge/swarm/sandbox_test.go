package swarm

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func TestSandboxNeverContactsEngine(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Host = "unix://" + filepath.Join(t.TempDir(), "no-such.sock")
	cfg.Sandbox = true
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := &converge.Env{Root: t.TempDir(), Facts: &hivev1.NodeFacts{Name: "m1", Addresses: []string{"10.0.0.1/24"}}}
	s := &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Initializer: true, Networks: []*hivev1.SwarmNetwork{{Name: "n1"}}}
	chs, err := p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{{Key: "swarm:node", Resource: swarmRes(s)}}})
	if err != nil || chs[0].Err != nil || !chs[0].Needed {
		t.Fatalf("plan: %v %v", err, chs[0].Err)
	}
	if want := "not observed (sandbox root): would init the swarm advertising 10.0.0.1\nwould create overlay network n1\n"; chs[0].Diff != want {
		t.Errorf("diff %q", chs[0].Diff)
	}
	if err := p.Apply(context.Background(), env, chs); !errors.Is(err, ErrSandbox) {
		t.Errorf("apply: %v", err)
	}
	// Bad input still fails.
	s.Role = hivev1.SwarmRole_SWARM_ROLE_UNSPECIFIED
	chs, _ = p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{{Key: "swarm:node", Resource: swarmRes(s)}}})
	if !errors.Is(chs[0].Err, ErrInvalid) || !strings.Contains(chs[0].Err.Error(), "role must be manager or worker") {
		t.Errorf("bad role: %v", chs[0].Err)
	}
}
