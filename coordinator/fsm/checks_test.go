package fsm

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestDriftHistorySnapshot: reports' drift repairs are kept per node
// (bounded, health-change copies not counted twice), health_since follows
// the command time of a health change, and both survive snapshot and
// restore.
func TestDriftHistorySnapshot(t *testing.T) {
	f := New(nil)
	idx := uint64(0)
	apply := func(at time.Time, reports ...*hivev1.Report) {
		t.Helper()
		b, err := Encode(&hivev1.Command{Time: timestamppb.New(at), Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: reports}}})
		if err != nil {
			t.Fatal(err)
		}
		idx++
		if r := f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: b}).(*hivev1.CommandResult); r.GetError() != "" {
			t.Fatal(r.GetError())
		}
	}
	t1 := t0.AsTime()
	seq := uint64(0)
	report := func(at time.Time, health hivev1.Health, trigger string, results ...*hivev1.ResourceResult) *hivev1.Report {
		seq++
		return &hivev1.Report{Node: "web-1", Generation: 2, Seq: seq, Finished: timestamppb.New(at), Health: health, Trigger: trigger, Results: results}
	}
	drift := func(key string) *hivev1.ResourceResult {
		return &hivev1.ResourceResult{Key: key, Outcome: hivev1.Outcome_OUTCOME_CHANGED, Cause: hivev1.Cause_CAUSE_DRIFT, Message: "content differed"}
	}
	change := &hivev1.ResourceResult{Key: "file:/etc/new", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Cause: hivev1.Cause_CAUSE_CHANGE}

	apply(t1, report(t1, hivev1.Health_HEALTH_PASSING, "state", change))
	apply(t1.Add(time.Minute), report(t1.Add(time.Minute), hivev1.Health_HEALTH_PASSING, "interval", drift("file:/etc/motd")))
	// A health-change copy of that report: health_since moves, no new repair.
	last := report(t1.Add(time.Minute), hivev1.Health_HEALTH_FAILING, state.TriggerHealth, drift("file:/etc/motd"))
	apply(t1.Add(2*time.Minute), last)
	for i := range state.MaxDriftRepairs + 5 {
		at := t1.Add(time.Hour + time.Duration(i)*time.Second)
		apply(at, report(at, hivev1.Health_HEALTH_FAILING, "interval", drift(fmt.Sprintf("file:/x/%d", i))))
	}
	check := func(s *state.Store) {
		t.Helper()
		rec := s.CheckRecord("web-1")
		if rec.GetHealth() != hivev1.Health_HEALTH_FAILING || !rec.GetHealthSince().AsTime().Equal(t1.Add(2*time.Minute)) {
			t.Fatalf("health %v since %v", rec.GetHealth(), rec.GetHealthSince().AsTime())
		}
		all := s.DriftRepairs("", time.Time{})
		if len(all) != state.MaxDriftRepairs {
			t.Fatalf("%d repairs kept, want %d", len(all), state.MaxDriftRepairs)
		}
		if all[0].GetKey() != fmt.Sprintf("file:/x/%d", state.MaxDriftRepairs+4) || all[0].GetGeneration() != 2 {
			t.Fatalf("newest = %v", all[0])
		}
		recent := s.DriftRepairs("web-1", t1.Add(time.Hour+100*time.Second))
		if len(recent) != 5 {
			t.Fatalf("since filter: %d", len(recent))
		}
		if len(s.DriftRepairs("web-2", time.Time{})) != 0 {
			t.Fatal("node filter")
		}
	}
	check(f.Store())

	g := New(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, f)))); err != nil {
		t.Fatal(err)
	}
	check(g.Store())
}
