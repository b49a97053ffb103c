package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestRolloutLeaderCrash runs a rollout on a real 3-server TLS cluster
// (raft on disk) with agents watching and reporting through a follower;
// the leader crashes while wave 2 of 4 is open. The new leader's gate
// carries the rollout on from the replicated state, and every server ends
// with the same completed rollout.
func TestRolloutLeaderCrash(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	admin := tc.dial(t, f.GRPCAddr(), pki.KindAdmin, "alice")

	// Simulated agents: report converged on whatever state they get, and
	// again every 300 ms (as drift checks do), through the follower.
	const agents = 4
	for i := 1; i <= agents; i++ {
		name := fmt.Sprintf("web-%d", i)
		addr := fmt.Sprintf("10.1.0.%d", i)
		tc.issueAgent(name, map[string]string{"tier": "web"}, addr)
		c := tc.dial(t, f.GRPCAddr(), pki.KindAgent, name)
		w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: name, Labels: map[string]string{"tier": "web"}, Addresses: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		states := make(chan uint64, 16)
		go func() {
			for {
				m, err := w.Recv()
				if err != nil {
					return
				}
				states <- m.GetState().GetGeneration()
			}
		}()
		go func() {
			var gen, seq uint64
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case gen = <-states:
				case <-tick.C:
				}
				if gen == 0 {
					continue
				}
				seq++
				c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: name, Generation: gen, Phase: hivev1.Phase_PHASE_CONVERGED,
					Seq: seq, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state"}})
			}
		}()
	}
	waitFor(t, 20*time.Second, "agents registered", func() bool {
		n, _ := f.fsm.Store().Nodes()
		return len(n) == agents
	})
	retryUnavailable(ctx, t, func() error {
		_, err := admin.Push(ctx, &hivev1.PushRequest{Site: rolloutSite("1")})
		return err
	})
	var g2 uint64
	retryUnavailable(ctx, t, func() error {
		resp, err := admin.Push(ctx, &hivev1.PushRequest{Site: rolloutSite("2"), BaseGeneration: 1,
			Rollout: &hivev1.RolloutOverride{MaxParallel: ptr(uint32(1)), MinHealthyTime: durationpb.New(300 * time.Millisecond)}})
		g2 = resp.GetGeneration()
		return err
	})
	waitFor(t, 20*time.Second, "wave 2 open", func() bool { return f.fsm.Store().Rollout().GetOpened() >= 2 })
	opened := f.fsm.Store().Rollout().GetOpened()
	l.crash(t)
	t.Logf("leader %s crashed with %d of %d waves open", l.cfg.Name, opened, agents)
	rest := followers(nodes, l)
	nl := leader(t, rest)
	t.Logf("new leader %s", nl.cfg.Name)
	for _, n := range rest {
		waitFor(t, 30*time.Second, "rollout completed on "+n.cfg.Name, func() bool {
			r := n.fsm.Store().Rollout()
			return r.GetGeneration() == g2 && r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED
		})
		for i := 1; i <= agents; i++ {
			if got := n.fsm.Store().TargetNumber(fmt.Sprintf("web-%d", i)); got != g2 {
				t.Fatalf("%s: target of web-%d is %d, want %d", n.cfg.Name, i, got, g2)
			}
		}
	}
	if nl.fsm.Store().Rollout().GetOpened() != agents {
		t.Fatalf("opened %d waves", nl.fsm.Store().Rollout().GetOpened())
	}
}
