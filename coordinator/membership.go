package coordinator

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/gossip"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/version"
)

// newGossip creates this server's gossip member (nil when GossipAddr is
// empty). Coordinators advertise their gRPC and raft addresses and their
// bootstrap expectation; agents find coordinators through it.
func (s *Server) newGossip(raftAddr string) (*gossip.Gossip, error) {
	if s.cfg.GossipAddr == "" {
		return nil, nil
	}
	gc := gossip.DefaultConfig()
	gc.Name = s.cfg.Name
	gc.BindAddr = s.cfg.GossipAddr
	gc.AdvertiseAddr = s.cfg.AdvertiseAddr
	gc.Join = s.cfg.Join
	gc.Key = s.cfg.GossipKey
	if s.cfg.GossipProfile != "" {
		gc.Profile = gossip.Profile(s.cfg.GossipProfile)
	}
	gc.Logger = s.root
	gc.Meta = &hivev1.MemberMeta{
		Kind:            hivev1.MemberKind_MEMBER_KIND_COORDINATOR,
		GrpcAddr:        s.grpcAddr,
		Version:         version.Version,
		RaftAddr:        raftAddr,
		BootstrapExpect: uint32(s.cfg.BootstrapExpect),
	}
	g, err := gossip.New(gc)
	if err != nil {
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	return g, nil
}

// GossipAddr returns the gossip address this server advertises, or "".
func (s *Server) GossipAddr() string {
	if s.gossip == nil {
		return ""
	}
	return s.gossip.LocalAddr()
}

// aliveCoordinators returns the alive coordinators gossip knows, this
// server included, sorted by name.
func (s *Server) aliveCoordinators() []gossip.Member {
	if s.gossip == nil {
		return nil
	}
	var out []gossip.Member
	for _, m := range s.gossip.Members() {
		if m.State == gossip.StateAlive && m.Meta.GetKind() == hivev1.MemberKind_MEMBER_KIND_COORDINATOR && m.Meta.GetRaftAddr() != "" {
			out = append(out, m)
		}
	}
	return out
}

// bootstrapLoop waits until BootstrapExpect coordinators expecting the same
// number found each other through gossip and proved their coordinator
// certificates (probe: a gossip member's claims alone count for nothing), then bootstraps raft with the
// lowest-named of them, unless one of them already belongs to a cluster
// with a leader (then this server waits to be added by that leader). Every
// server of the first set computes the same configuration, as raft
// requires.
func (s *Server) bootstrapLoop(ctx context.Context) {
	n := s.cfg.BootstrapExpect
	if s.clientTLS == nil {
		s.log.Warn("bootstrap through gossip needs TLS (candidates prove coordinator certificates); not bootstrapping")
		return
	}
	refused := map[string]time.Time{}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if addr, _ := s.raft.LeaderWithID(); addr != "" {
			return // someone added us
		}
		var cands []gossip.Member
		for _, m := range s.aliveCoordinators() {
			if int(m.Meta.GetBootstrapExpect()) != n {
				continue
			}
			if m.Name != s.cfg.Name {
				if _, err := s.probe(ctx, m.Name, m.Meta.GetGrpcAddr(), m.Meta.GetRaftAddr()); err != nil {
					s.logRefused(refused, time.Now(), "bootstrap candidate did not prove its coordinator certificate; left out", m.Name, "err", err)
					continue
				}
			}
			cands = append(cands, m)
		}
		if len(cands) < n {
			continue
		}
		if s.existingCluster(ctx, cands) {
			s.log.Info("an existing raft cluster was found through gossip; waiting for its leader to add this server")
			return
		}
		sort.Slice(cands, func(i, j int) bool { return cands[i].Name < cands[j].Name })
		cands = cands[:n]
		var servers []raft.Server
		self := false
		for _, m := range cands {
			servers = append(servers, raft.Server{ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Meta.GetRaftAddr()), Suffrage: raft.Voter})
			self = self || m.Name == s.cfg.Name
		}
		if !self {
			s.log.Info("bootstrap set complete without this server; waiting to be added")
			return
		}
		if err := s.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			s.log.Warn("bootstrap raft", "err", err)
			return
		}
		s.log.Info("bootstrapped raft from gossip", "servers", len(servers), "expect", n)
		return
	}
}

// existingCluster asks the other candidates whether they already have a
// raft leader.
func (s *Server) existingCluster(ctx context.Context, cands []gossip.Member) bool {
	for _, m := range cands {
		if m.Name == s.cfg.Name || m.Meta.GetGrpcAddr() == "" {
			continue
		}
		conn, err := s.forwardConn(m.Meta.GetGrpcAddr())
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := hivev1.NewCoordinatorServiceClient(conn).ListPeers(cctx, &hivev1.ListPeersRequest{})
		cancel()
		if err != nil {
			continue
		}
		for _, p := range resp.GetPeers() {
			if p.GetLeader() {
				return true
			}
		}
	}
	return false
}

// reconcileLoop, on the leader, adds alive coordinators that gossip knows
// but raft does not, once they proved their certificate, as non-voters (a
// new server only needs --join), promotes them once caught up, and updates
// the address of a known one that moved (see join.go). Removing voters
// stays an operator's decision (RemovePeer), so a partition never shrinks
// the cluster. Without TLS (--dev) it does nothing: nothing can be proven.
func (s *Server) reconcileLoop(ctx context.Context) {
	if s.gossip == nil {
		return
	}
	if s.clientTLS == nil {
		s.log.Info("raft membership through gossip is disabled without TLS (--dev): no coordinator certificate can be proven")
		return
	}
	events, cancel := s.gossip.Subscribe(64)
	defer cancel()
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	ms := &membership{nonvoters: map[string]*nonvoter{}, refusals: map[string]*refusal{}}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				return
			}
		case <-t.C:
		}
		if s.raft.State() != raft.Leader {
			ms.nonvoters = map[string]*nonvoter{}
			continue
		}
		s.reconcile(ctx, ms, time.Now())
		s.reconcileRounds.Add(1)
	}
}

// gossipStates returns each member's gossip state by name.
func (s *Server) gossipStates() map[string]hivev1.GossipState {
	out := map[string]hivev1.GossipState{}
	if s.gossip == nil {
		return out
	}
	for _, m := range s.gossip.Members() {
		out[m.Name] = m.State.Proto()
	}
	return out
}
