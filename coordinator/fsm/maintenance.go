package fsm

import (
	"time"

	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The maintenance and reboot commands (raft.proto bodies 60–64).
// Maintenance pins a node's target generation and changes what the swarm
// manager drains (ChangeRollout|ChangeRegistry: watches re-render); reboot
// steps wake watches (a reboot order is sent on one) and status waiters.
func init() {
	handlers["maintenance_set"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.SetMaintenance(t, c.GetMaintenanceSet())
		return r, changedIf(r, ChangeRollout|ChangeRegistry|ChangeStatus)
	}
	handlers["maintenance_clear"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.ClearMaintenance(c.GetMaintenanceClear())
		return r, changedIf(r, ChangeRollout|ChangeRegistry|ChangeStatus)
	}
	handlers["reboot_request"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.RequestReboot(t, c.GetRebootRequest())
		return r, changedIf(r, ChangeStatus)
	}
	handlers["reboot_step"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.StepReboot(t, c.GetRebootStep())
		return r, changedIf(r, ChangeStatus|ChangeRollout|ChangeRegistry)
	}
	handlers["reboot_cancel"] = func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.CancelReboot(t, c.GetRebootCancel())
		return r, changedIf(r, ChangeStatus)
	}
}
