package coordinator

import (
	"fmt"
	"sort"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// DefaultHealthyDeadline is a rollout wave's healthy_deadline when no
// policy sets one.
const DefaultHealthyDeadline = 5 * time.Minute

// planNode is what the rollout planner knows of one node.
type planNode struct {
	name  string
	roles []string
	// drbdPeers are the other nodes of the DRBD resources the node holds
	// (as its rendered state names them).
	drbdPeers []string
	// manager: a swarm manager in the generation rolled out or in the one
	// it has now.
	manager bool
	// down: a manager whose last report failed or whose health fails: it
	// already counts against the managers' majority.
	down bool
}

// wavePlan is a rollout plan: the waves, canary first.
type wavePlan struct {
	waves []*hivev1.RolloutWave
}

// needsRollout reports whether a policy asks for waves at all: a canary or
// a max_parallel, at the top level or in a role. Without one a push
// reaches every node at once (as before rollouts existed).
func needsRollout(global *hivev1.RolloutPolicy, roles map[string]*hivev1.RolloutPolicy) bool {
	waves := func(p *hivev1.RolloutPolicy) bool {
		return p.GetCanaryCount() > 0 || len(p.GetCanaryNodes()) > 0 || p.GetMaxParallel() > 0 || p.GetMaxParallelPercent() > 0
	}
	if waves(global) {
		return true
	}
	for _, p := range roles {
		if waves(p) {
			return true
		}
	}
	return false
}

// effectivePolicy merges the site's top-level policy with push flags.
func effectivePolicy(site *hivev1.RolloutPolicy, o *hivev1.RolloutOverride) *hivev1.RolloutPolicy {
	p := &hivev1.RolloutPolicy{}
	if site != nil {
		p = proto.Clone(site).(*hivev1.RolloutPolicy)
	}
	if o == nil {
		return p
	}
	if o.CanaryCount != nil {
		p.CanaryCount, p.CanaryNodes = o.GetCanaryCount(), nil
	}
	if len(o.GetCanaryNodes()) > 0 {
		p.CanaryCount, p.CanaryNodes = 0, o.GetCanaryNodes()
	}
	if o.MaxParallel != nil {
		p.MaxParallel, p.MaxParallelPercent = o.GetMaxParallel(), 0
	}
	if o.MaxParallelPercent != nil {
		p.MaxParallel, p.MaxParallelPercent = 0, o.GetMaxParallelPercent()
	}
	if o.GetMinHealthyTime() != nil {
		p.MinHealthyTime = o.GetMinHealthyTime()
	}
	if o.GetHealthyDeadline() != nil {
		p.HealthyDeadline = o.GetHealthyDeadline()
	}
	if o.GetOnFailure() != hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_UNSPECIFIED {
		p.OnFailure = o.GetOnFailure()
	}
	return p
}

// capOf returns how many of n nodes a policy lets into one wave (n: no
// limit).
func capOf(p *hivev1.RolloutPolicy, n int) int {
	switch {
	case p.GetMaxParallel() > 0:
		return int(p.GetMaxParallel())
	case p.GetMaxParallelPercent() > 0:
		return max(1, (n*int(p.GetMaxParallelPercent())+99)/100)
	}
	return max(n, 1)
}

// ManagerWaveLimit is how many of m swarm managers, down of which are
// already failing, one wave may take: the managers must keep a majority
// (more than m/2 up), so a wave takes at most (m-1)/2 minus those already
// down: 1 of 3, 2 of 5, 1 of 4. It is at least 1 so a rollout can always
// progress; with 1 or 2 managers (or too many down) a single manager
// restarting loses the majority whatever the plan, and the docs say so.
func ManagerWaveLimit(m, down int) int {
	return max(1, (m-1)/2-down)
}

// planWaves cuts nodes into waves, deterministically (sorted names):
//
//   - the canary wave first: the policy's canary names, or its canary
//     count of the first nodes by name, plus each role's canaries;
//   - then waves of at most the policy's max_parallel (count, or percent
//     of the rollout's nodes), and of each role at most that role's
//     max_parallel (percent of the role's nodes);
//   - no wave, canary included, holds two peers of one DRBD resource, or
//     more swarm managers than ManagerWaveLimit.
//
// Each wave's gate is the largest min_healthy_time and healthy_deadline of
// its nodes' policies (role over top level), and it rolls back on failure
// if any of its nodes' policies says so. Canary names that are not nodes
// of the rollout, or canaries that break a quorum rule, are errors.
func planWaves(nodes []planNode, global *hivev1.RolloutPolicy, roles map[string]*hivev1.RolloutPolicy) (*wavePlan, error) {
	nodes = append([]planNode(nil), nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].name < nodes[j].name })
	byName := map[string]*planNode{}
	roleCount := map[string]int{}
	managers, down := 0, 0
	for i := range nodes {
		n := &nodes[i]
		byName[n.name] = n
		for _, r := range n.roles {
			roleCount[r]++
		}
		if n.manager {
			managers++
			if n.down {
				down++
			}
		}
	}
	mgrLimit := ManagerWaveLimit(managers, down)
	waveCap := capOf(global, len(nodes))
	roleCap := map[string]int{}
	for r, c := range roleCount {
		roleCap[r] = capOf(roles[r], c)
	}

	type wave struct {
		nodes    []*planNode
		inWave   map[string]bool
		managers int
		roles    map[string]int
	}
	newWave := func() *wave { return &wave{inWave: map[string]bool{}, roles: map[string]int{}} }
	// conflict says why n cannot join w ("" if it can), ignoring sizes.
	conflict := func(w *wave, n *planNode) string {
		return quorumConflict(w.nodes, w.inWave, w.managers, n, managers, mgrLimit)
	}
	fits := func(w *wave, n *planNode) bool {
		if len(w.nodes) >= waveCap || conflict(w, n) != "" {
			return false
		}
		for _, r := range n.roles {
			if w.roles[r]+1 > roleCap[r] {
				return false
			}
		}
		return true
	}
	add := func(w *wave, n *planNode) {
		w.nodes = append(w.nodes, n)
		w.inWave[n.name] = true
		if n.manager {
			w.managers++
		}
		for _, r := range n.roles {
			w.roles[r]++
		}
	}

	// Canaries.
	placed := map[string]bool{}
	canary := newWave()
	addCanary := func(name, from string) error {
		n, ok := byName[name]
		if !ok {
			return fmt.Errorf("%s: canary node %q is not among the %d nodes of this rollout", from, name, len(nodes))
		}
		if placed[name] {
			return nil
		}
		if why := conflict(canary, n); why != "" {
			return fmt.Errorf("%s: canary %s cannot join the canary wave: %s", from, name, why)
		}
		add(canary, n)
		placed[name] = true
		return nil
	}
	pickCanaries := func(count int, role, from string) {
		for i := range nodes {
			if count == 0 {
				return
			}
			n := &nodes[i]
			if placed[n.name] || (role != "" && !hasRole(n, role)) || conflict(canary, n) != "" {
				continue
			}
			add(canary, n)
			placed[n.name] = true
			count--
		}
	}
	for _, name := range global.GetCanaryNodes() {
		if err := addCanary(name, "rollout.canary"); err != nil {
			return nil, err
		}
	}
	pickCanaries(int(global.GetCanaryCount()), "", "rollout.canary")
	roleNames := make([]string, 0, len(roles))
	for r := range roles {
		roleNames = append(roleNames, r)
	}
	sort.Strings(roleNames)
	for _, r := range roleNames {
		for _, name := range roles[r].GetCanaryNodes() {
			if err := addCanary(name, "roles."+r+".rollout.canary"); err != nil {
				return nil, err
			}
		}
		pickCanaries(int(roles[r].GetCanaryCount()), r, "roles."+r+".rollout.canary")
	}

	var waves []*wave
	if len(canary.nodes) > 0 {
		waves = append(waves, canary)
	}
	for len(placed) < len(nodes) {
		w := newWave()
		for i := range nodes {
			n := &nodes[i]
			if !placed[n.name] && fits(w, n) {
				add(w, n)
				placed[n.name] = true
			}
		}
		if len(w.nodes) == 0 {
			// Cannot happen: an empty wave takes any node (caps are >= 1).
			return nil, fmt.Errorf("rollout plan: no node fits an empty wave")
		}
		waves = append(waves, w)
	}

	out := &wavePlan{}
	for i, w := range waves {
		rw := &hivev1.RolloutWave{Canary: i == 0 && len(canary.nodes) > 0}
		var minHealthy, deadline time.Duration
		rollback := false
		for _, n := range w.nodes {
			rw.Nodes = append(rw.Nodes, n.name)
			mh, dl, rb := nodeGate(n, global, roles)
			minHealthy, deadline = max(minHealthy, mh), max(deadline, dl)
			rollback = rollback || rb
		}
		sort.Strings(rw.Nodes)
		rw.MinHealthyTime = durationpb.New(minHealthy)
		rw.HealthyDeadline = durationpb.New(deadline)
		rw.OnFailure = hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_PAUSE
		if rollback {
			rw.OnFailure = hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK
		}
		out.waves = append(out.waves, rw)
	}
	return out, nil
}

// quorumConflict says why n cannot be taken down together with set ("" if
// it can): one of them is a peer of a DRBD resource n holds, or n is a
// swarm manager and set already has mgrLimit of the managers
// (ManagerWaveLimit). in holds set's names; setManagers how many of set
// are managers. The rollout planner's waves and the coordinated reboots'
// lock (reboot.go) both decide with it.
func quorumConflict(set []*planNode, in map[string]bool, setManagers int, n *planNode, managers, mgrLimit int) string {
	for _, p := range n.drbdPeers {
		if in[p] {
			return fmt.Sprintf("%s and %s are peers of a DRBD resource", p, n.name)
		}
	}
	for _, o := range set {
		for _, p := range o.drbdPeers {
			if p == n.name {
				return fmt.Sprintf("%s and %s are peers of a DRBD resource", o.name, n.name)
			}
		}
	}
	if n.manager && setManagers+1 > mgrLimit {
		return fmt.Sprintf("%d swarm managers in one wave would leave the %d managers without a majority (at most %d per wave)", setManagers+1, managers, mgrLimit)
	}
	return ""
}

func hasRole(n *planNode, role string) bool {
	for _, r := range n.roles {
		if r == role {
			return true
		}
	}
	return false
}

// nodeGate returns a node's min_healthy_time, healthy_deadline and whether
// a failure rolls back: each from its roles' policies where one sets it
// (the largest duration; rollback if any says so), else the top level.
func nodeGate(n *planNode, global *hivev1.RolloutPolicy, roles map[string]*hivev1.RolloutPolicy) (time.Duration, time.Duration, bool) {
	var mh, dl *durationpb.Duration
	var onFailure hivev1.RolloutOnFailure
	for _, r := range n.roles {
		p := roles[r]
		if d := p.GetMinHealthyTime(); d != nil && (mh == nil || d.AsDuration() > mh.AsDuration()) {
			mh = d
		}
		if d := p.GetHealthyDeadline(); d != nil && (dl == nil || d.AsDuration() > dl.AsDuration()) {
			dl = d
		}
		if f := p.GetOnFailure(); f > onFailure {
			onFailure = f // ROLLBACK > PAUSE > UNSPECIFIED
		}
	}
	if mh == nil {
		mh = global.GetMinHealthyTime()
	}
	if dl == nil {
		dl = global.GetHealthyDeadline()
	}
	if onFailure == hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_UNSPECIFIED {
		onFailure = global.GetOnFailure()
	}
	deadline := DefaultHealthyDeadline
	if dl.AsDuration() > 0 {
		deadline = dl.AsDuration()
	}
	return mh.AsDuration(), deadline, onFailure == hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK
}
