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

func TestLinkerOrdersAfterDrbdUtils(t *testing.T) {
	p, _ := New(DefaultConfig(), nil)
	rs := []*hivev1.Resource{
		{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: cases[0].d}},
		{Key: "package:drbd-utils", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "drbd-utils"}}},
	}
	g, err := converge.BuildGraph(rs, map[string]converge.Linker{converge.KindDrbd: p})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Waves) != 2 || g.Waves[0][0] != "package:drbd-utils" || g.Waves[1][0] != "drbd:r0" {
		t.Errorf("waves %v", g.Waves)
	}
}
