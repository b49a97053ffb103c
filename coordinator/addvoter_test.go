package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAddVoterAcrossLeadershipLoss: adding a fourth voter while two of
// three servers are down cannot commit (3 of 4 needed); the leader steps
// down and raft answers "leadership lost while committing log". addVoter
// retries, and once a server is back and a leader is elected, the new
// server is a voter (directly, or non-voter then promoted when the retry
// reached another leader through AddPeer).
func TestAddVoterAcrossLeadershipLoss(t *testing.T) {
	cfgs, _ := clusterConfigs(t, 4, clusterOpts{})
	nodes := startCluster(t, cfgs[:3])
	l := leader(t, nodes)
	var down []Config
	for _, n := range followers(nodes, l) {
		cfg := n.cfg
		cfg.RaftAddr, cfg.GRPCAddr = n.RaftAddr(), n.GRPCAddr()
		cfg.BootstrapExpect = 0
		down = append(down, cfg)
		n.crash(t)
	}
	c4 := startNode(t, cfgs[3])

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- l.addVoter(ctx, c4.cfg.Name, c4.RaftAddr()) }()
	waitFor(t, 20*time.Second, l.cfg.Name+" to lose leadership", func() bool { return !l.IsLeader() })
	select {
	case err := <-errc:
		t.Fatalf("addVoter returned %v while no quorum exists; want it to keep retrying", err)
	case <-time.After(500 * time.Millisecond):
	}
	back := startNode(t, down[0])
	if err := <-errc; err != nil {
		t.Fatalf("add voter c4 after the leadership loss: %v", err)
	}
	live := []*node{l, back, c4}
	waitReady(t, live...)
	// When the retry went through another leader (AddPeer), c4 joined as
	// a non-voter after proving its certificate, and that leader promotes
	// it once caught up.
	waitFor(t, 20*time.Second, "4 voters", func() bool {
		f := leader(t, live).raft.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		voters := 0
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				voters++
			}
		}
		return voters == 4
	})
}
