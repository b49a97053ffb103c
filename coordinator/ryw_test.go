package coordinator

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestFollowerReadYourWrites: a write through a follower is answered only
// once that follower has applied it, so the push response lists the matched
// nodes and a history or status read right after on the same follower shows
// the new generation, 50 times in a row. Secrets likewise.
func TestFollowerReadYourWrites(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// Register web-1 (through the leader) and wait until the follower knows it.
	tc.issueAgent("web-1", map[string]string{"tier": "web"}, "10.1.0.1")
	agent := tc.dial(t, l.GRPCAddr(), pki.KindAgent, "web-1")
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := agent.WatchNodeState(wctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.1.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "web-1 registered on the follower", func() bool { return f.fsm.Store().Node("web-1") != nil })

	admin := tc.dial(t, f.GRPCAddr(), pki.KindAdmin, "alice")
	retryUnavailable(ctx, t, func() error {
		_, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v")})
		return err
	})
	if ls, err := admin.ListSecrets(ctx, &hivev1.ListSecretsRequest{}); err != nil || len(ls.GetSecrets()) != 1 {
		t.Fatalf("secrets right after set on the follower = %v, %v", ls, err)
	}

	var base uint64
	for i := range 50 {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprintf("1.%d", i)), BaseGeneration: base})
		if p.GetGeneration() != base+1 || !slices.Contains(p.GetNodes(), "web-1") {
			t.Fatalf("push %d through the follower = %v; want generation %d listing web-1", i, p, base+1)
		}
		base = p.GetGeneration()
		h, err := admin.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1})
		if err != nil || h.GetCurrent() != base {
			t.Fatalf("push %d: history on the follower right after = %v, %v; want current %d", i, h, err, base)
		}
		st, err := admin.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil || st.GetGeneration() != base || st.GetServer() != f.cfg.Name {
			t.Fatalf("push %d: status on the follower right after = generation %d (%s), %v; want %d", i, st.GetGeneration(), st.GetServer(), err, base)
		}
	}
	rb, err := admin.Rollback(ctx, &hivev1.RollbackRequest{Target: 1, BaseGeneration: base})
	if err != nil || rb.GetGeneration() != base+1 || rb.GetSha256() == "" {
		t.Fatalf("rollback through the follower = %v, %v", rb, err)
	}
	if h, err := admin.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1}); err != nil || h.GetCurrent() != base+1 {
		t.Fatalf("history after rollback = %v, %v", h, err)
	}
	retryUnavailable(ctx, t, func() error {
		_, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "tmp", Value: []byte("v")})
		return err
	})
	retryUnavailable(ctx, t, func() error {
		_, err := admin.DeleteSecret(ctx, &hivev1.DeleteSecretRequest{Name: "tmp"})
		return err
	})
	if ls, err := admin.ListSecrets(ctx, &hivev1.ListSecretsRequest{}); err != nil || len(ls.GetSecrets()) != 1 {
		t.Fatalf("secrets right after delete on the follower = %v, %v", ls, err)
	}
}
