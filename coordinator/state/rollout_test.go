package state

import (
	"bytes"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var rt0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func rolloutPush(sha string, base uint64, waves ...[]string) *hivev1.RolloutPushCommand {
	c := &hivev1.RolloutPushCommand{Push: &hivev1.PushCommand{
		Generation:     &hivev1.Generation{Sha256: sha, Site: &hivev1.Site{Name: sha}},
		BaseGeneration: base,
	}}
	for _, w := range waves {
		c.Waves = append(c.Waves, &hivev1.RolloutWave{Nodes: w})
	}
	return c
}

func wantTargets(t *testing.T, s *Store, want map[string]uint64) {
	t.Helper()
	for n, g := range want {
		if got := s.TargetNumber(n); got != g {
			t.Errorf("target of %s = %d, want %d", n, got, g)
		}
	}
}

func TestRolloutTargets(t *testing.T) {
	s := New()
	s.Push(rt0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "g1", Site: &hivev1.Site{}}})
	wantTargets(t, s, map[string]uint64{"a": 1, "b": 1})

	if r := s.StartRollout(rt0, rolloutPush("g2", 1, []string{"a"}, []string{"b", "c"})); r.GetError() != "" || r.GetGeneration() != 2 {
		t.Fatalf("start: %v", r)
	}
	// Canary a has the new generation; b, c and the unplanned d keep 1.
	wantTargets(t, s, map[string]uint64{"a": 2, "b": 1, "c": 1, "d": 1})
	if r := s.OpenWave(rt0, &hivev1.RolloutWaveCommand{Generation: 2, Wave: 2}); r.GetReason() != ReasonInvalid {
		t.Fatalf("open wave past the end: %v", r)
	}
	if r := s.OpenWave(rt0, &hivev1.RolloutWaveCommand{Generation: 1, Wave: 1}); r.GetReason() != ReasonNotFound {
		t.Fatalf("open wave of another rollout: %v", r)
	}
	if r := s.PauseRollout(rt0, &hivev1.RolloutPauseCommand{Generation: 2, Reason: "a failed"}); r.GetError() != "" {
		t.Fatalf("pause: %v", r)
	}
	if r := s.OpenWave(rt0, &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1}); r.GetReason() != ReasonRolloutState {
		t.Fatalf("gate opening a paused rollout's wave: %v", r)
	}
	if r := s.ResumeRollout(rt0, &hivev1.RolloutResumeCommand{Generation: 2}); r.GetError() != "" {
		t.Fatalf("resume: %v", r)
	}
	if r := s.CompleteRollout(rt0, &hivev1.RolloutCompleteCommand{Generation: 2}); r.GetReason() != ReasonRolloutState {
		t.Fatalf("complete with a wave closed: %v", r)
	}
	if r := s.OpenWave(rt0.Add(time.Minute), &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1}); r.GetError() != "" || r.GetUnchanged() {
		t.Fatalf("open wave 2: %v", r)
	}
	if r := s.OpenWave(rt0, &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1}); !r.GetUnchanged() {
		t.Fatalf("open an open wave again: %v", r)
	}
	wantTargets(t, s, map[string]uint64{"a": 2, "b": 2, "c": 2, "d": 1})
	if r := s.CompleteRollout(rt0, &hivev1.RolloutCompleteCommand{Generation: 2}); r.GetError() != "" {
		t.Fatalf("complete: %v", r)
	}
	wantTargets(t, s, map[string]uint64{"a": 2, "b": 2, "c": 2, "d": 2})

	// Next rollout rolls back: generation 4 gets generation 2's content and
	// everyone targets it (agents never go to a lower generation).
	s.StartRollout(rt0, rolloutPush("g3", 2, []string{"b"}, []string{"a", "c"}))
	wantTargets(t, s, map[string]uint64{"a": 2, "b": 3, "c": 2})
	if r := s.RollbackRollout(rt0, &hivev1.RolloutRollbackCommand{Generation: 3, Reason: "b: health failing"}); r.GetError() != "" || r.GetGeneration() != 4 {
		t.Fatalf("rollback: %v", r)
	}
	wantTargets(t, s, map[string]uint64{"a": 4, "b": 4, "c": 4, "new": 4})
	if g := s.Current(); g.GetSha256() != "g2" || g.GetRollbackOf() != 2 || !strings.Contains(g.GetMessage(), "rollout of generation 3 rolled back: b: health failing") {
		t.Fatalf("revert generation = %v", g)
	}
	if r := s.Rollout(); r.GetState() != hivev1.RolloutState_ROLLOUT_STATE_ROLLED_BACK || r.GetReason() != "b: health failing" || r.GetRevertGeneration() != 4 {
		t.Fatalf("rollout = %v", r)
	}
	if r := s.ResumeRollout(rt0, &hivev1.RolloutResumeCommand{Generation: 3}); r.GetReason() != ReasonStaleBase {
		t.Fatalf("resume a rolled back rollout: %v", r)
	}

	// A plain push supersedes a rollout: everyone at once, commands for it
	// refused.
	s.StartRollout(rt0, rolloutPush("g5", 4, []string{"a"}, []string{"b"}))
	wantTargets(t, s, map[string]uint64{"a": 5, "b": 4})
	s.Push(rt0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "g6", Site: &hivev1.Site{}}, BaseGeneration: 5})
	wantTargets(t, s, map[string]uint64{"a": 6, "b": 6})
	if r := s.PauseRollout(rt0, &hivev1.RolloutPauseCommand{Generation: 5}); r.GetReason() != ReasonStaleBase {
		t.Fatalf("pause a superseded rollout: %v", r)
	}
}

// TestRolloutRollbackWithoutBase: a rollout of the first generation ever
// has nothing to go back to: rolled back, its nodes target nothing (0).
func TestRolloutRollbackWithoutBase(t *testing.T) {
	s := New()
	s.StartRollout(rt0, rolloutPush("g1", 0, []string{"a"}, []string{"b"}))
	wantTargets(t, s, map[string]uint64{"a": 1, "b": 0})
	if r := s.RollbackRollout(rt0, &hivev1.RolloutRollbackCommand{Generation: 1, Abort: true}); r.GetError() != "" {
		t.Fatalf("abort: %v", r)
	}
	wantTargets(t, s, map[string]uint64{"a": 0, "b": 0})
	if s.CurrentNumber() != 1 || s.Rollout().GetState() != hivev1.RolloutState_ROLLOUT_STATE_ABORTED {
		t.Fatalf("current %d, rollout %v", s.CurrentNumber(), s.Rollout())
	}
}

func TestRolloutPushRejected(t *testing.T) {
	s := New()
	s.Push(rt0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "g1", Site: &hivev1.Site{}}})
	// Stale base: neither the generation nor the rollout is recorded.
	if r := s.StartRollout(rt0, rolloutPush("g2", 0, []string{"a"})); r.GetReason() != ReasonStaleBase {
		t.Fatalf("stale: %v", r)
	}
	// Unchanged content: no rollout.
	if r := s.StartRollout(rt0, rolloutPush("g1", 1, []string{"a"})); !r.GetUnchanged() {
		t.Fatalf("unchanged: %v", r)
	}
	for _, c := range []*hivev1.RolloutPushCommand{
		rolloutPush("g2", 1),
		rolloutPush("g2", 1, []string{"a"}, []string{"a"}),
		rolloutPush("g2", 1, []string{}),
	} {
		if r := s.StartRollout(rt0, c); r.GetReason() != ReasonInvalid {
			t.Errorf("%v: %v", c.GetWaves(), r)
		}
	}
	if s.Rollout() != nil || s.CurrentNumber() != 1 {
		t.Fatalf("rejected rollout pushes changed the store: %v, %d", s.Rollout(), s.CurrentNumber())
	}
}

func TestRolloutSnapshot(t *testing.T) {
	s := New()
	s.Push(rt0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "g1", Site: &hivev1.Site{}}})
	s.StartRollout(rt0, rolloutPush("g2", 1, []string{"a"}, []string{"b"}, []string{"c"}))
	s.OpenWave(rt0, &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1})
	s.PauseRollout(rt0, &hivev1.RolloutPauseCommand{Generation: 2, Reason: "why"})
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	r, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	wantTargets(t, r, map[string]uint64{"a": 2, "b": 2, "c": 1, "d": 1})
	if r.Rollout().GetState() != hivev1.RolloutState_ROLLOUT_STATE_PAUSED || r.Rollout().GetOpened() != 2 {
		t.Fatalf("restored rollout = %v", r.Rollout())
	}
	// A rollout of a generation the snapshot lacks is refused.
	snap.Rollout.Generation = 9
	buf.Reset()
	WriteSnapshot(&buf, snap, idx)
	if _, err := ReadSnapshot(&buf); err == nil {
		t.Fatal("snapshot with a dangling rollout accepted")
	}
}

// TestRolloutWaveHealthy: the gate's record of since when the open wave
// has been healthy is kept for the open wave of a running rollout only,
// clamped to the command's time, cleared by every transition, and kept in
// snapshots.
func TestRolloutWaveHealthy(t *testing.T) {
	s := New()
	s.Push(rt0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "g1", Site: &hivev1.Site{}}})
	s.StartRollout(rt0, rolloutPush("g2", 1, []string{"a"}, []string{"b"}, []string{"c"}))
	mark := func(t1 time.Time, wave uint32, since *time.Time) *hivev1.CommandResult {
		c := &hivev1.RolloutHealthyCommand{Generation: 2, Wave: wave}
		if since != nil {
			c.Since = timestamppb.New(*since)
		}
		return s.MarkWaveHealthy(t1, c)
	}
	at := func(d time.Duration) *time.Time { v := rt0.Add(d); return &v }
	since := func() *timestamppb.Timestamp { return s.Rollout().GetWaveHealthySince() }

	if r := mark(rt0.Add(2*time.Second), 0, at(time.Second)); r.GetError() != "" || r.GetUnchanged() || !since().AsTime().Equal(*at(time.Second)) {
		t.Fatalf("mark wave 1 healthy: %v, since %v", r, since())
	}
	if r := mark(rt0.Add(3*time.Second), 0, at(time.Second)); !r.GetUnchanged() {
		t.Fatalf("mark again: %v", r)
	}
	if r := mark(rt0.Add(3*time.Second), 1, at(time.Second)); r.GetReason() != ReasonRolloutState {
		t.Fatalf("mark a closed wave: %v", r)
	}
	if r := s.MarkWaveHealthy(rt0, &hivev1.RolloutHealthyCommand{Generation: 1}); r.GetReason() != ReasonNotFound {
		t.Fatalf("mark another rollout: %v", r)
	}
	if r := mark(rt0.Add(4*time.Second), 0, nil); r.GetError() != "" || since() != nil {
		t.Fatalf("clear: %v, since %v", r, since())
	}
	// A since after the command's time is the command's time.
	if r := mark(rt0.Add(5*time.Second), 0, at(time.Hour)); r.GetError() != "" || !since().AsTime().Equal(*at(5 * time.Second)) {
		t.Fatalf("future since: %v, since %v", r, since())
	}
	if r := s.MarkWaveHealthy(rt0, &hivev1.RolloutHealthyCommand{Generation: 2, Since: &timestamppb.Timestamp{Nanos: -1}}); r.GetReason() != ReasonInvalid {
		t.Fatalf("invalid since: %v", r)
	}

	// Kept in snapshots.
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	if r, err := ReadSnapshot(&buf); err != nil || !r.Rollout().GetWaveHealthySince().AsTime().Equal(*at(5 * time.Second)) {
		t.Fatalf("restored: %v, %v", r.Rollout(), err)
	}

	// Opening the next wave, pausing and resuming clear it.
	s.OpenWave(rt0.Add(6*time.Second), &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1})
	if since() != nil {
		t.Fatalf("wave 2 opened with wave 1's healthy since %v", since())
	}
	mark(rt0.Add(7*time.Second), 1, at(7*time.Second))
	s.PauseRollout(rt0.Add(8*time.Second), &hivev1.RolloutPauseCommand{Generation: 2})
	if since() != nil {
		t.Fatalf("paused with healthy since %v", since())
	}
	if r := mark(rt0.Add(9*time.Second), 1, at(9*time.Second)); r.GetReason() != ReasonRolloutState {
		t.Fatalf("mark a paused rollout: %v", r)
	}
	s.ResumeRollout(rt0.Add(10*time.Second), &hivev1.RolloutResumeCommand{Generation: 2})
	if r := mark(rt0.Add(11*time.Second), 1, at(11*time.Second)); r.GetError() != "" {
		t.Fatalf("mark after resume: %v", r)
	}
	s.OpenWave(rt0.Add(12*time.Second), &hivev1.RolloutWaveCommand{Generation: 2, Wave: 2})
	mark(rt0.Add(13*time.Second), 2, at(13*time.Second))
	s.CompleteRollout(rt0.Add(14*time.Second), &hivev1.RolloutCompleteCommand{Generation: 2})
	if since() != nil {
		t.Fatalf("completed with healthy since %v", since())
	}
}
