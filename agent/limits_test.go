package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/limits"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// hugeEngine reports n results with long messages and diffs, every
// 1000th failed: what a very large site with verbose providers produces.
type hugeEngine struct{ n int }

func (e hugeEngine) Run(context.Context, *hivev1.NodeState, converge.RunOptions) (*converge.Report, error) {
	rep := &converge.Report{}
	for i := range e.n {
		x := &hivev1.ResourceResult{Key: fmt.Sprintf("file:/srv/app/%06d.conf", i), Outcome: hivev1.Outcome_OUTCOME_CHANGED,
			Message: strings.Repeat("m", 6<<10), Diff: strings.Repeat("+line\n", 4<<10)}
		if i%1000 == 999 {
			x.Outcome = hivev1.Outcome_OUTCOME_FAILED
		}
		rep.Results = append(rep.Results, x)
	}
	return rep, nil
}

// TestHugeSiteReportAccepted: an honest agent whose run produced far more
// than a coordinator accepts (12,000 results, 6 KiB messages, 24 KiB
// diffs: ~360 MB) fits its report to the limits itself, and the real
// coordinator stores it: failures kept, the rest summarised. Before the
// agent fitted its reports, gRPC refused the message and the agent
// retried it forever.
func TestHugeSiteReportAccepted(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	co := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	addr := co.srv.GRPCAddr()
	g1 := push(t, addr, "hello")

	cfg := testConfig(t, t.TempDir())
	cfg.Name = "web-1"
	cfg.Coordinators = []string{addr}
	cfg.Labels = map[string]string{"tier": "web"}
	_, _ = startAgent(t, cfg, hugeEngine{n: 12000}, nil)

	var st *hivev1.NodeStatus
	waitFor(t, "the huge report stored", 60*time.Second, func() bool {
		st = nodeStatus(t, addr, "web-1")
		return st.GetAppliedGeneration() == g1 && st.GetPhase() == hivev1.Phase_PHASE_FAILED
	})
	res := st.GetResults()
	failed := 0
	for _, x := range res {
		if x.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED && x.GetKey() != limits.SummaryKey {
			failed++
		}
	}
	last := res[len(res)-1]
	if failed != 12 || last.GetKey() != limits.SummaryKey {
		t.Fatalf("%d failed results kept (want 12), last result %v", failed, last)
	}
	if !strings.Contains(res[0].GetMessage(), "…[truncated: ") {
		t.Errorf("first message not marked as truncated: …%s", res[0].GetMessage()[len(res[0].GetMessage())-60:])
	}
	t.Logf("stored %d results (%d bytes); %s", len(res), proto.Size(st), last.GetMessage())
}

// TestRateLimitedReportsKept: an agent flushing more queued reports than
// its coordinator's per-node burst is told ResourceExhausted; it keeps the
// rest on disk, backs off and goes on delivering them; none is dropped.
func TestRateLimitedReportsKept(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	p := pkitest.New(t)
	cf := p.Issue(pki.KindCoordinator, "c1")
	ccfg := coordinator.DefaultConfig()
	ccfg.Name, ccfg.DataDir, ccfg.BootstrapExpect = "c1", t.TempDir(), 1
	ccfg.GRPCAddr, ccfg.RaftAddr, ccfg.HTTPAddr, ccfg.GossipAddr, ccfg.GossipProfile = "127.0.0.1:0", "127.0.0.1:0", "", "127.0.0.1:0", "local"
	ccfg.TLSCA, ccfg.TLSCert, ccfg.TLSKey = cf.CA, cf.Cert, cf.Key
	ccfg.Logger = testLogger(t).With("side", "coordinator")
	srv, err := coordinator.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-srv.Done() })
	<-srv.Ready()

	// The agent was offline for a while: more queued reports than the
	// burst.
	dir := t.TempDir()
	cache, err := agent.OpenCache(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	queued := coordinator.ReportBurst + 30
	for i := 1; i <= queued; i++ {
		r := &hivev1.Report{Node: "n1", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: uint64(i), Finished: timestamppb.Now()}
		if err := cache.Enqueue(r, 1000); err != nil {
			t.Fatal(err)
		}
	}
	af := p.Issue(pki.KindAgent, "n1")
	cfg := testConfig(t, dir)
	cfg.Dev = false
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = af.CA, af.Cert, af.Key
	cfg.Coordinators = []string{srv.GRPCAddr()}
	cfg.MaxQueuedReports = 1000
	a, _ := startAgent(t, cfg, &fakeEngine{}, testState(1, "/etc/a"))

	// The burst goes through at once, then about one report a second.
	waitFor(t, "the burst delivered", 30*time.Second, func() bool { return a.Stats().ReportsSent >= coordinator.ReportBurst })
	time.Sleep(time.Second)
	left, err := cache.Queued()
	if err != nil {
		t.Fatal(err)
	}
	sent := a.Stats().ReportsSent
	if len(left) == 0 {
		t.Fatalf("all %d reports delivered at once: no rate limit", sent)
	}
	// queued + the startup run's report = sent + still queued.
	if sent+len(left) != queued+1 {
		t.Fatalf("sent %d + queued %d != %d reports made: some were dropped", sent, len(left), queued+1)
	}
	waitFor(t, "more delivered after backing off", 30*time.Second, func() bool { return a.Stats().ReportsSent > sent })
	t.Logf("sent %d at once, %d left queued, then %d", sent, len(left), a.Stats().ReportsSent)
}
