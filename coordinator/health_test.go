package coordinator

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// healthz fetches n's /healthz: the status code and body.
func healthz(t *testing.T, hc *http.Client, n *node) (int, string) {
	t.Helper()
	resp, err := hc.Get("http://" + n.HTTPAddr() + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestHealthzRestartedFollowerBehind (issue 12): a follower restarted
// from its disk after the cluster moved on 60 generations (the leader's
// log compacted, so it needs a snapshot) answers /healthz 503 until it has
// caught up, then 200. Every 200 answer is checked against the leader's
// index: a 200 from a server more than HealthMaxLag entries behind fails.
// Before the fix /healthz answered 200 as soon as a leader was known
// (generation 4 against 53 in the field). Then, after many consistent
// reads (raft barriers the FSM never sees), every server is still healthy.
func TestHealthzRestartedFollowerBehind(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{snapshotThreshold: 16, trailingLogs: 8})
	l := leader(t, nodes)
	f := followers(nodes, l)
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "every server healthy", func() bool {
		for _, n := range nodes {
			if code, _ := healthz(t, hc, n); code != http.StatusOK {
				return false
			}
		}
		return true
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	var gen uint64
	push := func(n int) {
		for i := 0; i < n; i++ {
			p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint("v", gen)), BaseGeneration: gen})
			gen = p.GetGeneration()
		}
	}
	push(4)
	down := f[1]
	cfg := down.cfg
	cfg.RaftAddr, cfg.GRPCAddr = down.RaftAddr(), down.GRPCAddr()
	down.stop(t)
	push(60)
	waitFor(t, 20*time.Second, "the leader to compact its log", func() bool {
		first, err := l.boltStore.FirstIndex()
		return err == nil && first > down.fsm.Applied()
	})

	r := startNode(t, cfg)
	waitFor(t, 10*time.Second, "the restarted server's http listener", func() bool { return r.HTTPAddr() != "" })
	var notOK, ok int
	var first string
	reasons := map[string]int{}
	for start := time.Now(); ; {
		// The leader's index before the question: a 200 must be within
		// the bound of it.
		want := l.fsm.Applied()
		code, body := healthz(t, hc, r)
		if first == "" {
			first = fmt.Sprintf("%d %s", code, body)
		}
		if code == http.StatusOK {
			if got := r.fsm.Applied(); got+r.cfg.HealthMaxLag < want {
				t.Fatalf("healthz 200 at index %d while the leader was at %d: %s", got, want, body)
			}
			if ok++; ok >= 5 {
				break
			}
			continue
		}
		if code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ok: ") {
			t.Fatalf("healthz = %d %q; want 503 with a reason", code, body)
		}
		if ok > 0 {
			t.Logf("healthz went back to 503 after 200 (%s)", body)
		}
		notOK++
		reason, _, _ := strings.Cut(body, " (")
		reasons[reason[:min(len(reason), 24)]]++
		if time.Since(start) > 30*time.Second {
			t.Fatalf("restarted follower not healthy after 30s: %s", body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("first answer: %s; %d answers 503 before 200: %v", first, notOK, reasons)
	if notOK == 0 {
		t.Fatalf("the restarted follower answered 200 at once: %s", first)
	}
	// Each generation is at least one entry.
	if g := r.fsm.Store().CurrentNumber(); g+r.cfg.HealthMaxLag < gen {
		t.Fatalf("healthy at generation %d, cluster at %d", g, gen)
	}
	waitFor(t, 10*time.Second, "the restarted follower at the last generation", func() bool { return r.fsm.Store().CurrentNumber() == gen })

	// Consistent reads append raft barriers, which the FSM never sees: a
	// caught-up cluster that served many stays healthy.
	for i := 0; i < 2*int(r.cfg.HealthMaxLag); i++ {
		if _, err := admin.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1, Consistent: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{l, f[0], r} {
		if code, body := healthz(t, hc, n); code != http.StatusOK {
			t.Errorf("%s after %d consistent reads: %d %s", n.cfg.Name, 2*r.cfg.HealthMaxLag, code, body)
		}
	}
}

// TestHealthzFollowerCutOff: a follower whose raft network is cut while
// the cluster moves on answers 503 (behind, then no leader); once the
// network is back and it caught up, 200.
func TestHealthzFollowerCutOff(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	cut := followers(nodes, l)[0]
	hc := &http.Client{Timeout: 5 * time.Second}
	waitFor(t, 10*time.Second, "the follower healthy", func() bool { c, _ := healthz(t, hc, cut); return c == http.StatusOK })

	cut.layer.setBlocked(true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	var gen uint64
	for i := 0; i < 80; i++ {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint("v", gen)), BaseGeneration: gen})
		gen = p.GetGeneration()
	}
	code, body := healthz(t, hc, cut)
	t.Logf("cut off: %d %s", code, body)
	if code != http.StatusServiceUnavailable {
		t.Fatalf("cut-off follower healthz = %d %s", code, body)
	}
	cut.layer.setBlocked(false)
	waitFor(t, 30*time.Second, "the follower healthy again", func() bool { c, _ := healthz(t, hc, cut); return c == http.StatusOK })
	if g := cut.fsm.Store().CurrentNumber(); g+uint64(DefaultHealthMaxLag) < gen {
		t.Fatalf("healthy at generation %d, cluster at %d", g, gen)
	}
}
