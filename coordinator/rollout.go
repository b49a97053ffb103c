package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Rollouts (docs/rollouts.md). A push whose policy asks for waves is
// appended with its plan in one RolloutPushCommand (pushCommand); each
// node is then rendered at its target generation (coordinator/state,
// render.Targeter). The leader drives the rollout (rolloutLoop, started
// whenever this server becomes leader; a new leader carries on from the
// replicated state): it opens the next wave when every node of the open
// one has been healthy for the wave's min_healthy_time, and pauses or
// rolls back when a node fails. The time the open wave became healthy is
// recorded in raft (RolloutHealthyCommand, Rollout.wave_healthy_since), so
// a new leader carries the wave's min_healthy_time on rather than
// restarting it; only when each node was first seen healthy is the
// leader's memory.

func init() {
	for _, m := range []string{"GetRollout", "WatchRollout"} {
		methodAccess[coordSvc+m] = accessAdminOrPeer
	}
	for _, m := range []string{"PauseRollout", "ResumeRollout", "PromoteRollout", "AbortRollout"} {
		methodAccess[coordSvc+m] = accessAdmin
	}
}

// rolloutTick is how often the leader's gate looks at the rollout besides
// the status changes that wake it.
const rolloutTick = 250 * time.Millisecond

// pushCommand returns the raft command for a push: a plain PushCommand
// (every node at once) unless the effective rollout policy asks for
// waves, then a RolloutPushCommand with the plan. Errors are the caller's
// (invalid override, a canary that is not a node).
func (s *Server) pushCommand(req *hivev1.PushRequest, push *hivev1.PushCommand) (*hivev1.Command, error) {
	newSite := req.GetSite()
	global := effectivePolicy(newSite.GetRollout(), req.GetRollout())
	if err := site.CheckRolloutPolicy(global); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "rollout flags: %v", err)
	}
	roles := map[string]*hivev1.RolloutPolicy{}
	for _, r := range newSite.GetRoles() {
		if r.GetRollout() != nil {
			roles[r.GetName()] = r.GetRollout()
		}
	}
	plain := &hivev1.Command{Body: &hivev1.Command_Push{Push: push}}
	if !needsRollout(global, roles) {
		return plain, nil
	}
	nodes := s.planNodes(newSite)
	if len(nodes) == 0 {
		return plain, nil
	}
	p, err := planWaves(nodes, global, roles)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "rollout plan: %v", err)
	}
	return &hivev1.Command{Body: &hivev1.Command_RolloutPush{RolloutPush: &hivev1.RolloutPushCommand{
		Push: push, Policy: global, Waves: p.waves,
	}}}, nil
}

// planNodes describes every registered node that has a role in the new
// site or in its current target: its roles, DRBD peers (from its state
// rendered at the new site) and swarm manager membership (in either).
func (s *Server) planNodes(newSite *hivev1.Site) []planNode {
	st := s.fsm.Store()
	gen := &hivev1.Generation{Number: st.CurrentNumber() + 1, Site: newSite}
	// A renderer of its own: the proposed generation is not in the store
	// and must not displace the cached views watches use.
	tmp := render.New(s.keyring)
	registry, _ := st.Nodes()
	var out []planNode
	for _, n := range registry {
		f := render.FactsOf(n)
		roles := render.SelectRoles(newSite, n.GetName(), f.Labels)
		cur := st.TargetGeneration(n.GetName())
		var curRoles []string
		if cur != nil {
			curRoles = render.SelectRoles(cur.GetSite(), n.GetName(), f.Labels)
		}
		if len(roles) == 0 && len(curRoles) == 0 {
			continue
		}
		if st.Maintenance(n.GetName()) != nil {
			continue // keeps its generation until it resumes (maintenance.go)
		}
		pn := planNode{name: n.GetName(), roles: roles}
		if out, err := tmp.RenderAt(st, gen, f); err == nil {
			pn.drbdPeers, pn.manager = stateQuorumFacts(out.State, n.GetName())
		}
		if cur != nil {
			if out, err := s.renderer.RenderAt(st, cur, f); err == nil {
				_, m := stateQuorumFacts(out.State, n.GetName())
				pn.manager = pn.manager || m
			}
		}
		if pn.manager {
			r := st.Report(n.GetName())
			pn.down = r.GetPhase() == hivev1.Phase_PHASE_FAILED || r.GetHealth() == hivev1.Health_HEALTH_FAILING
		}
		out = append(out, pn)
	}
	return out
}

// stateQuorumFacts returns the DRBD peers a rendered state names (other
// than the node; drbd resources and volumes) and whether the node is a swarm manager in it.
func stateQuorumFacts(st *hivev1.NodeState, self string) (peers []string, manager bool) {
	for _, r := range st.GetResources() {
		if d := r.GetDrbd(); d != nil {
			for _, p := range d.GetPeers() {
				if p.GetName() != self {
					peers = append(peers, p.GetName())
				}
			}
		}
		// A volume's peers (replicas and diskless) are a DRBD resource too.
		if v := r.GetVolume(); v != nil {
			for _, p := range v.GetPeers() {
				if p.GetName() != self {
					peers = append(peers, p.GetName())
				}
			}
		}
		if sw := r.GetSwarm(); sw != nil && sw.GetRole() == hivev1.SwarmRole_SWARM_ROLE_MANAGER {
			manager = true
		}
	}
	return peers, manager
}

// rolloutGate is the leader's memory of a rollout: when each node was
// first seen healthy on its target (reset when it is not), and when the
// open wave became healthy.
type rolloutGate struct {
	mu          sync.Mutex
	running     bool
	generation  uint64
	since       map[string]time.Time
	waveHealthy time.Time // zero: the open wave is not healthy yet
	// expect caches expectsHealth for the rollout's generation at one
	// registry version (rollout_health.go).
	expect         map[string]bool
	expectRegistry uint64
}

// runRollouts is started whenever this server becomes leader; it drives
// the rollout until leadership is lost or ctx ends. At most one runs.
func (s *Server) runRollouts(ctx context.Context) {
	g := &s.rollouts
	g.mu.Lock()
	if g.running {
		g.mu.Unlock()
		return
	}
	g.running = true
	g.since = map[string]time.Time{}
	g.generation = 0
	g.waveHealthy = time.Time{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running = false
		g.mu.Unlock()
	}()
	t := time.NewTimer(rolloutTick)
	defer t.Stop()
	for s.raft.State() == raft.Leader {
		ch := s.statusw.view().ch
		wait := s.rolloutStep(ctx, time.Now())
		if wait <= 0 || wait > rolloutTick {
			wait = rolloutTick
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-t.C:
		}
	}
}

// nodeHealth judges one touched node of a rollout: healthy (converged on
// target, health passing, or unspecified when the node has no checks:
// expectHealth false), failed (with why), or neither yet.
func nodeHealth(r *hivev1.Report, target uint64, expectHealth bool) (healthy bool, failed string) {
	if r.GetGeneration() != target {
		return false, ""
	}
	switch {
	case r.GetPhase() == hivev1.Phase_PHASE_FAILED:
		var errs []string
		for _, res := range state.ResultsWhere(r, state.Failed) {
			errs = append(errs, res.GetKey()+": "+res.GetMessage())
		}
		if len(errs) > 3 {
			errs = append(errs[:3], fmt.Sprintf("and %d more", len(errs)-3))
		}
		return false, fmt.Sprintf("failed to converge on generation %d (%s)", target, strings.Join(errs, "; "))
	case r.GetHealth() == hivev1.Health_HEALTH_FAILING:
		var bad []string
		for _, c := range r.GetChecks() {
			if !c.GetPassing() {
				bad = append(bad, c.GetName()+": "+c.GetMessage())
			}
		}
		return false, fmt.Sprintf("health failing on generation %d (%s)", target, strings.Join(bad, "; "))
	case r.GetPhase() == hivev1.Phase_PHASE_CONVERGED:
		// A node with checks reports unspecified health until they ran.
		return !expectHealth || r.GetHealth() == hivev1.Health_HEALTH_PASSING, ""
	}
	return false, ""
}

// rolloutStep is one look of the leader's gate at the rollout. It returns
// when to look again at the latest (0: at the next tick or change): the
// moment the open wave will have been healthy for min_healthy_time.
func (s *Server) rolloutStep(ctx context.Context, now time.Time) (next time.Duration) {
	st := s.fsm.Store()
	r := st.Rollout()
	g := &s.rollouts
	g.mu.Lock()
	if r == nil || r.GetGeneration() != st.CurrentNumber() || r.GetState() != hivev1.RolloutState_ROLLOUT_STATE_RUNNING {
		g.waveHealthy = time.Time{}
		g.mu.Unlock()
		return 0
	}
	if g.generation != r.GetGeneration() {
		g.generation, g.since, g.waveHealthy = r.GetGeneration(), map[string]time.Time{}, time.Time{}
		g.expect = nil
	}
	open := int(r.GetOpened()) - 1
	wave := r.GetWaves()[open]
	// Deadlines run from the wave's opening or the rollout's resumption,
	// whichever came last (r.updated: the last transition).
	start := r.GetUpdated().AsTime()
	var cmd *hivev1.Command
	waveHealthy := true
	for _, n := range r.GetNodes() {
		if n.GetWave() > uint32(open) || st.Maintenance(n.GetName()) != nil {
			continue // not open yet, or held back in maintenance
		}
		healthy, failed := nodeHealth(st.Report(n.GetName()), r.GetGeneration(), g.expectsHealth(st, r.GetGeneration(), n.GetName()))
		if failed == "" && !healthy {
			dl := r.GetWaves()[n.GetWave()].GetHealthyDeadline().AsDuration()
			if dl <= 0 {
				dl = DefaultHealthyDeadline
			}
			if now.Sub(start) > dl {
				failed = fmt.Sprintf("not healthy within healthy_deadline %v (%s)", dl, progressOf(st.Report(n.GetName()), r.GetGeneration()))
			}
		}
		if failed != "" {
			reason := truncateReason(n.GetName() + ": " + failed)
			if r.GetWaves()[n.GetWave()].GetOnFailure() == hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK || wave.GetOnFailure() == hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK {
				cmd = &hivev1.Command{Body: &hivev1.Command_RolloutRollback{RolloutRollback: &hivev1.RolloutRollbackCommand{
					Generation: r.GetGeneration(), Reason: reason, Author: "rollout gate"}}}
			} else {
				cmd = &hivev1.Command{Body: &hivev1.Command_RolloutPause{RolloutPause: &hivev1.RolloutPauseCommand{
					Generation: r.GetGeneration(), Reason: reason, Author: "rollout gate"}}}
			}
			break
		}
		if !healthy {
			delete(g.since, n.GetName())
			if n.GetWave() == uint32(open) {
				waveHealthy = false
			}
			continue
		}
		if _, ok := g.since[n.GetName()]; !ok {
			g.since[n.GetName()] = now
		}
	}
	stored := r.GetWaveHealthySince()
	if cmd == nil && waveHealthy {
		// Healthy since the last of its nodes became healthy, as this
		// leader or one before it recorded in raft; else as this leader
		// saw it, recorded now so that a successor carries it on.
		var from time.Time
		if stored != nil {
			from = stored.AsTime()
		} else {
			for _, name := range wave.GetNodes() {
				if t := g.since[name]; t.After(from) {
					from = t
				}
			}
		}
		g.waveHealthy = from
		next = wave.GetMinHealthyTime().AsDuration() - now.Sub(from)
		switch {
		case next <= 0 && open+1 < len(r.GetWaves()):
			cmd = &hivev1.Command{Body: &hivev1.Command_RolloutWave{RolloutWave: &hivev1.RolloutWaveCommand{
				Generation: r.GetGeneration(), Wave: uint32(open + 1), Author: "rollout gate"}}}
		case next <= 0:
			cmd = &hivev1.Command{Body: &hivev1.Command_RolloutComplete{RolloutComplete: &hivev1.RolloutCompleteCommand{Generation: r.GetGeneration()}}}
		case stored == nil:
			cmd = &hivev1.Command{Body: &hivev1.Command_RolloutHealthy{RolloutHealthy: &hivev1.RolloutHealthyCommand{
				Generation: r.GetGeneration(), Wave: uint32(open), Since: timestamppb.New(from)}}}
		}
	} else {
		g.waveHealthy = time.Time{}
		if cmd == nil && stored != nil {
			// A node of the wave is no longer healthy: its
			// min_healthy_time starts again once it is.
			cmd = &hivev1.Command{Body: &hivev1.Command_RolloutHealthy{RolloutHealthy: &hivev1.RolloutHealthyCommand{
				Generation: r.GetGeneration(), Wave: uint32(open)}}}
		}
	}
	g.mu.Unlock()
	if cmd == nil {
		return next
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	if _, err := s.commit(actx, cmd); err != nil {
		s.log.Warn("rollout gate", "generation", r.GetGeneration(), "err", err)
		return 0
	}
	switch b := cmd.GetBody().(type) {
	case *hivev1.Command_RolloutHealthy:
		if b.RolloutHealthy.GetSince() != nil {
			s.log.Debug("rollout wave healthy", "generation", r.GetGeneration(), "wave", open+1, "since", b.RolloutHealthy.GetSince().AsTime())
			// Sleep what is left of min_healthy_time after the commit
			// (0 would mean the next tick).
			return max(next-time.Since(now), time.Millisecond)
		}
		s.log.Debug("rollout wave no longer healthy", "generation", r.GetGeneration(), "wave", open+1)
	case *hivev1.Command_RolloutWave:
		s.log.Info("rollout wave opened", "generation", r.GetGeneration(), "wave", b.RolloutWave.GetWave()+1, "of", len(r.GetWaves()))
	case *hivev1.Command_RolloutComplete:
		s.log.Info("rollout completed", "generation", r.GetGeneration())
	case *hivev1.Command_RolloutPause:
		s.log.Warn("rollout paused", "generation", r.GetGeneration(), "reason", b.RolloutPause.GetReason())
	case *hivev1.Command_RolloutRollback:
		s.log.Warn("rollout rolled back", "generation", r.GetGeneration(), "reason", b.RolloutRollback.GetReason())
	}
	return 0
}

func progressOf(r *hivev1.Report, target uint64) string {
	if r == nil {
		return "never reported"
	}
	if r.GetGeneration() != target {
		return fmt.Sprintf("last report for generation %d", r.GetGeneration())
	}
	return "phase " + strings.ToLower(strings.TrimPrefix(r.GetPhase().String(), "PHASE_"))
}

// rolloutStatus builds the status answer of the latest rollout, or nil.
func (s *Server) rolloutStatus() *hivev1.RolloutStatus {
	st := s.fsm.Store()
	r := st.Rollout()
	if r == nil {
		return nil
	}
	out := &hivev1.RolloutStatus{Rollout: r, RaftIndex: st.Index()}
	if since := r.GetWaveHealthySince(); since != nil {
		// Recorded in raft: every coordinator answers the same.
		out.WaveHealthyFor = durationpb.New(time.Since(since.AsTime()))
	} else {
		// The leader saw the wave healthy but has not recorded it yet.
		g := &s.rollouts
		g.mu.Lock()
		if g.running && g.generation == r.GetGeneration() && !g.waveHealthy.IsZero() {
			out.WaveHealthyFor = durationpb.New(time.Since(g.waveHealthy))
		}
		g.mu.Unlock()
	}
	for _, n := range r.GetNodes() {
		rep := st.Report(n.GetName())
		target := st.TargetNumber(n.GetName())
		ns := &hivev1.RolloutNodeStatus{
			Name: n.GetName(), Wave: n.GetWave(), TargetGeneration: target, FromGeneration: n.GetFromGeneration(),
			AppliedGeneration: rep.GetGeneration(), Phase: rep.GetPhase(), Health: rep.GetHealth(),
		}
		if rep == nil || rep.GetGeneration() != target {
			ns.Phase = hivev1.Phase_PHASE_PENDING
		}
		healthy, failed := nodeHealth(rep, target, expectsHealth(st, target, n.GetName()))
		ns.Healthy = healthy
		ns.Message = failed
		out.Nodes = append(out.Nodes, ns)
	}
	sort.Slice(out.Nodes, func(i, j int) bool {
		if out.Nodes[i].Wave != out.Nodes[j].Wave {
			return out.Nodes[i].Wave < out.Nodes[j].Wave
		}
		return out.Nodes[i].Name < out.Nodes[j].Name
	})
	return out
}

func (a *api) GetRollout(ctx context.Context, req *hivev1.GetRolloutRequest) (*hivev1.GetRolloutResponse, error) {
	rs := a.s.rolloutStatus()
	if rs == nil {
		return nil, status.Error(codes.NotFound, "there is no rollout: no push has asked for waves yet")
	}
	return &hivev1.GetRolloutResponse{Status: rs}, nil
}

func (a *api) WatchRollout(req *hivev1.WatchRolloutRequest, stream hivev1.CoordinatorService_WatchRolloutServer) error {
	s := a.s
	ctx := stream.Context()
	var lastIdx uint64
	sent := false
	for {
		ch := s.statusw.view().ch
		rs := s.rolloutStatus()
		if rs == nil && !sent {
			return status.Error(codes.NotFound, "there is no rollout: no push has asked for waves yet")
		}
		if rs != nil && (!sent || rs.GetRaftIndex() != lastIdx || rs.GetWaveHealthyFor() != nil) {
			if err := stream.Send(&hivev1.WatchRolloutResponse{Status: rs}); err != nil {
				return err
			}
			sent, lastIdx = true, rs.GetRaftIndex()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.ctx.Done():
			return status.Error(codes.Unavailable, "coordinator stopping")
		case <-ch:
		case <-time.After(time.Second):
			// The wave's healthy time moves on without any change.
		}
	}
}

// rolloutControl commits an operator's rollout command and answers with
// the rollout after it.
func (s *Server) rolloutControl(ctx context.Context, c *hivev1.Command) (*hivev1.Rollout, error) {
	if _, err := s.commit(ctx, c); err != nil {
		return nil, toStatus(err)
	}
	return s.fsm.Store().Rollout(), nil
}

// latestRollout resolves generation 0 to the latest rollout's.
func (s *Server) latestRollout(gen uint64) (uint64, error) {
	if gen != 0 {
		return gen, nil
	}
	r := s.fsm.Store().Rollout()
	if r == nil {
		return 0, status.Error(codes.NotFound, "there is no rollout")
	}
	return r.GetGeneration(), nil
}

func (a *api) PauseRollout(ctx context.Context, req *hivev1.PauseRolloutRequest) (*hivev1.PauseRolloutResponse, error) {
	gen, err := a.s.latestRollout(req.GetGeneration())
	if err != nil {
		return nil, err
	}
	if err := checkRolloutReason(req.GetReason()); err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "paused by " + author(ctx)
	}
	r, err := a.s.rolloutControl(ctx, &hivev1.Command{Body: &hivev1.Command_RolloutPause{RolloutPause: &hivev1.RolloutPauseCommand{
		Generation: gen, Reason: reason, Author: author(ctx)}}})
	if err != nil {
		return nil, err
	}
	return &hivev1.PauseRolloutResponse{Rollout: r}, nil
}

func (a *api) ResumeRollout(ctx context.Context, req *hivev1.ResumeRolloutRequest) (*hivev1.ResumeRolloutResponse, error) {
	gen, err := a.s.latestRollout(req.GetGeneration())
	if err != nil {
		return nil, err
	}
	r, err := a.s.rolloutControl(ctx, &hivev1.Command{Body: &hivev1.Command_RolloutResume{RolloutResume: &hivev1.RolloutResumeCommand{
		Generation: gen, Author: author(ctx)}}})
	if err != nil {
		return nil, err
	}
	return &hivev1.ResumeRolloutResponse{Rollout: r}, nil
}

func (a *api) PromoteRollout(ctx context.Context, req *hivev1.PromoteRolloutRequest) (*hivev1.PromoteRolloutResponse, error) {
	gen, err := a.s.latestRollout(req.GetGeneration())
	if err != nil {
		return nil, err
	}
	r := a.s.fsm.Store().Rollout()
	if r.GetGeneration() != gen {
		return nil, status.Errorf(codes.NotFound, "there is no rollout of generation %d", gen)
	}
	if state.RolloutDone(r.GetState()) {
		return nil, status.Errorf(codes.FailedPrecondition, "the rollout of generation %d is over (%s)", gen, strings.ToLower(strings.TrimPrefix(r.GetState().String(), "ROLLOUT_STATE_")))
	}
	if r.GetOpened() >= uint32(len(r.GetWaves())) {
		return nil, status.Errorf(codes.FailedPrecondition, "every wave of the rollout of generation %d is open already", gen)
	}
	out, err := a.s.rolloutControl(ctx, &hivev1.Command{Body: &hivev1.Command_RolloutWave{RolloutWave: &hivev1.RolloutWaveCommand{
		Generation: gen, Wave: r.GetOpened(), Author: author(ctx), Promote: true}}})
	if err != nil {
		return nil, err
	}
	return &hivev1.PromoteRolloutResponse{Rollout: out}, nil
}

func (a *api) AbortRollout(ctx context.Context, req *hivev1.AbortRolloutRequest) (*hivev1.AbortRolloutResponse, error) {
	gen, err := a.s.latestRollout(req.GetGeneration())
	if err != nil {
		return nil, err
	}
	if err := checkRolloutReason(req.GetReason()); err != nil {
		return nil, err
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "aborted by " + author(ctx)
	}
	r, err := a.s.rolloutControl(ctx, &hivev1.Command{Body: &hivev1.Command_RolloutRollback{RolloutRollback: &hivev1.RolloutRollbackCommand{
		Generation: gen, Reason: reason, Author: author(ctx), Abort: true}}})
	if err != nil {
		return nil, err
	}
	return &hivev1.AbortRolloutResponse{Rollout: r}, nil
}

// MaxRolloutReason bounds the reason kept with a rollout (an operator's,
// or the gate's with its node's failing checks).
const MaxRolloutReason = 1024

func checkRolloutReason(r string) error {
	if len(r) > MaxRolloutReason || !utf8.ValidString(r) {
		return status.Errorf(codes.InvalidArgument, "reason: at most %d bytes of UTF-8 (got %d bytes)", MaxRolloutReason, len(r))
	}
	return nil
}

// truncateReason cuts r to MaxRolloutReason bytes on a rune boundary.
func truncateReason(r string) string {
	if len(r) <= MaxRolloutReason {
		return r
	}
	cut := MaxRolloutReason - len("…")
	for cut > 0 && !utf8.RuneStart(r[cut]) {
		cut--
	}
	return r[:cut] + "…"
}
