package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/fsm"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// statusCall is one blocking GetStatus run in the background.
type statusCall struct {
	done chan struct{}
	resp *hivev1.GetStatusResponse
	err  error
	took time.Duration
}

func blockingStatus(ctx context.Context, c hivev1.CoordinatorServiceClient, min uint64, wait time.Duration) *statusCall {
	sc := &statusCall{done: make(chan struct{})}
	go func() {
		defer close(sc.done)
		start := time.Now()
		sc.resp, sc.err = c.GetStatus(ctx, &hivev1.GetStatusRequest{MinIndex: min, MaxWait: durationpb.New(wait)})
		sc.took = time.Since(start)
	}()
	return sc
}

func (sc *statusCall) wait(t *testing.T, what string) *hivev1.GetStatusResponse {
	t.Helper()
	select {
	case <-sc.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: the blocking status call did not return", what)
	}
	if sc.err != nil {
		t.Fatalf("%s: %v", what, sc.err)
	}
	return sc.resp
}

// returned reports whether the call has returned yet.
func (sc *statusCall) returned() bool {
	select {
	case <-sc.done:
		return true
	default:
		return false
	}
}

func nodeOf(resp *hivev1.GetStatusResponse, name string) *hivev1.NodeStatus {
	for _, n := range resp.GetNodes() {
		if n.GetName() == name {
			return n
		}
	}
	return nil
}

// TestBlockingStatus runs blocking GetStatus and ListGenerations on a real
// 3-server TLS cluster (raft on disk): a stale index answers at once; an
// up-to-date one waits for the next change (an agent's "applying" report,
// kept in memory by the server it reached and never written through raft;
// a final report committed through raft, seen on another server; a push) or
// until max_wait; history waits for a generation, not for reports; a
// version ahead of a server is caught up to first; and a waiter on a
// follower is woken by a push committed under the next leader after the
// leader is killed.
func TestBlockingStatus(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	fs := followers(nodes, l)
	f := fs[0]
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()

	// web-1 watches and reports through the follower f.
	tc.issueAgent("web-1", map[string]string{"tier": "web"}, "10.1.0.1")
	agent := tc.dial(t, f.GRPCAddr(), pki.KindAgent, "web-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.1.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	adminF := tc.dial(t, f.GRPCAddr(), pki.KindAdmin, "alice")
	adminL := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	retryUnavailable(ctx, t, func() error {
		_, err := adminF.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v")})
		return err
	})
	g1 := pushRetry(ctx, t, adminF, &hivev1.PushRequest{Site: testSite("1.0")}).GetGeneration()
	for _, n := range nodes {
		waitFor(t, 20*time.Second, "generation 1 and web-1 on "+n.cfg.Name, func() bool {
			st := n.fsm.Store()
			return st.CurrentNumber() == g1 && st.Node("web-1") != nil
		})
	}
	var seq uint64
	report := func(phase hivev1.Phase, gen uint64) {
		t.Helper()
		seq++
		r := &hivev1.Report{Node: "web-1", Generation: gen, Phase: phase, Seq: seq, Started: timestamppb.Now(), Trigger: "state"}
		if phase != hivev1.Phase_PHASE_APPLYING {
			r.Finished = timestamppb.Now()
		}
		if _, err := agent.Report(ctx, &hivev1.ReportRequest{Report: r}); err != nil {
			t.Fatalf("report %v: %v", phase, err)
		}
	}

	s0, err := adminF.GetStatus(ctx, &hivev1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if s0.GetStatusIndex() == 0 || s0.GetStatusIndex()>>localBits > s0.GetRaftIndex() {
		t.Fatalf("status_index %d, raft index %d: want a version whose raft part is at most the raft index", s0.GetStatusIndex(), s0.GetRaftIndex())
	}

	t.Run("stale index answers at once", func(t *testing.T) {
		for _, min := range []uint64{0, s0.GetStatusIndex() - 1} {
			sc := blockingStatus(ctx, adminF, min, 60*time.Second)
			resp := sc.wait(t, "stale index")
			if sc.took > 20*time.Second || resp.GetStatusIndex() <= min {
				t.Fatalf("min_index %d: answered after %v with status_index %d; want at once with a newer one", min, sc.took, resp.GetStatusIndex())
			}
		}
	})

	t.Run("timeout", func(t *testing.T) {
		cur := s0.GetStatusIndex()
		for try := 0; ; try++ {
			sc := blockingStatus(ctx, adminF, cur, 300*time.Millisecond)
			resp := sc.wait(t, "timeout")
			if resp.GetStatusIndex() > cur && try < 5 {
				cur = resp.GetStatusIndex() // something changed meanwhile: again
				continue
			}
			if resp.GetStatusIndex() != cur || sc.took < 300*time.Millisecond {
				t.Fatalf("answered after %v with status_index %d; want %d after max_wait (300ms)", sc.took, resp.GetStatusIndex(), cur)
			}
			break
		}
	})

	t.Run("applying report, in memory only", func(t *testing.T) {
		cur, err := adminF.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sc := blockingStatus(ctx, adminF, cur.GetStatusIndex(), 60*time.Second)
		report(hivev1.Phase_PHASE_APPLYING, g1)
		resp := sc.wait(t, "applying report")
		n := nodeOf(resp, "web-1")
		if n.GetPhase() != hivev1.Phase_PHASE_APPLYING || n.GetAppliedGeneration() != g1 {
			t.Fatalf("web-1 after its applying report: %v", n)
		}
		if resp.GetStatusIndex() <= cur.GetStatusIndex() {
			t.Fatalf("status_index %d after the applying report; want above %d", resp.GetStatusIndex(), cur.GetStatusIndex())
		}
		// Nothing went through raft: no server stores a report.
		for _, s := range nodes {
			if r := s.fsm.Store().Reports()["web-1"]; r != nil {
				t.Fatalf("%s stores web-1's applying report through raft: %v", s.cfg.Name, r)
			}
		}
		// Another server shows the node as pending.
		other, err := adminL.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if n := nodeOf(other, "web-1"); n.GetPhase() != hivev1.Phase_PHASE_PENDING {
			t.Fatalf("web-1 on the leader (the applying report went to a follower): %v; want pending", n)
		}
	})

	t.Run("final report wakes another server", func(t *testing.T) {
		cur, err := adminL.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sc := blockingStatus(ctx, adminL, cur.GetStatusIndex(), 60*time.Second)
		report(hivev1.Phase_PHASE_CONVERGED, g1)
		resp := sc.wait(t, "final report")
		if n := nodeOf(resp, "web-1"); n.GetPhase() != hivev1.Phase_PHASE_CONVERGED || resp.GetStatusIndex()>>localBits <= cur.GetStatusIndex()>>localBits {
			t.Fatalf("web-1 on the leader after its final report: %v (status_index %d, was %d)", n, resp.GetStatusIndex(), cur.GetStatusIndex())
		}
		// The follower that got the report shows applying until it has
		// applied the committed final report, then converged: never
		// pending in between.
		onF, err := adminF.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; nodeOf(onF, "web-1").GetPhase() == hivev1.Phase_PHASE_APPLYING && i < 10; i++ {
			onF = blockingStatus(ctx, adminF, onF.GetStatusIndex(), 20*time.Second).wait(t, "final report on the follower")
		}
		if n := nodeOf(onF, "web-1"); n.GetPhase() != hivev1.Phase_PHASE_CONVERGED {
			t.Fatalf("web-1 on the follower after its final report: %v; want converged (the in-memory applying superseded)", n)
		}
	})

	var g2 uint64
	t.Run("push wakes", func(t *testing.T) {
		cur, err := adminF.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sc := blockingStatus(ctx, adminF, cur.GetStatusIndex(), 60*time.Second)
		g2 = pushRetry(ctx, t, adminL, &hivev1.PushRequest{Site: testSite("2.0"), BaseGeneration: g1}).GetGeneration()
		resp := sc.wait(t, "push")
		for resp.GetGeneration() < g2 { // woken by something before the push: again
			resp = blockingStatus(ctx, adminF, resp.GetStatusIndex(), 60*time.Second).wait(t, "push")
		}
		if n := nodeOf(resp, "web-1"); resp.GetGeneration() != g2 || n.GetPhase() != hivev1.Phase_PHASE_PENDING || n.GetDesiredGeneration() != g2 {
			t.Fatalf("status after push %d: generation %d, web-1 %v; want it pending", g2, resp.GetGeneration(), n)
		}
	})

	t.Run("history", func(t *testing.T) {
		h, err := adminF.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if h.GetHistoryIndex() == 0 {
			t.Fatal("no history_index")
		}
		// A stale index answers at once.
		start := time.Now()
		if r, err := adminF.ListGenerations(ctx, &hivev1.ListGenerationsRequest{MinIndex: h.GetHistoryIndex() - 1, MaxWait: durationpb.New(time.Minute)}); err != nil || r.GetCurrent() != g2 || time.Since(start) > 20*time.Second {
			t.Fatalf("history with a stale index: %v, %v after %v", r, err, time.Since(start))
		}
		// Reports do not end a history wait; max_wait does.
		start = time.Now()
		done := make(chan struct{})
		var r *hivev1.ListGenerationsResponse
		go func() {
			defer close(done)
			r, err = adminF.ListGenerations(ctx, &hivev1.ListGenerationsRequest{MinIndex: h.GetHistoryIndex(), MaxWait: durationpb.New(2 * time.Second)})
		}()
		report(hivev1.Phase_PHASE_APPLYING, g2)
		report(hivev1.Phase_PHASE_CONVERGED, g2)
		<-done
		if err != nil || r.GetHistoryIndex() != h.GetHistoryIndex() || time.Since(start) < 2*time.Second {
			t.Fatalf("history wait across reports: %v, %v after %v; want the same history after max_wait", r, err, time.Since(start))
		}
		// A push ends it.
		done = make(chan struct{})
		go func() {
			defer close(done)
			r, err = adminF.ListGenerations(ctx, &hivev1.ListGenerationsRequest{MinIndex: h.GetHistoryIndex(), MaxWait: durationpb.New(time.Minute)})
		}()
		g3 := pushRetry(ctx, t, adminL, &hivev1.PushRequest{Site: testSite("3.0"), BaseGeneration: g2}).GetGeneration()
		<-done
		if err != nil || r.GetCurrent() != g3 || r.GetHistoryIndex() <= h.GetHistoryIndex() {
			t.Fatalf("history wait across push %d: %v, %v", g3, r, err)
		}
		g2 = g3
	})

	t.Run("bad max_wait", func(t *testing.T) {
		_, err := adminF.GetStatus(ctx, &hivev1.GetStatusRequest{MaxWait: durationpb.New(-time.Second)})
		wantCode(t, "negative max_wait", err, codes.InvalidArgument, "max_wait")
	})

	t.Run("version ahead of the server is caught up to", func(t *testing.T) {
		// A version of a raft index this server has not applied: it
		// waits for it (then, its version being no newer than the one
		// asked for, for the next change or max_wait).
		ahead := (f.fsm.Applied() + 1) << localBits
		sc := blockingStatus(ctx, adminF, ahead, 3*time.Second)
		time.Sleep(100 * time.Millisecond)
		if sc.returned() {
			t.Fatalf("answered before applying the index asked for: %v", sc.resp)
		}
		g := pushRetry(ctx, t, adminL, &hivev1.PushRequest{Site: testSite("4.0"), BaseGeneration: g2}).GetGeneration()
		resp := sc.wait(t, "caught up")
		if resp.GetRaftIndex() < ahead>>localBits || resp.GetGeneration() != g {
			t.Fatalf("answer at raft index %d, generation %d; want at least %d, generation %d", resp.GetRaftIndex(), resp.GetGeneration(), ahead>>localBits, g)
		}
		g2 = g
	})

	t.Run("follower after a leader change", func(t *testing.T) {
		cur, err := adminF.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sc := blockingStatus(ctx, adminF, cur.GetStatusIndex(), 90*time.Second)
		l.crash(t)
		nl := leader(t, fs)
		t.Logf("leader %s killed; %s leads", l.cfg.Name, nl.cfg.Name)
		g := pushRetry(ctx, t, adminF, &hivev1.PushRequest{Site: testSite("5.0"), BaseGeneration: g2}).GetGeneration()
		resp := sc.wait(t, "push under the next leader")
		for i := 0; resp.GetGeneration() < g && i < 10; i++ {
			next := blockingStatus(ctx, adminF, resp.GetStatusIndex(), 60*time.Second).wait(t, "push under the next leader")
			if next.GetStatusIndex() <= resp.GetStatusIndex() && next.GetGeneration() < g {
				t.Fatalf("status went from %d to %d without the push", resp.GetStatusIndex(), next.GetStatusIndex())
			}
			resp = next
		}
		if resp.GetGeneration() != g || resp.GetServer() != f.cfg.Name {
			t.Fatalf("blocking status on %s after push %d under %s: generation %d from %s", f.cfg.Name, g, nl.cfg.Name, resp.GetGeneration(), resp.GetServer())
		}
		// A version from the new leader, passed to the other server,
		// never gets an older answer.
		other := fs[1]
		if other == nl {
			other = f
		}
		fromLeader, err := tc.dial(t, nl.GRPCAddr(), pki.KindAdmin, "alice").GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		r2 := blockingStatus(ctx, tc.dial(t, other.GRPCAddr(), pki.KindAdmin, "alice"), fromLeader.GetStatusIndex(), 500*time.Millisecond).wait(t, "version from the leader")
		if r2.GetRaftIndex() < fromLeader.GetStatusIndex()>>localBits || r2.GetGeneration() != g {
			t.Fatalf("%s answered at raft index %d (generation %d) a version of raft index %d", other.cfg.Name, r2.GetRaftIndex(), r2.GetGeneration(), fromLeader.GetStatusIndex()>>localBits)
		}
	})
}

// TestStatusWatchVersions: the version orders by raft index first, then by
// in-memory changes; an older applying report never replaces a newer one;
// a committed report with a higher or equal seq hides it.
func TestStatusWatchVersions(t *testing.T) {
	w := newStatusWatch()
	v0 := w.view()
	w.onApply(statusChanges, 7)
	v1 := w.view()
	if v1.version != 7<<localBits || v0.ch == v1.ch {
		t.Fatalf("after an apply at 7: version %d (want %d), channel replaced %v", v1.version, uint64(7)<<localBits, v0.ch != v1.ch)
	}
	select {
	case <-v0.ch:
	default:
		t.Fatal("an apply did not wake the waiters")
	}
	w.onApply(0, 8) // nothing status shows
	if v := w.view(); v.version != v1.version || v.ch != v1.ch {
		t.Fatal("a change status does not show moved the version")
	}
	w.setApplying(&hivev1.Report{Node: "a", Seq: 5, Phase: hivev1.Phase_PHASE_APPLYING})
	w.setApplying(&hivev1.Report{Node: "a", Seq: 4, Phase: hivev1.Phase_PHASE_APPLYING})
	v2 := w.view()
	if v2.version != 7<<localBits+1 || v2.applying["a"].GetSeq() != 5 {
		t.Fatalf("after applying seq 5 then 4: version %d, kept seq %d", v2.version, v2.applying["a"].GetSeq())
	}
	w.onApply(fsm.ChangeStatus, 9)
	if v := w.view(); v.version != 9<<localBits {
		t.Fatalf("after an apply at 9: version %d, want %d", v.version, uint64(9)<<localBits)
	}
	if got := overlay(&hivev1.Report{Seq: 5}, v2.applying["a"]); got.GetPhase() == hivev1.Phase_PHASE_APPLYING {
		t.Fatal("an applying report hid a committed one with the same seq")
	}
	if got := overlay(&hivev1.Report{Seq: 3}, v2.applying["a"]); got.GetPhase() != hivev1.Phase_PHASE_APPLYING {
		t.Fatal("a newer applying report did not show over an older committed one")
	}
	w.setApplying(&hivev1.Report{Node: "gone", Seq: 1, Phase: hivev1.Phase_PHASE_APPLYING})
	w.setApplying(&hivev1.Report{Node: "b", Seq: 1, Phase: hivev1.Phase_PHASE_APPLYING})
	w.forget(map[string]*hivev1.Report{"a": {Seq: 6}}, map[string]*hivev1.NodeRecord{"a": {}, "b": {}})
	if v := w.view(); len(v.applying) != 1 || v.applying["b"] == nil {
		t.Fatalf("after forget: %v; want only b's (a's superseded, gone's node unknown)", v.applying)
	}
	w.local = 1<<localBits + 5
	if v := w.view(); v.version != 9<<localBits|(1<<localBits-1) {
		t.Fatalf("in-memory part did not saturate: %d", v.version)
	}
}
