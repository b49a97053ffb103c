package coordinator

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Raft membership needs a coordinator certificate. Nothing a gossip member
// says about itself (kind, raft address, bootstrap expectation) makes it a
// raft server: the leader first proves it (probe), over mutual TLS at the
// gRPC address it advertises, with its own coordinator certificate as the
// client certificate. The handshake proves possession of the key; the
// server's chain must lead to the site's CA, be valid for serverAuth and
// name coordinator:NAME with NAME the member's raft id (gossip name), and
// its IP/DNS names must cover the hosts of both advertised addresses.
//
// A proven server joins as a non-voter. The leader promotes it to voter
// (one at a time) once it has stayed caught up for
// Config.PromoteStabilization, and only while the voters that are healthy,
// with it, still make the quorum of the larger configuration. A non-voter
// that cannot be proven for Config.NonvoterTimeout is removed; voters are
// never removed by the leader (RemovePeer stays an operator's decision).
//
// Without TLS (--dev) nothing can be proven: gossip never changes the raft
// configuration and AddPeer is refused.

// ErrUnproven is returned when a server could not prove a coordinator
// certificate matching its name and addresses.
var ErrUnproven = errors.New("not proven to hold a matching coordinator certificate")

// errNoTLS is returned by membership changes on a server without TLS.
var errNoTLS = errors.New("raft membership changes need TLS: only a coordinator certificate proves a new server, and this server runs without one (--dev)")

// probeTimeout bounds one probe (dial, handshake, RaftStats).
const probeTimeout = 3 * time.Second

// checkPeerCert checks that a coordinator's verified leaf certificate names
// coordinator:name and covers the host of every address in addrs.
func checkPeerCert(leaf *x509.Certificate, name string, addrs ...string) error {
	id, err := pki.IdentityFromCert(leaf)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnproven, err)
	}
	if id.Kind != pki.KindCoordinator || id.Name != name {
		return fmt.Errorf("%w: it presented %s, not coordinator:%s", ErrUnproven, id, name)
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("%w: address %q: %v", ErrUnproven, a, err)
		}
		if err := leaf.VerifyHostname(host); err != nil {
			return fmt.Errorf("%w: the certificate of %s does not cover %s (IPs %v, DNS names %v)", ErrUnproven, id, host, leaf.IPAddresses, leaf.DNSNames)
		}
	}
	return nil
}

// probe calls RaftStats on a fresh mutual TLS connection to grpcAddr and
// checks that the server there proves coordinator:name with a certificate
// covering grpcAddr and raftAddr. It returns the server's raft progress.
func (s *Server) probe(ctx context.Context, name, grpcAddr, raftAddr string) (*hivev1.RaftStatsResponse, error) {
	if s.clientTLS == nil {
		return nil, errNoTLS
	}
	if grpcAddr == "" {
		return nil, fmt.Errorf("%w: %s has no known gRPC address", ErrUnproven, name)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(s.clientTLS)))
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", ErrUnproven, grpcAddr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var p peer.Peer
	resp, err := hivev1.NewClusterServiceClient(conn).RaftStats(ctx, &hivev1.RaftStatsRequest{}, grpc.Peer(&p))
	if err != nil {
		return nil, fmt.Errorf("%w: RaftStats at %s: %v", ErrUnproven, grpcAddr, err)
	}
	// The client configuration verified the chain to the site's CA and
	// that it names a coordinator valid for serverAuth (pki.VerifyServer).
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, fmt.Errorf("%w: no TLS certificate from %s", ErrUnproven, grpcAddr)
	}
	if err := checkPeerCert(info.State.PeerCertificates[0], name, grpcAddr, raftAddr); err != nil {
		return nil, err
	}
	if resp.GetId() != name {
		return nil, fmt.Errorf("%w: the server at %s answers as raft id %q, not %q", ErrUnproven, grpcAddr, resp.GetId(), name)
	}
	return resp, nil
}

// peerGRPCAddr returns the gRPC address of raft server id: the one it
// recorded in the replicated state, else the one it advertises in gossip.
// Either is only a hint: probe proves who answers there.
func (s *Server) peerGRPCAddr(id string) string {
	if rec := s.fsm.Store().Coordinator(id); rec != nil && rec.GetGrpcAddr() != "" {
		return rec.GetGrpcAddr()
	}
	for _, m := range s.aliveCoordinators() {
		if m.Name == id {
			return m.Meta.GetGrpcAddr()
		}
	}
	return ""
}

// quorum is the majority of n voters.
func quorum(n int) int { return n/2 + 1 }

// canPromote reports whether a caught-up non-voter may become a voter:
// the healthy voters (the leader included) and it must make the quorum of
// the configuration with one more voter.
func canPromote(voters, healthyVoters int) bool {
	return healthyVoters+1 >= quorum(voters+1)
}

// nonvoter is the leader's view of one non-voter (reset on leadership
// change).
type nonvoter struct {
	lastProven   time.Time // last successful probe (or when first seen)
	healthySince time.Time // caught up since (zero: not caught up)
}

// membership is the state of reconcileLoop on the leader.
type membership struct {
	nonvoters map[string]*nonvoter
	refusals  map[string]*refusal // gossip members that did not prove themselves
}

// refusal remembers a gossip member that failed its probe, so that it is
// probed again only after a backoff (doubling from ReconcileInterval to
// refusedBackoffMax) unless it advertises other addresses: members that
// claim a lot cannot keep the leader probing.
type refusal struct {
	addrs   string // "grpc raft" it advertised
	next    time.Time
	backoff time.Duration
	logged  time.Time // last Warn
}

// refusedBackoffMax bounds the probe backoff of an unproven member.
const refusedBackoffMax = time.Minute

// maxParallelProbes bounds concurrent probes of new gossip members.
const maxParallelProbes = 8

// refusedLogEvery rate-limits the warning about one unproven member.
const refusedLogEvery = time.Minute

// logRefused warns about a member that did not prove itself, at most once
// per refusedLogEvery per member (Debug otherwise).
func (s *Server) logRefused(refused map[string]time.Time, now time.Time, msg, member string, args ...any) {
	args = append([]any{"member", member}, args...)
	if last, ok := refused[member]; ok && now.Sub(last) < refusedLogEvery {
		s.log.Debug(msg, args...)
		return
	}
	refused[member] = now
	s.log.Warn(msg, args...)
}

// refuse records a failed probe of gossip member m: it is probed again
// after a doubling backoff, and warned about at most once per
// refusedLogEvery.
func (s *Server) refuse(ms *membership, now time.Time, m gossip.Member, err error) {
	addrs := m.Meta.GetGrpcAddr() + " " + m.Meta.GetRaftAddr()
	r := ms.refusals[m.Name]
	if r == nil || r.addrs != addrs {
		r = &refusal{addrs: addrs}
		ms.refusals[m.Name] = r
	}
	r.backoff = min(max(2*r.backoff, s.cfg.ReconcileInterval), refusedBackoffMax)
	r.next = now.Add(r.backoff)
	args := []any{"member", m.Name, "raft", m.Meta.GetRaftAddr(), "grpc", m.Meta.GetGrpcAddr(), "retry_in", r.backoff, "err", err}
	const msg = "gossip member claims to be a coordinator but did not prove it; not added to raft"
	if !r.logged.IsZero() && now.Sub(r.logged) < refusedLogEvery {
		s.log.Debug(msg, args...)
		return
	}
	r.logged = now
	s.log.Warn(msg, args...)
}

// caughtUp reports whether a server's progress is within the allowed lag
// of the leader's.
func (s *Server) caughtUp(st *hivev1.RaftStatsResponse, term, last uint64) bool {
	return st.GetTerm() == term && st.GetLastIndex()+s.cfg.PromoteMaxLag >= last
}

// reconcile is one round of reconcileLoop on the leader: add proven gossip
// coordinators as non-voters (or update the raft address of a known server
// that proves its new one), then check non-voters, promote one that has
// caught up, and remove those unproven for too long.
func (s *Server) reconcile(ctx context.Context, ms *membership, now time.Time) {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := map[string]raft.Server{}
	for _, srv := range f.Configuration().Servers {
		servers[string(srv.ID)] = srv
	}
	var todo []gossip.Member
	for _, m := range s.aliveCoordinators() {
		addr := m.Meta.GetRaftAddr()
		if old, known := servers[m.Name]; known && string(old.Address) == addr {
			delete(ms.refusals, m.Name)
			continue
		}
		if r := ms.refusals[m.Name]; r != nil && r.addrs == m.Meta.GetGrpcAddr()+" "+addr && now.Before(r.next) {
			continue
		}
		todo = append(todo, m)
	}
	errs := make([]error, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelProbes)
	for i, m := range todo {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, errs[i] = s.probe(ctx, m.Name, m.Meta.GetGrpcAddr(), m.Meta.GetRaftAddr())
		}()
	}
	wg.Wait()
	for i, m := range todo {
		addr := m.Meta.GetRaftAddr()
		if err := errs[i]; err != nil {
			s.refuse(ms, now, m, err)
			continue
		}
		delete(ms.refusals, m.Name)
		old, known := servers[m.Name]
		var err error
		if known && old.Suffrage == raft.Voter {
			err = s.addVoter(ctx, m.Name, addr) // its address moved
		} else {
			err = s.addNonvoter(ctx, m.Name, addr)
		}
		if err != nil {
			s.log.Warn("add coordinator found through gossip", "peer", m.Name, "err", err)
			continue
		}
		if known {
			s.log.Info("updated the raft address of a coordinator that proved its certificate", "peer", m.Name, "raft", addr)
		} else {
			s.log.Info("added a coordinator that proved its certificate as a raft non-voter", "peer", m.Name, "raft", addr)
		}
	}
	s.checkNonvoters(ctx, ms, now)
}

// checkNonvoters probes every non-voter, removes those unproven for
// Config.NonvoterTimeout and promotes at most one that has been caught up
// for Config.PromoteStabilization, if the quorum allows it.
func (s *Server) checkNonvoters(ctx context.Context, ms *membership, now time.Time) {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	term, last := s.raft.CurrentTerm(), s.raft.LastIndex()
	var voters []raft.Server
	var ready []raft.Server
	seen := map[string]bool{}
	for _, srv := range f.Configuration().Servers {
		id := string(srv.ID)
		if srv.Suffrage == raft.Voter {
			voters = append(voters, srv)
			continue
		}
		seen[id] = true
		nv := ms.nonvoters[id]
		if nv == nil {
			nv = &nonvoter{lastProven: now}
			ms.nonvoters[id] = nv
		}
		st, err := s.probe(ctx, id, s.peerGRPCAddr(id), string(srv.Address))
		if err != nil {
			nv.healthySince = time.Time{}
			if now.Sub(nv.lastProven) < s.cfg.NonvoterTimeout {
				s.log.Debug("non-voter not proven", "peer", id, "err", err)
				continue
			}
			if err := s.raft.RemoveServer(srv.ID, 0, s.cfg.ApplyTimeout).Error(); err != nil {
				s.log.Warn("remove unproven non-voter", "peer", id, "err", err)
				continue
			}
			delete(ms.nonvoters, id)
			s.log.Warn("removed a raft non-voter that could not prove its coordinator certificate", "peer", id, "for", s.cfg.NonvoterTimeout, "err", err)
			if s.fsm.Store().Coordinator(id) != nil {
				if _, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_PeerRemove{PeerRemove: &hivev1.PeerRemoveCommand{Name: id}}}); err != nil {
					s.log.Warn("forget the removed non-voter's coordinator record", "peer", id, "err", err)
				}
			}
			continue
		}
		nv.lastProven = now
		if !s.caughtUp(st, term, last) {
			nv.healthySince = time.Time{}
			continue
		}
		if nv.healthySince.IsZero() {
			nv.healthySince = now
		}
		if now.Sub(nv.healthySince) >= s.cfg.PromoteStabilization {
			ready = append(ready, srv)
		}
	}
	for id := range ms.nonvoters {
		if !seen[id] {
			delete(ms.nonvoters, id)
		}
	}
	if len(ready) == 0 {
		return
	}
	healthy := 0
	for _, v := range voters {
		if v.ID == raft.ServerID(s.cfg.Name) {
			healthy++
			continue
		}
		if st, err := s.probe(ctx, string(v.ID), s.peerGRPCAddr(string(v.ID)), string(v.Address)); err == nil && s.caughtUp(st, term, last) {
			healthy++
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].ID < ready[j].ID })
	c := ready[0]
	if !canPromote(len(voters), healthy) {
		s.log.Info("a caught-up non-voter waits for promotion: too few healthy voters", "peer", c.ID, "voters", len(voters), "healthy", healthy)
		return
	}
	if err := s.addVoter(ctx, string(c.ID), string(c.Address)); err != nil {
		s.log.Warn("promote non-voter", "peer", c.ID, "err", err)
		return
	}
	delete(ms.nonvoters, string(c.ID))
	s.log.Info("promoted a caught-up non-voter to raft voter", "peer", c.ID, "voters", len(voters)+1)
}

// addNonvoter adds id at addr as a raft non-voter on this server, which
// must lead. Adding a server already present keeps its suffrage.
func (s *Server) addNonvoter(ctx context.Context, id, addr string) error {
	if s.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	timeout := s.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout).Error(); err != nil {
		return fmt.Errorf("add non-voter %s: %w", id, err)
	}
	return nil
}

// proveAndAdd is AddPeer on the leader: it proves id at grpcAddr (the
// member's gossip address when empty) and adds it as a non-voter.
func (s *Server) proveAndAdd(ctx context.Context, id, raftAddr, grpcAddr string) error {
	if s.clientTLS == nil {
		return errNoTLS
	}
	if grpcAddr == "" {
		for _, m := range s.aliveCoordinators() {
			if m.Name == id {
				grpcAddr = m.Meta.GetGrpcAddr()
			}
		}
	}
	if grpcAddr == "" {
		return fmt.Errorf("%w: %s is not an alive coordinator in gossip: give its gRPC address (grpc_address, hivectl peers add --grpc-addr)", ErrUnproven, id)
	}
	if _, err := s.probe(ctx, id, grpcAddr, raftAddr); err != nil {
		return err
	}
	return s.addNonvoter(ctx, id, raftAddr)
}

// raftPeerIDs lists the ids of the raft configuration, for error messages.
func raftPeerIDs(c raft.Configuration) string {
	var ids []string
	for _, srv := range c.Servers {
		ids = append(ids, string(srv.ID))
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

// RaftStats returns this server's raft progress (ClusterService).
func (c *cluster) RaftStats(ctx context.Context, req *hivev1.RaftStatsRequest) (*hivev1.RaftStatsResponse, error) {
	r := c.s.raft
	return &hivev1.RaftStatsResponse{
		Id: c.s.cfg.Name, LastIndex: r.LastIndex(), AppliedIndex: r.AppliedIndex(),
		Term: r.CurrentTerm(), State: raftRole(r.State()), StateIndex: c.s.fsm.Applied(),
	}, nil
}
