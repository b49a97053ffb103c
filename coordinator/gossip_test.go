package coordinator

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestGossipBootstrapAndJoin: three servers started with bootstrap-expect
// 3 and --join find each other through gossip and bootstrap raft; a fourth
// started with only --join is added as a voter by the leader and catches
// up; an agent in the gossip pool shows in members and status.
func TestGossipBootstrapAndJoin(t *testing.T) {
	tc := newTLS(t)
	kr, _ := keyring.New()
	krFile := filepath.Join(t.TempDir(), "keyring.json")
	if err := kr.Save(krFile); err != nil {
		t.Fatal(err)
	}
	gkey := []byte("0123456789abcdef0123456789abcdef")
	mk := func(name string, expect int, join []string) Config {
		f := tc.issue(pki.KindCoordinator, name)
		cfg := DefaultConfig()
		cfg.Name = name
		cfg.DataDir = t.TempDir()
		cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", ""
		cfg.GossipAddr, cfg.GossipProfile, cfg.GossipKey = "127.0.0.1:0", "local", gkey
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = f.CA, f.Cert, f.Key
		cfg.KeyringFile = krFile
		cfg.BootstrapExpect = expect
		cfg.Join = join
		cfg.ReconcileInterval, cfg.PromoteStabilization = 200*time.Millisecond, time.Second
		cfg.Logger = testLogger(t).With("node", name)
		return cfg
	}
	first := startNode(t, mk("c1", 3, nil))
	join := []string{first.GossipAddr()}
	nodes := []*node{first, startNode(t, mk("c2", 3, join)), startNode(t, mk("c3", 3, join))}
	waitReady(t, nodes...)
	l := leader(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, nodes[2].GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("1")})
	if cfg := l.raft.GetConfiguration(); cfg.Error() != nil || len(cfg.Configuration().Servers) != 3 {
		t.Fatalf("raft configuration after gossip bootstrap: %v", cfg.Configuration())
	}

	fourth := startNode(t, mk("c4", 0, join))
	waitReady(t, fourth)
	all := append(nodes, fourth)
	checkGenerations(t, all, p.GetGeneration(), map[uint64]string{p.GetGeneration(): p.GetSha256()})
	waitFor(t, 20*time.Second, "c4 to be a voter", func() bool {
		f := l.raft.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		for _, s := range f.Configuration().Servers {
			if s.ID == "c4" && s.Suffrage == raft.Voter {
				return true
			}
		}
		return false
	})

	// An agent joins the pool and registers through a watch.
	gc := gossip.DefaultConfig()
	gc.Name, gc.BindAddr, gc.Join, gc.Key, gc.Profile = "web-1", "127.0.0.1:0", join, gkey, gossip.ProfileLocal
	gc.Meta = &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_AGENT, Labels: map[string]string{"tier": "web"}}
	ag, err := gossip.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	gctx, gcancel := context.WithCancel(ctx)
	gdone := make(chan struct{})
	go func() { defer close(gdone); _ = ag.Run(gctx) }()
	defer func() { gcancel(); <-gdone }()
	tc.issueAgent("web-1", map[string]string{"tier": "web"}, "10.0.0.1")
	agent := tc.dial(t, fourth.GRPCAddr(), pki.KindAgent, "web-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetState().GetGeneration() != p.GetGeneration() {
		t.Fatalf("agent's state = %v, %v", m, err)
	}
	waitFor(t, 20*time.Second, "members to show 4 coordinators and the agent", func() bool {
		mem, err := admin.ListMembers(ctx, &hivev1.ListMembersRequest{})
		if err != nil {
			return false
		}
		coords, leaders, agents := 0, 0, 0
		for _, m := range mem.GetMembers() {
			if m.GetGossip() != hivev1.GossipState_GOSSIP_STATE_ALIVE {
				continue
			}
			switch m.GetKind() {
			case hivev1.MemberKind_MEMBER_KIND_COORDINATOR:
				coords++
				if m.GetRaft() == hivev1.RaftRole_RAFT_ROLE_LEADER {
					leaders++
				}
			case hivev1.MemberKind_MEMBER_KIND_AGENT:
				agents++
			}
		}
		return coords == 4 && leaders == 1 && agents == 1
	})
	waitFor(t, 10*time.Second, "status of web-1 with gossip alive", func() bool {
		st, err := admin.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
		return err == nil && st.GetNodes()[0].GetGossip() == hivev1.GossipState_GOSSIP_STATE_ALIVE
	})
}
