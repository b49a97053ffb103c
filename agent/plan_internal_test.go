package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/limits"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// planEngine records the options of each run and plans one change.
type planEngine struct{ opts []converge.RunOptions }

func (e *planEngine) Run(_ context.Context, st *hivev1.NodeState, o converge.RunOptions) (*converge.Report, error) {
	e.opts = append(e.opts, o)
	return &converge.Report{Results: []*hivev1.ResourceResult{{Key: "file:/etc/a", Outcome: hivev1.Outcome_OUTCOME_PLANNED, Message: "ok"}}}, nil
}

// TestPlanDryRun: a dry run is the engine in DryRun mode; its answer is a
// dry-run report of the planned state within the report limits; a state
// for another node, or past its deadline, is refused without running; the
// agent's own state and statistics are untouched.
func TestPlanDryRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Dev, cfg.Gossip = "n1", t.TempDir(), true, nil
	cfg.Coordinators = []string{"127.0.0.1:1"}
	eng := &planEngine{}
	a, err := New(cfg, Deps{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	st := &hivev1.NodeState{Node: "n1", Generation: 8, Hash: strings.Repeat("a", 64)}
	future := timestamppb.New(time.Now().Add(time.Minute))
	r, err := a.planDryRun(context.Background(), &hivev1.PlanDryRun{Id: "p1", State: st, Deadline: future})
	if err != nil {
		t.Fatal(err)
	}
	if len(eng.opts) != 1 || !eng.opts[0].DryRun {
		t.Fatalf("engine runs %+v, want one dry run", eng.opts)
	}
	if !r.GetDryRun() || r.GetTrigger() != TriggerPlan || r.GetGeneration() != 8 || r.GetStateHash() != st.GetHash() || r.GetNode() != "n1" || len(r.GetResults()) != 1 {
		t.Fatalf("answer %v", r)
	}
	if err := limits.CheckReport(r, time.Now()); err != nil {
		t.Fatalf("answer out of the report limits: %v", err)
	}
	for _, bad := range []*hivev1.PlanDryRun{
		{Id: "p2", State: &hivev1.NodeState{Node: "n2", Generation: 8}, Deadline: future},
		{Id: "p3", State: st, Deadline: timestamppb.New(time.Now().Add(-time.Second))},
		{Id: "p4", State: st},
		{State: st, Deadline: future},
	} {
		if _, err := a.planDryRun(context.Background(), bad); !errors.Is(err, errPlanState) {
			t.Errorf("%v: %v, want errPlanState", bad, err)
		}
	}
	if len(eng.opts) != 1 {
		t.Fatalf("refused dry runs ran the engine: %+v", eng.opts)
	}
	if a.current() != nil || a.Stats() != (Stats{}) || a.seq.Load() != 0 {
		t.Fatalf("the agent changed: state %v, stats %+v, seq %d", a.current(), a.Stats(), a.seq.Load())
	}
}

// TestMarkPlanCauses: a planned change of a resource the site does not
// change is drift; one the site changes, adds or removes is a change.
func TestMarkPlanCauses(t *testing.T) {
	file := func(path, content, source string) *hivev1.Resource {
		return &hivev1.Resource{Key: "file:" + path, Source: source, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: path, Content: content}}}
	}
	cur := &hivev1.NodeState{Node: "n1", Generation: 1, Resources: []*hivev1.Resource{file("/a", "a", "s.yaml:3:7"), file("/b", "b", "s.yaml:5:7"), file("/gone", "g", "s.yaml:9:7")}}
	planned := &hivev1.NodeState{Node: "n1", Generation: 2, Resources: []*hivev1.Resource{file("/a", "a", "s.yaml:4:7"), file("/b", "b2", "s.yaml:6:7"), file("/new", "n", "s.yaml:8:7")}}
	res := []*hivev1.ResourceResult{
		{Key: "file:/a", Outcome: hivev1.Outcome_OUTCOME_PLANNED},
		{Key: "file:/b", Outcome: hivev1.Outcome_OUTCOME_PLANNED},
		{Key: "file:/new", Outcome: hivev1.Outcome_OUTCOME_PLANNED},
		{Key: "file:/gone", Outcome: hivev1.Outcome_OUTCOME_PLANNED},
		{Key: "file:/ok", Outcome: hivev1.Outcome_OUTCOME_OK},
	}
	markPlanCauses(res, planned, cur)
	want := []hivev1.Cause{hivev1.Cause_CAUSE_DRIFT, hivev1.Cause_CAUSE_CHANGE, hivev1.Cause_CAUSE_CHANGE, hivev1.Cause_CAUSE_CHANGE, hivev1.Cause_CAUSE_UNSPECIFIED}
	for i, r := range res {
		if r.GetCause() != want[i] {
			t.Errorf("%s: cause %v, want %v", r.GetKey(), r.GetCause(), want[i])
		}
	}
	// Other facts (a new peer, other labels): nothing is called drift.
	planned.Facts = &hivev1.NodeFacts{Name: "n1", Roles: []string{"web"}}
	res[0].Cause = 0
	markPlanCauses(res[:1], planned, cur)
	if res[0].GetCause() != hivev1.Cause_CAUSE_CHANGE {
		t.Errorf("facts changed: cause %v", res[0].GetCause())
	}
}
