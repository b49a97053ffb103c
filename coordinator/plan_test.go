package coordinator

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// planAgent is a fake agent over a real watch stream: it answers every
// plan dry run with one planned result per resource of the planned state
// (answer false: it never answers).
type planAgent struct {
	name string
	c    hivev1.CoordinatorServiceClient
	got  chan *hivev1.PlanDryRun
}

func startPlanAgent(ctx context.Context, t testing.TB, tc *tlsCluster, addr, name string, answer bool) *planAgent {
	t.Helper()
	tc.issueAgent(name, map[string]string{"tier": "lb"})
	a := &planAgent{name: name, c: tc.dial(t, addr, pki.KindAgent, name), got: make(chan *hivev1.PlanDryRun, 8)}
	w, err := a.c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil { // the current state: the stream is up
		t.Fatalf("%s: first watch message: %v", name, err)
	}
	go func() {
		for {
			m, err := w.Recv()
			if err != nil {
				return
			}
			pl := m.GetPlan()
			if pl == nil {
				continue
			}
			a.got <- pl
			if !answer {
				continue
			}
			now := time.Now()
			r := &hivev1.Report{Node: name, Generation: pl.GetState().GetGeneration(), StateHash: pl.GetState().GetHash(),
				Phase: hivev1.Phase_PHASE_CONVERGED, DryRun: true, Trigger: "plan", Started: timestamppb.New(now), Finished: timestamppb.New(now)}
			for _, res := range pl.GetState().GetResources() {
				r.Results = append(r.Results, &hivev1.ResourceResult{Key: res.GetKey(), Outcome: hivev1.Outcome_OUTCOME_PLANNED, Message: "would install"})
			}
			if _, err := a.c.ReportPlan(ctx, &hivev1.ReportPlanRequest{PlanId: pl.GetId(), Report: r}); err != nil && ctx.Err() == nil {
				t.Errorf("%s: ReportPlan: %v", name, err)
			}
		}
	}()
	return a
}

// TestPlanCluster: three coordinators with real raft; agents watch the
// leader and a follower, one node is registered but gone, one watches but
// never answers. A plan through the other follower reaches the agents on
// every coordinator, returns their dry runs, "offline" with the last
// reported generation, and "no answer", and commits nothing; push --plan
// through yet another coordinator commits exactly the planned content, and
// a plan whose base moved is refused, saying who pushed what.
func TestPlanCluster(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, f[1].GRPCAddr(), pki.KindAdmin, "alice")
	site1 := testSite("1.0")
	site1.Roles[1].Resources = append(site1.Roles[1].Resources, &hivev1.Resource{Key: "package:socat", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "socat", State: hivev1.PackageState_PACKAGE_STATE_PRESENT}}})
	if p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("1.0"), Message: "one"}); p.GetGeneration() != 1 {
		t.Fatalf("push = %v", p)
	}

	// lb-3 registers, reports generation 1, and goes away.
	wctx, wcancel := context.WithCancel(ctx)
	startPlanAgent(wctx, t, tc, l.GRPCAddr(), "lb-3", true)
	gone := tc.dial(t, l.GRPCAddr(), pki.KindAgent, "lb-3")
	if _, err := gone.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "lb-3", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	wcancel()
	lb1 := startPlanAgent(ctx, t, tc, f[0].GRPCAddr(), "lb-1", true)
	lb2 := startPlanAgent(ctx, t, tc, l.GRPCAddr(), "lb-2", true)
	startPlanAgent(ctx, t, tc, f[0].GRPCAddr(), "lb-4", false)
	waitFor(t, 10*time.Second, "lb-3 reported and the stream gone", func() bool {
		for _, n := range nodes {
			if n.fsm.Store().Report("lb-3").GetGeneration() != 1 || len(n.plans.watchingOf(map[string]bool{"lb-3": true})) > 0 {
				return false
			}
		}
		return true
	})
	indexBefore := l.fsm.Store().CurrentNumber()

	start := time.Now()
	resp, err := admin.Plan(ctx, &hivev1.PlanRequest{Site: site1, Timeout: durationpb.New(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("plan %s took %v: %v", resp.GetId(), took, resp)
	if resp.GetBaseGeneration() != 1 || resp.GetServer() != f[1].cfg.Name || resp.GetUnchanged() {
		t.Fatalf("plan = %v", resp)
	}
	want := map[string]hivev1.PlanNodeState{
		"lb-1": hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED, "lb-2": hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED,
		"lb-3": hivev1.PlanNodeState_PLAN_NODE_STATE_OFFLINE, "lb-4": hivev1.PlanNodeState_PLAN_NODE_STATE_NO_ANSWER,
	}
	if len(resp.GetNodes()) != len(want) {
		t.Fatalf("plan nodes = %v", resp.GetNodes())
	}
	for _, n := range resp.GetNodes() {
		if n.GetState() != want[n.GetName()] {
			t.Errorf("%s: state %v, want %v", n.GetName(), n.GetState(), want[n.GetName()])
		}
		switch n.GetName() {
		case "lb-1", "lb-2":
			keys := []string{}
			for _, r := range n.GetResults() {
				keys = append(keys, r.GetKey())
			}
			if strings.Join(keys, ",") != "package:haproxy,package:socat" {
				t.Errorf("%s: results %v", n.GetName(), n.GetResults())
			}
		case "lb-3":
			if n.GetLastGeneration() != 1 {
				t.Errorf("lb-3 last generation %d", n.GetLastGeneration())
			}
		case "lb-4":
			if n.GetCoordinator() != f[0].cfg.Name {
				t.Errorf("lb-4 watches %q", n.GetCoordinator())
			}
		}
	}
	if wantC := map[string]string{"lb-1": f[0].cfg.Name, "lb-2": l.cfg.Name}; resp.GetNodes()[0].GetCoordinator() != wantC["lb-1"] || resp.GetNodes()[1].GetCoordinator() != wantC["lb-2"] {
		t.Errorf("answers came through %q and %q, want %v", resp.GetNodes()[0].GetCoordinator(), resp.GetNodes()[1].GetCoordinator(), wantC)
	}
	// The dry run carried the planned generation's state, and nothing was
	// committed.
	for _, a := range []*planAgent{lb1, lb2} {
		pl := <-a.got
		if pl.GetState().GetGeneration() != 2 || pl.GetState().GetNode() != a.name || pl.GetId() != resp.GetId() {
			t.Errorf("%s got %v", a.name, pl)
		}
	}
	for _, n := range nodes {
		if n.fsm.Store().CurrentNumber() != indexBefore {
			t.Fatalf("%s: the plan made a generation", n.cfg.Name)
		}
	}

	// An answer is checked like a report: the certificate names the node,
	// the plan must be known and the node in it.
	lb1c := tc.dial(t, f[0].GRPCAddr(), pki.KindAgent, "lb-1")
	_, err = lb1c.ReportPlan(ctx, &hivev1.ReportPlanRequest{PlanId: resp.GetId(), Report: &hivev1.Report{Node: "lb-2", Generation: 2}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("answer as another node: %v", err)
	}
	_, err = lb1c.ReportPlan(ctx, &hivev1.ReportPlanRequest{PlanId: "pnothere", Report: &hivev1.Report{Node: "lb-1", Generation: 2}})
	if status.Code(err) != codes.NotFound {
		t.Errorf("answer to an unknown plan: %v", err)
	}
	_, err = lb1c.ReportPlan(ctx, &hivev1.ReportPlanRequest{PlanId: resp.GetId(), Report: &hivev1.Report{Node: "lb-1", Generation: 7}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("answer for another generation: %v", err)
	}
	_, err = lb1c.ReportPlan(ctx, &hivev1.ReportPlanRequest{PlanId: resp.GetId(), Report: &hivev1.Report{Node: "lb-1", Generation: 2, StateHash: "nothex"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "report.state_hash") {
		t.Errorf("answer out of bounds: %v", err)
	}

	// A second plan, then push --plan of the first through the leader.
	resp2, err := admin.Plan(ctx, &hivev1.PlanRequest{Site: testSite("2.0"), Timeout: durationpb.New(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	viaLeader := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "bob")
	if _, err := viaLeader.Push(ctx, &hivev1.PushRequest{PlanId: resp.GetId(), Site: site1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("push --plan with a site: %v", err)
	}
	p, err := viaLeader.Push(ctx, &hivev1.PushRequest{PlanId: resp.GetId(), Message: "planned"})
	if err != nil || p.GetGeneration() != 2 || p.GetSha256() != resp.GetSha256() {
		t.Fatalf("push --plan = %v, %v", p, err)
	}
	_, err = admin.Push(ctx, &hivev1.PushRequest{PlanId: resp2.GetId()})
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "was made on generation 1, but generation 2 is current") ||
		!strings.Contains(err.Error(), `generation 2 pushed by bob at `) || !strings.Contains(err.Error(), `"planned"`) {
		t.Fatalf("push of a stale plan: %v", err)
	}
	if _, err := admin.Push(ctx, &hivev1.PushRequest{PlanId: "pnothere"}); status.Code(err) != codes.NotFound {
		t.Fatalf("push of an unknown plan: %v", err)
	}
	// A plan of content based on an older generation (a pulled file).
	_, err = admin.Plan(ctx, &hivev1.PlanRequest{Site: testSite("3.0"), BaseGeneration: 1, Timeout: durationpb.New(time.Second)})
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "plan is based on generation 1, but generation 2 is current: generation 2 pushed by bob at ") {
		t.Fatalf("plan on a stale base: %v", err)
	}
}

// TestPlanBookBounds: the book keeps the newest maxPlans plans, forgets
// expired ones, and gives pending dry runs only before their deadline.
func TestPlanBookBounds(t *testing.T) {
	var b planBook
	now := time.Now()
	for i := 0; i < maxPlans+4; i++ {
		b.add(&plan{id: string(rune('a' + i)), nodes: map[string]bool{"n": true}, deadline: now.Add(time.Second), expires: now.Add(planTTL)}, now)
	}
	if len(b.plans) != maxPlans || b.get("a", now) != nil || b.get(string(rune('a'+maxPlans+3)), now) == nil {
		t.Fatalf("kept %d plans", len(b.plans))
	}
	if b.get("t", now.Add(planTTL+time.Second)) != nil {
		t.Fatal("expired plan still given")
	}
	if len(b.pending("n", now)) != maxPlans || len(b.pending("n", now.Add(2*time.Second))) != 0 || len(b.pending("m", now)) != 0 {
		t.Fatal("pending dry runs")
	}
	end := b.watch("n")
	if got := b.watchingOf(map[string]bool{"n": true, "m": true}); len(got) != 1 {
		t.Fatalf("watching %v", got)
	}
	end()
	if got := b.watchingOf(map[string]bool{"n": true}); len(got) != 0 {
		t.Fatalf("watching after end %v", got)
	}
}

// BenchmarkPlanRoundTrip: a plan over HIVE_BENCH_PLAN_AGENTS (default 100)
// connected agents spread over a 3-server TLS cluster (in-process fake
// agents over real watch streams, answering at once: the figure is the
// coordinators' part of a plan — render, delivery to the followers, the
// dry-run requests on the streams, the answers through ReportPlan and
// PlanCollect). One op is one Plan call through a follower.
//
//	go test -run '^$' -bench PlanRoundTrip -benchtime 20x ./coordinator/
func BenchmarkPlanRoundTrip(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("HIVE_BENCH_PLAN_AGENTS")); err == nil && v > 0 {
		n = v
	}
	nodes, tc := newCluster(b, 3, clusterOpts{})
	l := leader(b, nodes)
	f := followers(nodes, l)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := tc.dial(b, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	if _, err := admin.Push(ctx, &hivev1.PushRequest{Site: testSite("1.0")}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i++ {
		a := startPlanAgent(ctx, b, tc, nodes[i%len(nodes)].GRPCAddr(), fmt.Sprintf("lb-%d", i), true)
		go func() {
			for range a.got {
			}
		}()
	}
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp, err := admin.Plan(ctx, &hivev1.PlanRequest{Site: testSite(fmt.Sprint(i + 2)), Timeout: durationpb.New(30 * time.Second)})
		if err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
		for _, pn := range resp.GetNodes() {
			if pn.GetState() != hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED {
				b.Fatalf("%s: %v", pn.GetName(), pn.GetState())
			}
		}
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(n), "agents")
}
