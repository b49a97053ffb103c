package fsm

import (
	"time"

	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The rollout commands (raft.proto bodies 40–46). Each but rollout_healthy
// changes nodes' target generations, so each wakes the watches
// (ChangeRollout); starting a rollout also appends a generation.
// rollout_healthy only records the gate's healthy-since of the open wave:
// ChangeStatus wakes the rollout watchers, not the node watches.
func init() {
	handlers["rollout_push"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.StartRollout(t, c.GetRolloutPush())
		return r, changedIf(r, ChangeGeneration|ChangeRollout)
	}
	handlers["rollout_wave"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.OpenWave(t, c.GetRolloutWave())
		return r, changedIf(r, ChangeRollout)
	}
	handlers["rollout_pause"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.PauseRollout(t, c.GetRolloutPause())
		return r, changedIf(r, ChangeRollout)
	}
	handlers["rollout_resume"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.ResumeRollout(t, c.GetRolloutResume())
		return r, changedIf(r, ChangeRollout)
	}
	handlers["rollout_rollback"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.RollbackRollout(t, c.GetRolloutRollback())
		return r, changedIf(r, ChangeRollout|ChangeGeneration)
	}
	handlers["rollout_complete"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.CompleteRollout(t, c.GetRolloutComplete())
		return r, changedIf(r, ChangeRollout)
	}
	handlers["rollout_healthy"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.MarkWaveHealthy(t, c.GetRolloutHealthy())
		return r, changedIf(r, ChangeStatus)
	}
}
