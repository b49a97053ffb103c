package fsm

import (
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// applyCommand applies c to s through the handlers table and, when c
// carries audit information, appends it to the audit log with the result,
// in the same apply: a write and its audit record never diverge. An
// audit-only command (audit, no body) only records.
func applyCommand(s *state.Store, c *hivev1.Command) (*hivev1.CommandResult, Change) {
	t := c.GetTime().AsTime()
	name := bodyName(c)
	var res *hivev1.CommandResult
	var ch Change
	if name == "" {
		res = &hivev1.CommandResult{}
	} else {
		res, ch = handlers[name](s, t, c)
	}
	if a := c.GetAudit(); a != nil {
		s.AppendAudit(t, name, a, res)
	}
	return res, ch
}
