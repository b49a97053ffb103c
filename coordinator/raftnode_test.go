package coordinator

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestConsistentReadsShareRounds (issue 13): consistent reads cost a
// leadership check plus one barrier per term, and concurrent readers
// share rounds: 60 readers at once, through the leader and through a
// follower (whose questions to the leader are shared too), cost the
// leader far fewer rounds than reads and at most the term's one barrier;
// every read sees the push acknowledged before it.
func TestConsistentReadsShareRounds(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	viaLeader := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	viaFollower := tc.dial(t, f.GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, viaLeader, &hivev1.PushRequest{Site: testSite("shared"), Force: true})
	// The term's barrier (the leader's own registration takes it).
	if _, err := viaFollower.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1, Consistent: true}); err != nil {
		t.Fatal(err)
	}
	before := l.node.Stats()

	const readers = 60
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := 0; i < readers; i++ {
		c := viaLeader
		if i%2 == 1 {
			c = viaFollower
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := c.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1, Consistent: true})
			if err == nil && resp.GetCurrent() < p.GetGeneration() {
				t.Errorf("consistent read answered generation %d after %d was acknowledged", resp.GetCurrent(), p.GetGeneration())
			}
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	after := l.node.Stats()
	rounds, barriers := after.ReadRounds-before.ReadRounds, after.ReadBarriers-before.ReadBarriers
	t.Logf("%d consistent reads: %d leader rounds, %d barriers", readers, rounds, barriers)
	if barriers != 0 {
		t.Errorf("%d barriers for reads in a term that had its barrier; want 0", barriers)
	}
	if rounds == 0 || rounds > readers/3 {
		t.Errorf("%d leader rounds for %d concurrent reads; want them shared (1..%d)", rounds, readers, readers/3)
	}
}

// TestLeaderGoneElection (issue 13): when the leader's process ends (its
// raft connections close and its raft port stops answering), a survivor
// starts an election at once instead of waiting for the heartbeat timeout
// (LeaderGone), a new leader is elected, and a push through a survivor is
// acknowledged.
func TestLeaderGoneElection(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("before"), Force: true})
	l.crash(t)
	nl := leader(t, f)
	var campaigns uint64
	for _, n := range f {
		campaigns += n.node.Stats().Campaigns
	}
	if campaigns == 0 {
		t.Errorf("new leader %s elected without a survivor starting the election on the leader's death", nl.cfg.Name)
	}
	p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("after"), Force: true})
	t.Logf("new leader %s (elections started on the leader's death: %d); generation %d acknowledged", nl.cfg.Name, campaigns, p.GetGeneration())
}
