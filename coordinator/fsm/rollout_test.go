package fsm

import (
	"bytes"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

type bufSink struct{ bytes.Buffer }

func (b *bufSink) ID() string    { return "test" }
func (b *bufSink) Cancel() error { return nil }
func (b *bufSink) Close() error  { return nil }

// TestRolloutCommandsSnapshotRestore applies the rollout commands through
// the FSM, then restores a snapshot into a fresh FSM: targets and rollout
// state come back identical.
func TestRolloutCommandsSnapshotRestore(t *testing.T) {
	site := &hivev1.Site{Name: "s", Roles: []*hivev1.Role{{Name: "web"}}}
	cmds := []*hivev1.Command{
		{Time: t0, Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "aa", Site: site}}}},
		{Time: t0, Body: &hivev1.Command_RolloutPush{RolloutPush: &hivev1.RolloutPushCommand{
			Push:  &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "bb", Site: site}, BaseGeneration: 1},
			Waves: []*hivev1.RolloutWave{{Nodes: []string{"a"}, Canary: true}, {Nodes: []string{"b", "c"}}, {Nodes: []string{"d"}}},
		}}},
		{Time: t0, Body: &hivev1.Command_RolloutPause{RolloutPause: &hivev1.RolloutPauseCommand{Generation: 2, Reason: "x"}}},
		{Time: t0, Body: &hivev1.Command_RolloutResume{RolloutResume: &hivev1.RolloutResumeCommand{Generation: 2}}},
		{Time: t0, Body: &hivev1.Command_RolloutWave{RolloutWave: &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1}}},
	}
	f := New(nil)
	var changes []Change
	f.OnApply = func(c Change) { changes = append(changes, c) }
	for i, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(*hivev1.CommandResult); r.GetError() != "" {
			t.Fatalf("command %d: %v", i, r)
		}
	}
	if changes[1] != ChangeGeneration|ChangeRollout || changes[4] != ChangeRollout {
		t.Fatalf("changes = %v", changes)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]uint64{"a": 2, "b": 2, "c": 2, "d": 1, "unplanned": 1} {
		if got := g.Store().TargetNumber(n); got != want {
			t.Errorf("restored target of %s = %d, want %d", n, got, want)
		}
	}
	if r := g.Store().Rollout(); r.GetOpened() != 2 || r.GetState() != hivev1.RolloutState_ROLLOUT_STATE_RUNNING || !r.GetWaves()[0].GetCanary() {
		t.Fatalf("restored rollout = %v", r)
	}
}
