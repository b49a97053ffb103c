package firewall

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
	p, err := New(Config{ConfirmWindow: 30e9, Sandbox: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &convergetest.Recorder{}
	env := &converge.Env{Root: t.TempDir(), Runner: rec}
	item := converge.Item{Key: "firewall:filter", Resource: &hivev1.Resource{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: baseRules()}}}
	chs, err := p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{item}})
	if err != nil || chs[0].Err != nil || !chs[0].Needed {
		t.Fatalf("plan: %v %v", err, chs[0].Err)
	}
	if !strings.Contains(chs[0].Diff, "ipv4: HIVE-INPUT + -i lo -j ACCEPT") || !strings.Contains(chs[0].Summary, "sandbox") {
		t.Errorf("plan:\n%s\n%s", chs[0].Summary, chs[0].Diff)
	}
	if err := p.Apply(context.Background(), env, chs); !errors.Is(err, ErrSandbox) {
		t.Errorf("apply: %v", err)
	}
	if rms, err := p.Prune(context.Background(), env, nil); err != nil || len(rms) != 0 {
		t.Errorf("prune: %v %v", rms, err)
	}
	if len(rec.Cmds) != 0 {
		t.Errorf("sandbox ran %v", rec.Lines())
	}
	// Bad input still fails precisely in sandbox mode.
	fw := baseRules()
	fw.Rules[0].Sources = []string{"300.1.1.1"}
	item.Resource = &hivev1.Resource{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: fw}}
	chs, _ = p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{item}})
	if !errors.Is(chs[0].Err, ErrInvalid) {
		t.Errorf("bad input in sandbox: %v", chs[0].Err)
	}
}
