package state

import (
	"fmt"
	"sort"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Maintenance and the reboot queue (docs/operations.md, "Maintenance" and
// "Reboots").
//
// A node in maintenance keeps the target generation it had when it entered
// (MaintenanceRecord.generation): TargetNumber returns it whatever pushes
// and rollouts come after, so the node keeps enforcing what it has and
// takes nothing new until it resumes.
//
// The reboot queue is the fleet reboot lock: nodes in DRAINING, REBOOTING
// or RECOVERING hold it. The leader moves nodes with RebootStepCommand,
// each transition checked here against the node's current state and id,
// so a step decided by a deposed leader on stale state is refused
// (ReasonRebootState) instead of applied twice.

// Reasons of refused maintenance and reboot commands.
const (
	// ReasonRebootState: a reboot step that does not match the node's
	// current state or id, or a request while the queue is halted.
	ReasonRebootState = "reboot_state"
)

// MaxRebootQueue bounds the reboot queue (finished entries included).
const MaxRebootQueue = 10000

// RebootHolds reports whether a node in state st holds the reboot lock.
func RebootHolds(st hivev1.RebootState) bool {
	switch st {
	case hivev1.RebootState_REBOOT_STATE_DRAINING, hivev1.RebootState_REBOOT_STATE_REBOOTING, hivev1.RebootState_REBOOT_STATE_RECOVERING:
		return true
	}
	return false
}

// rebootFinished reports whether st is final.
func rebootFinished(st hivev1.RebootState) bool {
	switch st {
	case hivev1.RebootState_REBOOT_STATE_DONE, hivev1.RebootState_REBOOT_STATE_FAILED, hivev1.RebootState_REBOOT_STATE_CANCELLED:
		return true
	}
	return false
}

// SetMaintenance puts a registered node into maintenance, pinning its
// current target generation; again on a node in maintenance it replaces
// reason and author and keeps the pinned generation and since. An
// unknown node is ReasonNotFound.
func (s *Store) SetMaintenance(t time.Time, c *hivev1.MaintenanceSetCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[c.GetNode()]; !ok {
		return reject(ReasonNotFound, "node %q is not registered (it has never watched)", c.GetNode())
	}
	m := &hivev1.MaintenanceRecord{Node: c.GetNode(), Reason: c.GetReason(), Author: c.GetAuthor(), Since: timestamppb.New(t)}
	if old := s.maint[c.GetNode()]; old != nil {
		m.Since, m.Generation = old.GetSince(), old.GetGeneration()
	} else {
		m.Generation = s.targetLocked(c.GetNode())
	}
	if s.maint == nil {
		s.maint = map[string]*hivev1.MaintenanceRecord{}
	}
	s.maint[c.GetNode()] = m
	s.registryVersion++ // re-render: the swarm manager drains it
	return &hivev1.CommandResult{}
}

// ClearMaintenance takes a node out of maintenance; one not in maintenance
// is ReasonNotFound.
func (s *Store) ClearMaintenance(c *hivev1.MaintenanceClearCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.maint[c.GetNode()] == nil {
		return reject(ReasonNotFound, "node %q is not in maintenance", c.GetNode())
	}
	delete(s.maint, c.GetNode())
	s.registryVersion++
	return &hivev1.CommandResult{}
}

// Maintenance returns node's maintenance record, or nil.
func (s *Store) Maintenance(node string) *hivev1.MaintenanceRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.maint[node]
}

// Maintained returns every maintenance record, by node name.
func (s *Store) Maintained() []*hivev1.MaintenanceRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.maintainedLocked()
}

func (s *Store) maintainedLocked() []*hivev1.MaintenanceRecord {
	out := make([]*hivev1.MaintenanceRecord, 0, len(s.maint))
	for _, m := range s.maint {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetNode() < out[j].GetNode() })
	return out
}

// RebootQueue returns the reboot queue, or nil.
func (s *Store) RebootQueue() *hivev1.RebootQueue {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reboot
}

// RebootEntry returns node's entry of the reboot queue, or nil.
func (s *Store) RebootEntry(node string) *hivev1.RebootNode {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, n := range s.reboot.GetNodes() {
		if n.GetName() == node {
			return n
		}
	}
	return nil
}

// RequestReboot queues the command's nodes: finished entries are dropped,
// nodes already queued or holding the lock stay as they are, the others
// are appended in the command's order. Unknown nodes are ReasonNotFound
// (nothing queued); a halted queue is ReasonRebootState. A request that
// queues nothing new is Unchanged.
func (s *Store) RequestReboot(t time.Time, c *hivev1.RebootRequestCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	q, _, res := s.rebootRequestLocked(t, c)
	if res.GetError() == "" && !res.GetUnchanged() {
		s.reboot = q
	}
	return res
}

// PlanRebootRequest returns the queue RequestReboot would leave for c and
// the names c adds to it, storing nothing (a reboot dry run): the same
// rejection (nil queue) or Unchanged result as RequestReboot on this
// store now. The queue shares its entries with the store's: read-only.
func (s *Store) PlanRebootRequest(t time.Time, c *hivev1.RebootRequestCommand) (*hivev1.RebootQueue, map[string]bool, *hivev1.CommandResult) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rebootRequestLocked(t, c)
}

// rebootRequestLocked decides RequestReboot: the new queue, the names c
// adds to it, and the result (a rejection with a nil queue, Unchanged, or
// applied). Callers hold mu and decide whether to store the queue.
func (s *Store) rebootRequestLocked(t time.Time, c *hivev1.RebootRequestCommand) (*hivev1.RebootQueue, map[string]bool, *hivev1.CommandResult) {
	if len(c.GetNodes()) == 0 {
		return nil, nil, reject(ReasonInvalid, "no node to reboot")
	}
	for _, n := range c.GetNodes() {
		if _, ok := s.nodes[n]; !ok {
			return nil, nil, reject(ReasonNotFound, "node %q is not registered (it has never watched)", n)
		}
	}
	if h := s.reboot.GetHalted(); h != "" {
		return nil, nil, reject(ReasonRebootState, "the reboot queue is halted: %s did not come back healthy; see `hivectl node reboot --status`, then `hivectl node reboot --cancel`", h)
	}
	q := &hivev1.RebootQueue{MaxParallel: s.reboot.GetMaxParallel()}
	present := map[string]bool{}
	for _, n := range s.reboot.GetNodes() {
		if !rebootFinished(n.GetState()) {
			q.Nodes = append(q.Nodes, n)
			present[n.GetName()] = true
		}
	}
	added := map[string]bool{}
	for _, name := range c.GetNodes() {
		if present[name] {
			continue
		}
		present[name] = true
		q.Nodes = append(q.Nodes, &hivev1.RebootNode{Name: name, State: hivev1.RebootState_REBOOT_STATE_QUEUED,
			RequestedBy: c.GetAuthor(), Reason: c.GetReason(), Queued: timestamppb.New(t), Updated: timestamppb.New(t)})
		added[name] = true
	}
	if len(q.Nodes) > MaxRebootQueue {
		return nil, nil, reject(ReasonInvalid, "the reboot queue would hold %d nodes; the limit is %d", len(q.Nodes), MaxRebootQueue)
	}
	if c.GetMaxParallel() > 0 {
		q.MaxParallel = c.GetMaxParallel()
	}
	if q.MaxParallel == 0 {
		q.MaxParallel = 1
	}
	if len(added) == 0 && q.MaxParallel == s.reboot.GetMaxParallel() {
		return q, added, &hivev1.CommandResult{Unchanged: true}
	}
	return q, added, &hivev1.CommandResult{}
}

// StepReboot moves one node of the queue from c.from to c.to. It is
// refused (ReasonRebootState) unless the node is in c.from with c.id (a
// QUEUED node has id 0). Taking the lock (to DRAINING) stamps the node's
// id with the raft index of this command and its start time; FAILED halts
// the queue.
func (s *Store) StepReboot(t time.Time, c *hivev1.RebootStepCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := -1
	for j, n := range s.reboot.GetNodes() {
		if n.GetName() == c.GetNode() {
			i = j
		}
	}
	if i < 0 {
		return reject(ReasonNotFound, "node %q is not in the reboot queue", c.GetNode())
	}
	old := s.reboot.GetNodes()[i]
	if old.GetState() != c.GetFrom() || old.GetId() != c.GetId() {
		return reject(ReasonRebootState, "node %s is %s (reboot %d), not %s (reboot %d)", c.GetNode(),
			old.GetState(), old.GetId(), c.GetFrom(), c.GetId())
	}
	if c.GetTo() == hivev1.RebootState_REBOOT_STATE_UNSPECIFIED || c.GetTo() == hivev1.RebootState_REBOOT_STATE_QUEUED {
		return reject(ReasonInvalid, "reboot step to %s", c.GetTo())
	}
	n := proto.Clone(old).(*hivev1.RebootNode)
	n.State, n.Message, n.Updated = c.GetTo(), c.GetMessage(), timestamppb.New(t)
	if c.GetBootId() != "" {
		n.BootId = c.GetBootId()
	}
	q := proto.Clone(s.reboot).(*hivev1.RebootQueue)
	if c.GetFrom() == hivev1.RebootState_REBOOT_STATE_QUEUED {
		n.Id, n.Started = s.index, timestamppb.New(t)
	}
	if c.GetTo() == hivev1.RebootState_REBOOT_STATE_FAILED {
		q.Halted = c.GetNode()
	}
	q.Nodes[i] = n
	s.reboot = q
	if c.GetTo() == hivev1.RebootState_REBOOT_STATE_DRAINING || rebootFinished(c.GetTo()) {
		s.registryVersion++ // re-render: the swarm manager drains or undrains it
	}
	return &hivev1.CommandResult{}
}

// CancelReboot marks the queued nodes CANCELLED and clears a halt; nodes
// holding the lock go on. A queue with nothing to cancel is Unchanged.
func (s *Store) CancelReboot(t time.Time, c *hivev1.RebootCancelCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reboot == nil {
		return &hivev1.CommandResult{Unchanged: true}
	}
	q := proto.Clone(s.reboot).(*hivev1.RebootQueue)
	changed := q.Halted != ""
	q.Halted = ""
	for _, n := range q.Nodes {
		if n.State == hivev1.RebootState_REBOOT_STATE_QUEUED {
			n.State, n.Updated, n.Message = hivev1.RebootState_REBOOT_STATE_CANCELLED, timestamppb.New(t), "cancelled by "+c.GetAuthor()
			changed = true
		}
	}
	if !changed {
		return &hivev1.CommandResult{Unchanged: true}
	}
	s.reboot = q
	return &hivev1.CommandResult{}
}

// SwarmDrained reports whether the node is to be drained in the swarm: in
// maintenance, or holding the reboot lock.
func (s *Store) SwarmDrained(node string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.maint[node] != nil {
		return true
	}
	for _, n := range s.reboot.GetNodes() {
		if n.GetName() == node && RebootHolds(n.GetState()) {
			return true
		}
	}
	return false
}

func (s *Store) captureMaintenanceLocked(snap *hivev1.StateSnapshot) {
	snap.Maintenance = s.maintainedLocked()
	snap.Reboot = s.reboot
}

func (s *Store) restoreMaintenance(snap *hivev1.StateSnapshot) error {
	for _, m := range snap.GetMaintenance() {
		if m.GetNode() == "" {
			return fmt.Errorf("%w: maintenance record without a node", ErrSnapshotFormat)
		}
		if s.maint == nil {
			s.maint = map[string]*hivev1.MaintenanceRecord{}
		}
		s.maint[m.GetNode()] = m
	}
	s.reboot = snap.GetReboot()
	return nil
}
