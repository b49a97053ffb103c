package drbd

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func TestSandboxNeverRunsTools(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sandbox = true
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &convergetest.Recorder{}
	env := &converge.Env{Root: t.TempDir(), Runner: rec, Facts: &hivev1.NodeFacts{Name: "store-a"}}
	chs := plan(t, p, env, cases[0].d)
	if chs[0].Err != nil || !chs[0].Needed || !strings.Contains(chs[0].Diff, "write /etc/drbd.d/r0.res") {
		t.Fatalf("plan: %v\n%s", chs[0].Err, chs[0].Diff)
	}
	if err := p.Apply(context.Background(), env, chs); !errors.Is(err, ErrSandbox) {
		t.Errorf("apply: %v", err)
	}
	if len(rec.Cmds) != 0 {
		t.Errorf("sandbox ran %v", rec.Lines())
	}
	// Membership errors still show.
	env.Facts.Name = "store-z"
	if chs := plan(t, p, env, cases[0].d); !errors.Is(chs[0].Err, ErrNotMember) {
		t.Errorf("not member in sandbox: %v", chs[0].Err)
	}
}
