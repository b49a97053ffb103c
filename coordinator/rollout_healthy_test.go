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

// reportingAgents registers n simulated agents web-1..web-n through via;
// each reports converged on whatever state it gets, and again every
// 300 ms (as drift checks do), until ctx ends.
func reportingAgents(ctx context.Context, t *testing.T, tc *tlsCluster, via *node, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("web-%d", i)
		addr := fmt.Sprintf("10.1.0.%d", i)
		tc.issueAgent(name, map[string]string{"tier": "web"}, addr)
		c := tc.dial(t, via.GRPCAddr(), pki.KindAgent, name)
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
		nodes, _ := via.fsm.Store().Nodes()
		return len(nodes) == n
	})
}

// TestRolloutMinHealthyTimeSurvivesLeaderChange: the time the open wave
// became healthy is in raft, so a leader change does not restart the
// wave's min_healthy_time. The leader crashes while wave 1 has been
// healthy for part of its 5 s; the new leader opens wave 2 when the
// recorded 5 s are over, before a fresh 5 s from the crash would end.
// Every server answers the wave's healthy time from raft.
func TestRolloutMinHealthyTimeSurvivesLeaderChange(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	admin := tc.dial(t, f.GRPCAddr(), pki.KindAdmin, "alice")
	reportingAgents(ctx, t, tc, f, 2)

	retryUnavailable(ctx, t, func() error {
		_, err := admin.Push(ctx, &hivev1.PushRequest{Site: rolloutSite("1")})
		return err
	})
	const minHealthy = 5 * time.Second
	var g2 uint64
	retryUnavailable(ctx, t, func() error {
		resp, err := admin.Push(ctx, &hivev1.PushRequest{Site: rolloutSite("2"), BaseGeneration: 1,
			Rollout: &hivev1.RolloutOverride{MaxParallel: ptr(uint32(1)), MinHealthyTime: durationpb.New(minHealthy)}})
		g2 = resp.GetGeneration()
		return err
	})
	var since time.Time
	waitFor(t, 20*time.Second, "wave 1 healthy, recorded in raft", func() bool {
		r := f.fsm.Store().Rollout()
		if r.GetGeneration() != g2 || r.GetWaveHealthySince() == nil {
			return false
		}
		since = r.GetWaveHealthySince().AsTime()
		return true
	})
	// Every server, not only the leader, tells how long the wave has been
	// healthy.
	for _, n := range nodes {
		waitFor(t, 5*time.Second, "wave healthy on "+n.cfg.Name, func() bool { return n.fsm.Store().Rollout().GetWaveHealthySince() != nil })
		if rs := n.rolloutStatus(); rs.GetWaveHealthyFor() == nil {
			t.Fatalf("%s: no wave_healthy_for in %v", n.cfg.Name, rs)
		}
	}
	if d := time.Until(since.Add(3 * time.Second)); d > 0 {
		time.Sleep(d)
	}
	if r := f.fsm.Store().Rollout(); r.GetOpened() != 1 {
		t.Fatalf("wave 2 opened before min_healthy_time: %v", r)
	}
	crashed := time.Now()
	l.crash(t)
	rest := followers(nodes, l)
	nl := leader(t, rest)
	t.Logf("leader %s crashed %v after wave 1 became healthy; new leader %s", l.cfg.Name, crashed.Sub(since).Round(time.Millisecond), nl.cfg.Name)
	waitFor(t, 30*time.Second, "wave 2 open", func() bool { return nl.fsm.Store().Rollout().GetOpened() >= 2 })
	opened := nl.fsm.Store().Rollout().GetWaves()[1].GetOpened().AsTime()
	t.Logf("wave 2 opened %v after wave 1 became healthy, %v after the crash", opened.Sub(since).Round(time.Millisecond), opened.Sub(crashed).Round(time.Millisecond))
	if opened.Sub(since) < minHealthy {
		t.Errorf("wave 2 opened %v after wave 1 became healthy, before min_healthy_time %v", opened.Sub(since), minHealthy)
	}
	if opened.Sub(crashed) >= minHealthy {
		t.Errorf("wave 2 opened %v after the leader change: the new leader restarted min_healthy_time", opened.Sub(crashed))
	}
	if s := nl.fsm.Store().Rollout().GetWaveHealthySince(); s != nil && !s.AsTime().After(opened) {
		t.Errorf("wave 2 inherited wave 1's healthy since %v", s.AsTime())
	}
}
