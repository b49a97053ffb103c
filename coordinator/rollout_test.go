package coordinator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// rolloutFleet is a dev server with n web nodes watching it and reporting
// as their agents would.
type rolloutFleet struct {
	t     *testing.T
	n     *node
	c     hivev1.CoordinatorServiceClient
	ctx   context.Context
	seq   uint64
	nodes []string
}

func newRolloutFleet(t *testing.T, n int) *rolloutFleet {
	srv := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	f := &rolloutFleet{t: t, n: srv, c: dialPlain(t, srv.GRPCAddr()), ctx: ctx}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("web-%d", i)
		w, err := f.c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: name, Labels: map[string]string{"tier": "web"}, Addresses: []string{fmt.Sprintf("10.0.0.%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
		f.nodes = append(f.nodes, name)
	}
	waitFor(t, 10*time.Second, "nodes registered", func() bool {
		nodes, _ := srv.fsm.Store().Nodes()
		return len(nodes) == n
	})
	return f
}

func rolloutSite(version string) *hivev1.Site {
	return &hivev1.Site{Name: "r", Roles: []*hivev1.Role{{Name: "web", Resources: []*hivev1.Resource{
		{Key: "package:nginx", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx", State: hivev1.PackageState_PACKAGE_STATE_PRESENT, Version: version}}},
	}}}, Selectors: []*hivev1.Selector{{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}}}}
}

func (f *rolloutFleet) push(s *hivev1.Site, o *hivev1.RolloutOverride) uint64 {
	f.t.Helper()
	cur := f.n.fsm.Store().CurrentNumber()
	resp, err := f.c.Push(f.ctx, &hivev1.PushRequest{Site: s, BaseGeneration: cur, Rollout: o})
	if err != nil {
		f.t.Fatalf("push: %v", err)
	}
	return resp.GetGeneration()
}

func (f *rolloutFleet) report(node string, gen uint64, phase hivev1.Phase, health hivev1.Health) {
	f.t.Helper()
	f.seq++
	r := &hivev1.Report{Node: node, Generation: gen, Phase: phase, Health: health, Seq: f.seq, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state"}
	if health == hivev1.Health_HEALTH_FAILING {
		r.Checks = []*hivev1.CheckResult{{Name: "web/http", Kind: "http", Message: "status 500, want 200", Failures: 3}}
	}
	if _, err := f.c.Report(f.ctx, &hivev1.ReportRequest{Report: r}); err != nil {
		f.t.Fatalf("report %s: %v", node, err)
	}
}

// converge reports every node converged (healthy) on its current target.
func (f *rolloutFleet) converge(nodes ...string) {
	for _, n := range nodes {
		f.report(n, f.n.fsm.Store().TargetNumber(n), hivev1.Phase_PHASE_CONVERGED, hivev1.Health_HEALTH_PASSING)
	}
}

func (f *rolloutFleet) rollout() *hivev1.RolloutStatus {
	f.t.Helper()
	r, err := f.c.GetRollout(f.ctx, &hivev1.GetRolloutRequest{})
	if err != nil {
		f.t.Fatalf("get rollout: %v", err)
	}
	return r.GetStatus()
}

func (f *rolloutFleet) waitState(what string, cond func(r *hivev1.Rollout) bool) {
	f.t.Helper()
	waitFor(f.t, 15*time.Second, what, func() bool { return cond(f.n.fsm.Store().Rollout()) })
}

func (f *rolloutFleet) targets() string {
	var parts []string
	for _, n := range f.nodes {
		parts = append(parts, fmt.Sprintf("%s=%d", n, f.n.fsm.Store().TargetNumber(n)))
	}
	return strings.Join(parts, " ")
}

// TestRolloutWaves pushes through a dev server (real raft) with a canary
// and waves of 2: each wave opens only once the previous one reported
// converged and healthy for min_healthy_time, the watch of a node outside
// the open waves keeps its generation, status shows targets as desired
// generations, and the rollout completes.
func TestRolloutWaves(t *testing.T) {
	f := newRolloutFleet(t, 5)
	g1 := f.push(rolloutSite("1"), nil)
	f.converge(f.nodes...)
	if _, err := f.c.GetRollout(f.ctx, &hivev1.GetRolloutRequest{}); code(err) != codes.NotFound {
		t.Fatalf("rollout after a plain push: %v", err)
	}

	// web-5 watches: it must not see generation 2 before its wave.
	w, err := f.c.WatchNodeState(f.ctx, &hivev1.WatchNodeStateRequest{Node: "web-5", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.5"}})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := w.Recv(); err != nil || first.GetState().GetGeneration() != g1 {
		t.Fatalf("web-5 first state: %v %v", first.GetState().GetGeneration(), err)
	}

	hold := 300 * time.Millisecond
	g2 := f.push(rolloutSite("2"), &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1)), MaxParallel: ptr(uint32(2)), MinHealthyTime: durationpb.New(hold)})
	rs := f.rollout()
	var waves []string
	for _, wv := range rs.GetRollout().GetWaves() {
		waves = append(waves, strings.Join(wv.GetNodes(), ","))
	}
	if got := strings.Join(waves, " | "); got != "web-1 | web-2,web-3 | web-4,web-5" {
		t.Fatalf("waves %s", got)
	}
	if got := f.targets(); got != "web-1=2 web-2=1 web-3=1 web-4=1 web-5=1" {
		t.Fatalf("targets after push: %s", got)
	}
	st, err := f.c.GetStatus(f.ctx, &hivev1.GetStatusRequest{Node: "web-2"})
	if err != nil || st.GetNodes()[0].GetDesiredGeneration() != g1 || st.GetNodes()[0].GetPhase() != hivev1.Phase_PHASE_CONVERGED {
		t.Fatalf("status of web-2 outside the open wave: %v %v", st.GetNodes(), err)
	}

	// The canary converges; the next wave opens after min_healthy_time.
	time.Sleep(hold) // longer than the gate: nothing opens without reports
	if f.n.fsm.Store().Rollout().GetOpened() != 1 {
		t.Fatal("wave 2 opened before the canary reported")
	}
	healthyAt := time.Now()
	f.converge("web-1")
	f.waitState("wave 2 open", func(r *hivev1.Rollout) bool { return r.GetOpened() == 2 })
	if took := time.Since(healthyAt); took < hold {
		t.Fatalf("wave 2 opened %v after the canary was healthy; min_healthy_time is %v", took, hold)
	}
	f.converge("web-2", "web-3")
	f.waitState("wave 3 open", func(r *hivev1.Rollout) bool { return r.GetOpened() == 3 })
	// web-5's watch gets generation 2 only now.
	for {
		m, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetState().GetGeneration() == g2 {
			break
		}
	}
	f.converge("web-4", "web-5")
	f.waitState("completed", func(r *hivev1.Rollout) bool {
		return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED
	})
	if got := f.targets(); got != "web-1=2 web-2=2 web-3=2 web-4=2 web-5=2" {
		t.Fatalf("targets after completion: %s", got)
	}
}

// TestRolloutFailure: a canary whose health fails pauses the rollout
// (on_failure pause) or rolls it back (rollback) within seconds, and the
// other nodes never get the generation.
func TestRolloutFailure(t *testing.T) {
	f := newRolloutFleet(t, 3)
	f.push(rolloutSite("1"), nil)
	f.converge(f.nodes...)

	g2 := f.push(rolloutSite("2"), &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1))})
	failedAt := time.Now()
	f.report("web-1", g2, hivev1.Phase_PHASE_CONVERGED, hivev1.Health_HEALTH_FAILING)
	f.waitState("paused", func(r *hivev1.Rollout) bool { return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_PAUSED })
	t.Logf("paused %v after the failing report", time.Since(failedAt))
	if r := f.rollout().GetRollout(); !strings.Contains(r.GetReason(), "web-1: health failing") || !strings.Contains(r.GetReason(), "status 500") {
		t.Fatalf("reason %q", r.GetReason())
	}
	if got := f.targets(); got != "web-1=2 web-2=1 web-3=1" {
		t.Fatalf("targets when paused: %s", got)
	}
	// Promote opens the next wave anyway (and resumes).
	if _, err := f.c.PromoteRollout(f.ctx, &hivev1.PromoteRolloutRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := f.targets(); got != "web-1=2 web-2=2 web-3=2" {
		t.Fatalf("targets after promote: %s", got)
	}
	// The canary still fails: paused again; abort puts everyone back.
	f.waitState("paused again", func(r *hivev1.Rollout) bool { return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_PAUSED })
	if _, err := f.c.ResumeRollout(f.ctx, &hivev1.ResumeRolloutRequest{Generation: 99}); code(err) != codes.NotFound {
		t.Fatalf("resume of another generation's rollout: %v", err)
	}
	ab, err := f.c.AbortRollout(f.ctx, &hivev1.AbortRolloutRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Generation 3 holds generation 1's content; everyone targets it.
	if ab.GetRollout().GetRevertGeneration() != 3 || f.n.fsm.Store().Current().GetRollbackOf() != 1 {
		t.Fatalf("abort: %v", ab.GetRollout())
	}
	if got := f.targets(); got != "web-1=3 web-2=3 web-3=3" {
		t.Fatalf("targets after abort: %s", got)
	}
	// web-1 reported generation 2: pending until it reports 3.
	st, err := f.c.GetStatus(f.ctx, &hivev1.GetStatusRequest{Node: "web-1"})
	if err != nil || st.GetNodes()[0].GetDesiredGeneration() != 3 || st.GetNodes()[0].GetPhase() != hivev1.Phase_PHASE_PENDING {
		t.Fatalf("status of the aborted canary: %v %v", st.GetNodes(), err)
	}
	f.converge(f.nodes...)
	if _, err := f.c.PromoteRollout(f.ctx, &hivev1.PromoteRolloutRequest{}); code(err) != codes.FailedPrecondition {
		t.Fatalf("promote an aborted rollout: %v", err)
	}

	// on_failure: rollback, from the site file's policy.
	s := rolloutSite("3")
	s.Rollout = &hivev1.RolloutPolicy{CanaryNodes: []string{"web-2"}, OnFailure: hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK}
	g3 := f.push(s, nil)
	if got := f.targets(); got != fmt.Sprintf("web-1=3 web-2=%d web-3=3", g3) {
		t.Fatalf("targets of the rollback rollout: %s", got)
	}
	failedAt = time.Now()
	f.report("web-2", g3, hivev1.Phase_PHASE_FAILED, hivev1.Health_HEALTH_UNSPECIFIED)
	f.waitState("rolled back", func(r *hivev1.Rollout) bool { return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_ROLLED_BACK })
	if took := time.Since(failedAt); took > 3*time.Second {
		t.Fatalf("rolled back %v after the failure", took)
	}
	if got := f.targets(); got != fmt.Sprintf("web-1=%d web-2=%d web-3=%d", g3+1, g3+1, g3+1) {
		t.Fatalf("targets after rollback: %s", got)
	}
	if g := f.n.fsm.Store().Current(); g.GetRollbackOf() != 3 || !strings.Contains(g.GetMessage(), "web-2: failed to converge") {
		t.Fatalf("revert generation: %v", g)
	}

	// Bad input changes nothing.
	cur := f.n.fsm.Store().CurrentNumber()
	for _, o := range []*hivev1.RolloutOverride{
		{CanaryNodes: []string{"nope"}},
		{MaxParallelPercent: ptr(uint32(101))},
	} {
		if _, err := f.c.Push(f.ctx, &hivev1.PushRequest{Site: rolloutSite("4"), BaseGeneration: cur, Rollout: o}); code(err) != codes.InvalidArgument {
			t.Fatalf("push with %v: %v", o, err)
		}
	}
	if f.n.fsm.Store().CurrentNumber() != cur {
		t.Fatal("a refused push appended a generation")
	}
}

func ptr[T any](v T) *T { return &v }

// TestRolloutGateDelay measures what a wave gate adds beyond
// min_healthy_time: from the moment the last node of a wave reports
// converged (the Report call) to the raft timestamp of the next wave's
// opening, minus min_healthy_time, over 20 one-node waves (dev server,
// real raft, loopback gRPC). docs/performance.md quotes it.
func TestRolloutGateDelay(t *testing.T) {
	const waves = 21
	f := newRolloutFleet(t, waves)
	f.push(rolloutSite("1"), nil)
	f.converge(f.nodes...)
	hold := 100 * time.Millisecond
	g2 := f.push(rolloutSite("2"), &hivev1.RolloutOverride{MaxParallel: ptr(uint32(1)), MinHealthyTime: durationpb.New(hold)})
	var delays []time.Duration
	for w := 0; w < waves; w++ {
		r := f.n.fsm.Store().Rollout()
		node := r.GetWaves()[w].GetNodes()[0]
		reported := time.Now()
		f.report(node, g2, hivev1.Phase_PHASE_CONVERGED, hivev1.Health_HEALTH_PASSING)
		if w == waves-1 {
			break
		}
		f.waitState(fmt.Sprintf("wave %d open", w+2), func(r *hivev1.Rollout) bool { return r.GetOpened() > uint32(w+1) })
		opened := f.n.fsm.Store().Rollout().GetWaves()[w+1].GetOpened().AsTime()
		delays = append(delays, opened.Sub(reported)-hold)
	}
	f.waitState("completed", func(r *hivev1.Rollout) bool { return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED })
	sortDurations(delays)
	t.Logf("gate delay beyond min_healthy_time over %d waves: min %v, median %v, p90 %v, max %v",
		len(delays), delays[0], delays[len(delays)/2], delays[len(delays)*9/10], delays[len(delays)-1])
	if delays[0] < 0 {
		t.Fatalf("a wave opened before min_healthy_time: %v", delays)
	}
}

func sortDurations(d []time.Duration) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j] < d[j-1]; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

func TestRolloutReasonBounds(t *testing.T) {
	if err := checkRolloutReason(strings.Repeat("x", MaxRolloutReason+1)); code(err) != codes.InvalidArgument {
		t.Fatalf("long reason: %v", err)
	}
	if err := checkRolloutReason("\xff"); code(err) != codes.InvalidArgument {
		t.Fatalf("invalid UTF-8: %v", err)
	}
	r := truncateReason(strings.Repeat("é", MaxRolloutReason))
	if len(r) > MaxRolloutReason || !strings.HasSuffix(r, "…") || checkRolloutReason(r) != nil {
		t.Fatalf("truncated reason: %d bytes", len(r))
	}
}

// TestRolloutPlanFromRenderedState: the planner learns DRBD peers and
// swarm managers from the nodes' rendered states: with room for every node
// in one wave, the two peers of each DRBD resource and the three managers
// still go to different waves.
func TestRolloutPlanFromRenderedState(t *testing.T) {
	srv := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialPlain(t, srv.GRPCAddr())
	var names []string
	for _, n := range []string{"db-1", "db-2", "mgr-1", "mgr-2", "mgr-3", "web-1"} {
		w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: n, Labels: map[string]string{"tier": strings.Split(n, "-")[0]}, Addresses: []string{fmt.Sprintf("10.0.1.%d", len(names)+1)}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	waitFor(t, 10*time.Second, "nodes registered", func() bool {
		nodes, _ := srv.fsm.Store().Nodes()
		return len(nodes) == len(names)
	})
	s := &hivev1.Site{Name: "q", Roles: []*hivev1.Role{
		{Name: "db", Resources: []*hivev1.Resource{
			{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0", Minor: 0, Disk: "/dev/vdb", Port: 7789, PeerRole: "db"}}},
		}},
		{Name: "mgr", Resources: []*hivev1.Resource{
			{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Init: true}}},
		}},
		{Name: "web", Resources: rolloutSite("1").GetRoles()[0].GetResources()},
	}, Selectors: []*hivev1.Selector{
		{MatchLabels: map[string]string{"tier": "db"}, Roles: []string{"db"}},
		{MatchLabels: map[string]string{"tier": "mgr"}, Roles: []string{"mgr"}},
		{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}},
	}}
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: s, Rollout: &hivev1.RolloutOverride{MaxParallel: ptr(uint32(10))}}); err != nil {
		t.Fatal(err)
	}
	var waves []string
	for _, w := range srv.fsm.Store().Rollout().GetWaves() {
		waves = append(waves, strings.Join(w.GetNodes(), ","))
	}
	if got := strings.Join(waves, " | "); got != "db-1,mgr-1,web-1 | db-2,mgr-2 | mgr-3" {
		t.Fatalf("waves %s", got)
	}
}

// TestRolloutExpectsHealth: a node whose roles have checks counts as
// healthy only with health passing; one without, when converged.
func TestRolloutExpectsHealth(t *testing.T) {
	st := state.New()
	s := rolloutSite("1")
	s.Roles = append(s.Roles, &hivev1.Role{Name: "api", Checks: []*hivev1.HealthCheck{
		{Name: "home", Kind: &hivev1.HealthCheck_Http{Http: &hivev1.CheckHTTP{Url: "http://127.0.0.1:8080/"}}},
	}})
	s.Selectors = append(s.Selectors, &hivev1.Selector{Names: []string{"api-*"}, Roles: []string{"api"}})
	st.Push(time.Now(), &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "x", Site: s}})
	for _, n := range []string{"api-1", "web-1"} {
		st.UpsertNode(time.Now(), &hivev1.NodeUpsertCommand{Name: n, Identity: &hivev1.NodeIdentity{Source: state.SourceDev, Labels: map[string]string{"tier": "web"}}})
	}
	if !expectsHealth(st, 1, "api-1") || expectsHealth(st, 1, "web-1") || expectsHealth(st, 2, "api-1") {
		t.Fatal("expectsHealth")
	}
	conv := &hivev1.Report{Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED}
	if ok, _ := nodeHealth(conv, 1, true); ok {
		t.Fatal("converged with checks not run yet counted healthy")
	}
	if ok, _ := nodeHealth(conv, 1, false); !ok {
		t.Fatal("converged without checks not healthy")
	}
	conv.Health = hivev1.Health_HEALTH_PASSING
	if ok, _ := nodeHealth(conv, 1, true); !ok {
		t.Fatal("passing not healthy")
	}
}

// TestRolloutEvents: a rollout publishes its progress as events, from the
// push through each wave to its end, and each way it can end (completed,
// paused and resumed, promoted, aborted, rolled back), with the node that
// failed its checks.
func TestRolloutEvents(t *testing.T) {
	f := newRolloutFleet(t, 3)
	f.push(rolloutSite("1"), nil)
	f.converge(f.nodes...)
	since := f.n.ops.events.Seq()
	kinds := func() []string {
		var out []string
		for _, e := range f.n.ops.events.History(since, events.Filter{Kinds: []string{"push", "rollout."}}) {
			k := e.GetKind()
			if w := e.GetFields()["wave"]; w != "" {
				k += ":" + w
			}
			if e.GetNode() != "" {
				k += ":" + e.GetNode()
			}
			out = append(out, k)
		}
		return out
	}
	expect := func(what string, want ...string) {
		t.Helper()
		var got []string
		ok := false
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if got = kinds(); strings.Join(got, " ") == strings.Join(want, " ") {
				ok = true
				break
			}
		}
		if !ok {
			t.Fatalf("%s: events\n%s\nwant\n%s", what, strings.Join(got, " "), strings.Join(want, " "))
		}
		since = f.n.ops.events.Seq()
	}

	g2 := f.push(rolloutSite("2"), &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1)), MaxParallel: ptr(uint32(2))})
	expect("push", "push", "rollout.started", "rollout.wave_opened:1")
	started := f.n.ops.events.History(0, events.Filter{Kinds: []string{"rollout.started"}})
	if e := started[len(started)-1]; e.GetFields()["canary"] != "web-1" || e.GetFields()["waves"] != "2" || e.GetIndex() == 0 {
		t.Fatalf("rollout.started: %v", e)
	}
	f.converge("web-1")
	expect("canary healthy", "rollout.wave_healthy:1", "rollout.wave_opened:2")
	f.converge("web-2", "web-3")
	expect("completed", "rollout.wave_healthy:2", "rollout.completed")
	if g2 == 0 {
		t.Fatal("no generation")
	}

	g3 := f.push(rolloutSite("3"), &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1))})
	f.report("web-1", g3, hivev1.Phase_PHASE_CONVERGED, hivev1.Health_HEALTH_FAILING)
	expect("canary fails", "push", "rollout.started", "rollout.wave_opened:1", "rollout.node_failed:1:web-1", "rollout.paused")
	if _, err := f.c.PromoteRollout(f.ctx, &hivev1.PromoteRolloutRequest{}); err != nil {
		t.Fatal(err)
	}
	// The canary still fails: the gate pauses again (no second
	// node_failed: it has not recovered in between).
	expect("promoted", "rollout.promoted:2", "rollout.wave_opened:2", "rollout.paused")
	if _, err := f.c.AbortRollout(f.ctx, &hivev1.AbortRolloutRequest{Reason: "bad build"}); err != nil {
		t.Fatal(err)
	}
	expect("aborted", "rollout.aborted")
	ab := f.n.ops.events.History(0, events.Filter{Kinds: []string{"rollout.aborted"}})
	if e := ab[0]; e.GetFields()["revert_generation"] != fmt.Sprint(g3+1) || !strings.Contains(e.GetSummary(), "bad build") || !strings.Contains(e.GetSummary(), "by dev") {
		t.Fatalf("rollout.aborted: %v", e)
	}
	f.converge(f.nodes...)

	s := rolloutSite("4")
	s.Rollout = &hivev1.RolloutPolicy{CanaryNodes: []string{"web-2"}, OnFailure: hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK}
	g5 := f.push(s, nil)
	f.report("web-2", g5, hivev1.Phase_PHASE_FAILED, hivev1.Health_HEALTH_UNSPECIFIED)
	expect("rolled back", "push", "rollout.started", "rollout.wave_opened:1", "rollout.node_failed:1:web-2", "rollout.rolled_back")

	// Pause and resume by an operator.
	f.converge(f.nodes...)
	f.push(rolloutSite("5"), &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1))})
	expect("push 5", "push", "rollout.started", "rollout.wave_opened:1")
	if _, err := f.c.PauseRollout(f.ctx, &hivev1.PauseRolloutRequest{Reason: "lunch"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.ResumeRollout(f.ctx, &hivev1.ResumeRolloutRequest{}); err != nil {
		t.Fatal(err)
	}
	expect("pause, resume", "rollout.paused", "rollout.resumed")
}
