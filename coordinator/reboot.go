package coordinator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Coordinated reboots (docs/operations.md, "Reboots"). The queue and the
// fleet lock are raft state (state.RebootQueue): whatever a leader decided
// is there for the next one, which carries on from it. The leader's loop
// (runReboots, started with leadership like runRollouts) moves each node:
//
//	QUEUED → DRAINING     it takes the lock: fewer than max_parallel hold
//	                      it, and no holder is a DRBD peer of it, and the
//	                      swarm managers keep a majority (quorumConflict,
//	                      the rollout planner's rules, through rebootLock,
//	                      which a dry run plans with too: rebootPlan)
//	DRAINING → REBOOTING  its swarm node is drained: the store marks it
//	                      drained from DRAINING on, the swarm initializer's
//	                      state lists it (NodeState.swarm_drain) and the
//	                      initializer reported converged on that state; the
//	                      agent's boot id is recorded; every coordinator's
//	                      watch of the node now sends it a RebootOrder
//	REBOOTING → RECOVERING  a report with another boot id arrived
//	RECOVERING → DONE     that boot's report converged on its target with
//	                      every check passing and none failing at all
//	                      (builtin/drbd UpToDate, builtin/swarm Ready, the
//	                      role's checks); the lock is released, the swarm
//	                      node undrained
//	* → FAILED            not back within RebootTimeout: the lock is
//	                      released and the queue halts
//
// A node whose last report asks for a reboot (a resource notified
// "reboot") is queued by the leader, as "agent:NODE".
//
// Nothing is kept in memory: a step is decided from the store and the
// clock, and each RebootStepCommand names the state it leaves, so a step a
// deposed leader proposes on stale state is refused by the FSM.

// RebootTimeout is how long a node may take from the reboot order to
// healthy before the queue halts.
var RebootTimeout = 15 * time.Minute

// rebootTick is how often the leader looks at the queue.
const rebootTick = 250 * time.Millisecond

// runReboots drives the reboot queue while this server leads.
func (s *Server) runReboots(ctx context.Context) {
	if !s.rebootRunning.CompareAndSwap(false, true) {
		return
	}
	defer s.rebootRunning.Store(false)
	// One look per tick, not per status change: with a queue blocked by
	// the quorum rules a look renders every node (cached), and a large
	// fleet's reports change the status many times a second.
	t := time.NewTicker(rebootTick)
	defer t.Stop()
	for s.raft.State() == raft.Leader {
		s.rebootStep(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rebootStep looks at the queue once and commits what has to change.
func (s *Server) rebootStep(ctx context.Context, now time.Time) {
	for _, c := range s.rebootCommands(s.fsm.Store(), now) {
		actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		_, err := s.commit(actx, c)
		cancel()
		if err != nil {
			s.log.Warn("reboot queue", "err", err)
			return
		}
		if st := c.GetRebootStep(); st != nil {
			s.log.Info("reboot step", "node", st.GetNode(), "state", rebootStateName(st.GetTo()), "message", st.GetMessage())
		}
	}
}

// rebootCommands decides, from the store alone, the commands that move the
// queue on now.
func (s *Server) rebootCommands(st *state.Store, now time.Time) []*hivev1.Command {
	var out []*hivev1.Command
	q := st.RebootQueue()
	step := func(n *hivev1.RebootNode, to hivev1.RebootState, msg, boot string) {
		out = append(out, &hivev1.Command{Body: &hivev1.Command_RebootStep{RebootStep: &hivev1.RebootStepCommand{
			Node: n.GetName(), Id: n.GetId(), From: n.GetState(), To: to, Message: msg, BootId: boot}}})
	}
	queued := map[string]bool{}
	holders := 0
	for _, n := range q.GetNodes() {
		if n.GetState() == hivev1.RebootState_REBOOT_STATE_QUEUED || state.RebootHolds(n.GetState()) {
			queued[n.GetName()] = true
		}
		if state.RebootHolds(n.GetState()) {
			holders++
		}
		rep := st.Report(n.GetName())
		since := now.Sub(n.GetUpdated().AsTime())
		switch n.GetState() {
		case hivev1.RebootState_REBOOT_STATE_DRAINING:
			if rep.GetBootId() == "" {
				step(n, hivev1.RebootState_REBOOT_STATE_FAILED, "the agent reports no boot id (an agent older than this coordinator?)", "")
				continue
			}
			if why := s.swarmDrainPending(st, n.GetName()); why != "" {
				if since > RebootTimeout {
					step(n, hivev1.RebootState_REBOOT_STATE_FAILED, fmt.Sprintf("not drained within %v: %s", RebootTimeout, why), "")
				}
				continue
			}
			step(n, hivev1.RebootState_REBOOT_STATE_REBOOTING, "", rep.GetBootId())
		case hivev1.RebootState_REBOOT_STATE_REBOOTING:
			if b := rep.GetBootId(); b != "" && b != n.GetBootId() {
				step(n, hivev1.RebootState_REBOOT_STATE_RECOVERING, "", b)
			} else if since > RebootTimeout {
				step(n, hivev1.RebootState_REBOOT_STATE_FAILED, fmt.Sprintf("did not come back within %v", RebootTimeout), "")
			}
		case hivev1.RebootState_REBOOT_STATE_RECOVERING:
			if why := s.rebootHealth(st, n.GetName(), n.GetBootId()); why == "" {
				step(n, hivev1.RebootState_REBOOT_STATE_DONE, "", "")
			} else if since > RebootTimeout {
				step(n, hivev1.RebootState_REBOOT_STATE_FAILED, fmt.Sprintf("not healthy within %v: %s", RebootTimeout, why), "")
			}
		}
	}
	// Resources that notified reboot queue their node.
	if q.GetHalted() == "" {
		// One pass under the store's read lock without copying the
		// reports: the loop looks four times a second, and a copy of
		// 10,000 reports each time was most of an idle leader's
		// allocation. EachNodeReport visits registered nodes only.
		var want []string
		st.EachNodeReport(func(n *hivev1.NodeRecord, r *hivev1.Report) bool {
			if r.GetRebootRequired() && !queued[n.GetName()] {
				want = append(want, n.GetName())
			}
			return true
		})
		slices.Sort(want)
		for _, name := range want {
			if st.Maintenance(name) != nil {
				continue
			}
			out = append(out, &hivev1.Command{Body: &hivev1.Command_RebootRequest{RebootRequest: &hivev1.RebootRequestCommand{
				Nodes: []string{name}, Author: "agent:" + name, Reason: "a resource notified reboot"}}})
		}
	}
	if q == nil || q.GetHalted() != "" || holders >= int(q.GetMaxParallel()) {
		return out
	}
	// Take the lock for queued nodes, in queue order, while it allows.
	var waiting []*hivev1.RebootNode
	for _, n := range q.GetNodes() {
		if n.GetState() == hivev1.RebootState_REBOOT_STATE_QUEUED {
			if st.Node(n.GetName()) == nil {
				step(n, hivev1.RebootState_REBOOT_STATE_CANCELLED, "node removed", "")
				continue
			}
			waiting = append(waiting, n)
		}
	}
	if len(waiting) == 0 {
		return out
	}
	lock := newRebootLock(s.rebootPlanNodes(st), q)
	for _, n := range waiting {
		if lock.full() {
			break
		}
		if lock.admit(n.GetName()) != "" {
			continue
		}
		step(n, hivev1.RebootState_REBOOT_STATE_DRAINING, "", "")
	}
	return out
}

// rebootLock is the fleet reboot lock as its admission rules see it: who
// holds it, and the quorum facts of the nodes (rebootPlanNodes). The
// leader's loop (rebootCommands) and a dry run (rebootPlan) both admit
// through it, so a plan cannot drift from what the queue does. Not safe
// for concurrent use; it reads no store.
type rebootLock struct {
	facts       map[string]*planNode
	maxParallel int
	// holders counts the nodes holding the lock, with facts or not; set
	// holds those with facts (the only ones quorumConflict can weigh),
	// in their names, setManagers how many of them are managers.
	holders     int
	set         []*planNode
	in          map[string]bool
	setManagers int
	// managers counts the swarm managers among facts; limit is
	// ManagerWaveLimit of them, less the managers already down outside
	// the holders when the lock was looked at (it is not recomputed as
	// nodes are admitted).
	managers, limit int
}

// newRebootLock returns the lock of queue q: its max_parallel, and its
// nodes in DRAINING, REBOOTING or RECOVERING as holders.
func newRebootLock(facts map[string]*planNode, q *hivev1.RebootQueue) *rebootLock {
	l := &rebootLock{facts: facts, maxParallel: int(q.GetMaxParallel()), in: map[string]bool{}}
	for _, pn := range facts {
		if pn.manager {
			l.managers++
		}
	}
	for _, n := range q.GetNodes() {
		if state.RebootHolds(n.GetState()) {
			l.hold(n.GetName())
		}
	}
	down := 0
	for _, pn := range facts {
		if pn.manager && pn.down && !l.in[pn.name] {
			down++
		}
	}
	l.limit = ManagerWaveLimit(l.managers, down)
	return l
}

// hold counts name among the holders.
func (l *rebootLock) hold(name string) {
	l.holders++
	pn := l.facts[name]
	if pn == nil {
		return
	}
	l.set = append(l.set, pn)
	l.in[pn.name] = true
	if pn.manager {
		l.setManagers++
	}
}

// full reports whether max_parallel nodes hold the lock.
func (l *rebootLock) full() bool { return l.holders >= l.maxParallel }

// admit lets name take the lock and returns "", or says why it may not:
// max_parallel nodes hold it, or quorumConflict (a DRBD peer holds it,
// or the swarm managers would lose their majority). A node without facts
// (no target generation) conflicts with nothing.
func (l *rebootLock) admit(name string) string {
	if l.full() {
		return fmt.Sprintf("max parallel %d: the lock is full", l.maxParallel)
	}
	pn := l.facts[name]
	if pn == nil {
		pn = &planNode{name: name}
	}
	if why := quorumConflict(l.set, l.in, l.setManagers, pn, l.managers, l.limit); why != "" {
		return why
	}
	l.hold(name)
	return ""
}

// rebootPlan cuts q, the queue a request would leave
// (state.PlanRebootRequest), into the waves the leader's loop would run,
// admitting through the same rebootLock as rebootCommands: wave 1 is the
// nodes holding the lock now and the queued nodes it lets join them, in
// queue order; each later wave starts from an empty lock with the nodes
// still waiting, in queue order. A wave is a simplification (the real
// queue admits a node as soon as one holder is done, against who holds
// the lock then): it assumes a wave's nodes are all done, and healthy, before
// the next starts (an unhealthy one halts the queue), so a manager of an
// earlier wave no longer counts as down. Queued nodes no longer
// registered are left out (the leader cancels them). added names the
// nodes the request adds (their state is left UNSPECIFIED). It reads the
// store only.
func (s *Server) rebootPlan(st *state.Store, q *hivev1.RebootQueue, added map[string]bool) []*hivev1.RebootPlanWave {
	facts := s.rebootPlanNodes(st)
	var waiting []*hivev1.RebootNode
	for _, n := range q.GetNodes() {
		if n.GetState() == hivev1.RebootState_REBOOT_STATE_QUEUED && st.Node(n.GetName()) != nil {
			waiting = append(waiting, n)
		}
	}
	waits := map[string]string{} // why a node did not join the wave before
	var waves []*hivev1.RebootPlanWave
	lockOf := q // wave 1: the lock as it is held now
	for first := true; first || len(waiting) > 0; first = false {
		lock := newRebootLock(facts, lockOf)
		w := &hivev1.RebootPlanWave{}
		if first {
			for _, n := range q.GetNodes() {
				if state.RebootHolds(n.GetState()) {
					w.Nodes = append(w.Nodes, &hivev1.RebootPlanNode{Name: n.GetName(), State: n.GetState()})
				}
			}
		}
		var rest []*hivev1.RebootNode
		for _, n := range waiting {
			if why := lock.admit(n.GetName()); why != "" {
				waits[n.GetName()] = fmt.Sprintf("not in wave %d: %s", len(waves)+1, why)
				rest = append(rest, n)
				continue
			}
			pn := &hivev1.RebootPlanNode{Name: n.GetName(), State: n.GetState(), Waits: waits[n.GetName()]}
			if added[n.GetName()] {
				pn.State = hivev1.RebootState_REBOOT_STATE_UNSPECIFIED
			}
			w.Nodes = append(w.Nodes, pn)
		}
		if len(w.Nodes) == 0 {
			if !first {
				break // cannot happen: an empty lock admits the first node waiting
			}
			continue
		}
		for _, pn := range w.Nodes {
			if f := facts[pn.GetName()]; f != nil {
				f.down = false
			}
		}
		waves = append(waves, w)
		waiting = rest
		lockOf = &hivev1.RebootQueue{MaxParallel: q.GetMaxParallel()}
	}
	return waves
}

// rebootHealth says what node, back with boot id boot, still lacks ("":
// nothing): a report of that boot converged on its target generation,
// health passing when the node has site checks, every reported check
// passing with no failure at all (a check counts as passing below its
// failure threshold; a node just back must be healthy now), and, unless
// the agent runs in a sandbox, the built-in DRBD and swarm checks among
// them.
func (s *Server) rebootHealth(st *state.Store, node, boot string) string {
	r := st.Report(node)
	target := st.TargetNumber(node)
	switch {
	case r.GetBootId() != boot:
		return "no report since it came back"
	case r.GetGeneration() != target:
		return fmt.Sprintf("not on its target generation %d yet (%s)", target, progressOf(r, target))
	case r.GetPhase() != hivev1.Phase_PHASE_CONVERGED:
		return "phase " + r.GetPhase().String()
	case expectsHealth(st, target, node) && r.GetHealth() != hivev1.Health_HEALTH_PASSING:
		return "health " + r.GetHealth().String()
	}
	have := map[string]bool{}
	for _, c := range r.GetChecks() {
		if !c.GetPassing() || c.GetFailures() > 0 {
			return fmt.Sprintf("check %s: %s", c.GetName(), c.GetMessage())
		}
		have[c.GetName()] = true
	}
	// The built-in checks of its DRBD resources and swarm membership must
	// have run since it came back (they run every 10 s; an agent under a
	// --root sandbox never runs them).
	if !r.GetSandbox() {
		for _, name := range s.builtinChecks(st, node) {
			if !have[name] {
				return fmt.Sprintf("check %s not reported yet", name)
			}
		}
	}
	return ""
}

// builtinChecks names the built-in checks an agent runs for node's state
// at its target: "builtin/drbd:R" per DRBD resource, "builtin/swarm".
func (s *Server) builtinChecks(st *state.Store, node string) []string {
	n, g := st.Node(node), st.TargetGeneration(node)
	if n == nil || g == nil {
		return nil
	}
	out, err := s.renderer.RenderAt(st, g, render.FactsOf(n))
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range out.State.GetResources() {
		if d := r.GetDrbd(); d != nil {
			names = append(names, "builtin/drbd:"+d.GetName())
		}
		if r.GetSwarm() != nil {
			names = append(names, "builtin/swarm")
		}
	}
	return names
}

// rebootPlanNodes describes every registered node at its target generation
// for quorumConflict: its DRBD peers and whether it is a swarm manager
// (down: a manager whose report failed or whose health fails).
func (s *Server) rebootPlanNodes(st *state.Store) map[string]*planNode {
	registry, _ := st.Nodes()
	out := map[string]*planNode{}
	for _, n := range registry {
		g := st.TargetGeneration(n.GetName())
		if g == nil {
			continue
		}
		pn := &planNode{name: n.GetName()}
		if r, err := s.renderer.RenderAt(st, g, render.FactsOf(n)); err == nil {
			pn.drbdPeers, pn.manager = stateQuorumFacts(r.State, n.GetName())
		}
		if pn.manager {
			r := st.Report(n.GetName())
			pn.down = r.GetPhase() == hivev1.Phase_PHASE_FAILED || r.GetHealth() == hivev1.Health_HEALTH_FAILING
		}
		out[n.GetName()] = pn
	}
	return out
}

// swarmDrainPending says what draining node's swarm node still waits for
// ("": nothing, or node holds no swarm role): the swarm's initializer must
// have reported converged on the state that lists node in swarm_drain.
func (s *Server) swarmDrainPending(st *state.Store, node string) string {
	self := st.Node(node)
	g := st.TargetGeneration(node)
	if self == nil || g == nil {
		return ""
	}
	r, err := s.renderer.RenderAt(st, g, render.FactsOf(self))
	if err != nil || !hasSwarm(r.State) {
		return ""
	}
	registry, _ := st.Nodes()
	for _, n := range registry {
		gen := st.TargetGeneration(n.GetName())
		if gen == nil {
			continue
		}
		out, err := s.renderer.RenderAt(st, gen, render.FactsOf(n))
		if err != nil || !isInitializer(out.State) {
			continue
		}
		if !slices.Contains(out.State.GetSwarmDrain(), node) {
			return fmt.Sprintf("the swarm initializer %s's state does not drain it yet", n.GetName())
		}
		rep := st.Report(n.GetName())
		if rep.GetStateHash() != out.State.GetHash() || rep.GetPhase() != hivev1.Phase_PHASE_CONVERGED {
			return fmt.Sprintf("waiting for the swarm initializer %s to drain it", n.GetName())
		}
		return ""
	}
	return "" // no initializer rendered: no swarm to drain it in
}

func hasSwarm(st *hivev1.NodeState) bool {
	for _, r := range st.GetResources() {
		if r.GetSwarm() != nil {
			return true
		}
	}
	return false
}

func isInitializer(st *hivev1.NodeState) bool {
	for _, r := range st.GetResources() {
		if r.GetSwarm().GetInitializer() {
			return true
		}
	}
	return false
}

// rebootOrder returns the reboot order node's watch must send, or nil: the
// node is REBOOTING.
func rebootOrder(st *state.Store, node string) *hivev1.RebootOrder {
	n := st.RebootEntry(node)
	if n.GetState() != hivev1.RebootState_REBOOT_STATE_REBOOTING {
		return nil
	}
	return &hivev1.RebootOrder{Id: n.GetId()}
}
