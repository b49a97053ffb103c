package state

import (
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestMaintenancePinsTarget: a node in maintenance keeps the target it had
// through later pushes; resuming gives it the current generation.
func TestMaintenancePinsTarget(t *testing.T) {
	s := New()
	push(s, "a", 0, false)
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "n1"})
	if r := s.SetMaintenance(t0, &hivev1.MaintenanceSetCommand{Node: "nx", Reason: "r"}); r.GetReason() != ReasonNotFound {
		t.Fatalf("unknown node: %v", r)
	}
	v := s.RegistryVersion()
	if r := s.SetMaintenance(t0, &hivev1.MaintenanceSetCommand{Node: "n1", Reason: "disk", Author: "admin:a"}); r.GetError() != "" {
		t.Fatal(r)
	}
	if s.RegistryVersion() == v {
		t.Fatal("maintenance did not re-render (registry version unchanged)")
	}
	push(s, "b", 1, false)
	if got := s.TargetNumber("n1"); got != 1 {
		t.Fatalf("target in maintenance %d, want 1", got)
	}
	// Setting it again keeps the pinned generation.
	s.SetMaintenance(t0, &hivev1.MaintenanceSetCommand{Node: "n1", Reason: "disk and fan", Author: "admin:b"})
	if m := s.Maintenance("n1"); m.GetGeneration() != 1 || m.GetAuthor() != "admin:b" || !s.SwarmDrained("n1") {
		t.Fatalf("maintenance again: %v", m)
	}
	if r := s.ClearMaintenance(&hivev1.MaintenanceClearCommand{Node: "n1"}); r.GetError() != "" {
		t.Fatal(r)
	}
	if got := s.TargetNumber("n1"); got != 2 || s.SwarmDrained("n1") {
		t.Fatalf("target after resume %d, want 2", got)
	}
}

// TestRebootSteps: steps are refused unless they leave the node's current
// state with its id (a deposed leader's stale step does nothing), taking
// the lock stamps the id, FAILED halts the queue until cancelled.
func TestRebootSteps(t *testing.T) {
	s := New()
	for _, n := range []string{"n1", "n2"} {
		s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: n})
	}
	if r := s.RequestReboot(t0, &hivev1.RebootRequestCommand{Nodes: []string{"n1", "nx"}}); r.GetReason() != ReasonNotFound {
		t.Fatalf("unknown node: %v", r)
	}
	s.RequestReboot(t0, &hivev1.RebootRequestCommand{Nodes: []string{"n1", "n2"}, Author: "a"})
	if q := s.RebootQueue(); q.GetMaxParallel() != 1 || len(q.GetNodes()) != 2 {
		t.Fatalf("queue %v", q)
	}
	if r := s.RequestReboot(t0, &hivev1.RebootRequestCommand{Nodes: []string{"n1"}}); !r.GetUnchanged() {
		t.Fatalf("queued again: %v", r)
	}
	const (
		queued     = hivev1.RebootState_REBOOT_STATE_QUEUED
		draining   = hivev1.RebootState_REBOOT_STATE_DRAINING
		rebooting  = hivev1.RebootState_REBOOT_STATE_REBOOTING
		recovering = hivev1.RebootState_REBOOT_STATE_RECOVERING
		failed     = hivev1.RebootState_REBOOT_STATE_FAILED
	)
	s.SetIndex(7)
	if r := s.StepReboot(t0, &hivev1.RebootStepCommand{Node: "n1", From: queued, To: draining}); r.GetError() != "" {
		t.Fatal(r)
	}
	e := s.RebootEntry("n1")
	if e.GetId() != 7 || !RebootHolds(e.GetState()) || !s.SwarmDrained("n1") {
		t.Fatalf("entry after taking the lock: %v", e)
	}
	// The same step again (a second leader on stale state): refused.
	if r := s.StepReboot(t0, &hivev1.RebootStepCommand{Node: "n1", From: queued, To: draining}); r.GetReason() != ReasonRebootState {
		t.Fatalf("stale step: %v", r)
	}
	if r := s.StepReboot(t0, &hivev1.RebootStepCommand{Node: "n1", Id: 6, From: draining, To: rebooting}); r.GetReason() != ReasonRebootState {
		t.Fatalf("wrong id: %v", r)
	}
	s.StepReboot(t0, &hivev1.RebootStepCommand{Node: "n1", Id: 7, From: draining, To: rebooting, BootId: "b1"})
	s.StepReboot(t0, &hivev1.RebootStepCommand{Node: "n1", Id: 7, From: rebooting, To: recovering, BootId: "b2"})
	s.StepReboot(t0, &hivev1.RebootStepCommand{Node: "n1", Id: 7, From: recovering, To: failed, Message: "not healthy"})
	if q := s.RebootQueue(); q.GetHalted() != "n1" || s.SwarmDrained("n1") {
		t.Fatalf("after a failure: %v", q)
	}
	if r := s.RequestReboot(t0, &hivev1.RebootRequestCommand{Nodes: []string{"n1"}}); r.GetReason() != ReasonRebootState {
		t.Fatalf("request on a halted queue: %v", r)
	}
	s.CancelReboot(t0, &hivev1.RebootCancelCommand{Author: "a"})
	q := s.RebootQueue()
	if q.GetHalted() != "" || s.RebootEntry("n2").GetState() != hivev1.RebootState_REBOOT_STATE_CANCELLED {
		t.Fatalf("after cancel: %v", q)
	}
	// A new request drops finished entries.
	s.RequestReboot(t0, &hivev1.RebootRequestCommand{Nodes: []string{"n2"}})
	if q := s.RebootQueue(); len(q.GetNodes()) != 1 || q.GetNodes()[0].GetState() != queued {
		t.Fatalf("new request: %v", q)
	}
}
