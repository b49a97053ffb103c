package coordinator

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

var testGossipKey = []byte("0123456789abcdef0123456789abcdef")

// fastMembership makes promotion quick enough for tests.
func fastMembership(cfg *Config) {
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.PromoteStabilization = 500 * time.Millisecond
}

// gossipCluster starts n TLS servers sharing a gossip key: the first
// bootstraps alone, the others only --join it and become voters through
// the leader's proof, non-voter and promotion path.
func gossipCluster(t *testing.T, n int) ([]*node, *tlsCluster, []Config) {
	t.Helper()
	cfgs, tc := clusterConfigs(t, n+1, clusterOpts{})
	for i := range cfgs {
		cfgs[i].GossipKey = testGossipKey
		fastMembership(&cfgs[i])
	}
	cfgs[0].BootstrapExpect = 1
	first := startNode(t, cfgs[0])
	waitReady(t, first)
	nodes := []*node{first}
	for i := 1; i < n; i++ {
		cfgs[i].Join = []string{first.GossipAddr()}
		nodes = append(nodes, startNode(t, cfgs[i]))
	}
	waitVoters(t, nodes, names(nodes)...)
	waitReady(t, nodes...)
	cfgs[n].Join = []string{first.GossipAddr()}
	return nodes, tc, cfgs
}

func names(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.cfg.Name)
	}
	return out
}

// raftServers returns the leader's raft configuration as "id=voter|nonvoter".
func raftServers(t testing.TB, nodes []*node) map[string]raft.ServerSuffrage {
	t.Helper()
	f := leader(t, nodes).raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	out := map[string]raft.ServerSuffrage{}
	for _, s := range f.Configuration().Servers {
		out[string(s.ID)] = s.Suffrage
	}
	return out
}

// waitVoters waits until the raft configuration is exactly want, all
// voters.
func waitVoters(t testing.TB, nodes []*node, want ...string) {
	t.Helper()
	waitFor(t, 40*time.Second, fmt.Sprintf("raft voters %v", want), func() bool {
		got := raftServers(t, nodes)
		if len(got) != len(want) {
			return false
		}
		for _, w := range want {
			if got[w] != raft.Voter {
				return false
			}
		}
		return true
	})
}

// fakeMember joins gossip with the key only and claims to be a coordinator
// named name, advertising grpcAddr and a raft address (a listener that
// accepts and says nothing, like an attacker's).
func fakeMember(t *testing.T, name, join, grpcAddr string, expect uint32) {
	t.Helper()
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raftLn.Close() })
	go func() {
		for {
			c, err := raftLn.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if grpcAddr == "" {
		grpcAddr = raftLn.Addr().String() // no TLS server behind it
	}
	gc := gossip.DefaultConfig()
	gc.Name, gc.BindAddr, gc.Join, gc.Key, gc.Profile = name, "127.0.0.1:0", []string{join}, testGossipKey, gossip.ProfileLocal
	gc.Meta = &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, GrpcAddr: grpcAddr, RaftAddr: raftLn.Addr().String(), BootstrapExpect: expect}
	g, err := gossip.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// agentTLSServer serves ClusterService.RaftStats over TLS with an agent
// certificate of the site's CA, answering as name.
func agentTLSServer(t *testing.T, tc *tlsCluster, name string) string {
	t.Helper()
	f := tc.issue(pki.KindAgent, name)
	cfg, err := pki.ServerTLSConfig(f.CA, f.Cert, f.Key, pki.AllowNoClientCert())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	hivev1.RegisterClusterServiceServer(g, &liar{id: name})
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// liar answers RaftStats as a caught-up server named id.
type liar struct {
	hivev1.UnimplementedClusterServiceServer
	id string
}

func (l *liar) RaftStats(context.Context, *hivev1.RaftStatsRequest) (*hivev1.RaftStatsResponse, error) {
	return &hivev1.RaftStatsResponse{Id: l.id, LastIndex: 1 << 40, Term: 1 << 40}, nil
}

// waitSeen waits until the leader's gossip shows every named member alive
// as a coordinator, then for five more reconcile rounds of the leader (each
// probes every unknown coordinator member).
func waitSeen(t *testing.T, nodes []*node, fakes ...string) {
	t.Helper()
	l := leader(t, nodes)
	waitFor(t, 20*time.Second, fmt.Sprintf("%s to see %v in gossip", l.cfg.Name, fakes), func() bool {
		alive := map[string]bool{}
		for _, m := range l.aliveCoordinators() {
			alive[m.Name] = true
		}
		for _, f := range fakes {
			if !alive[f] {
				return false
			}
		}
		return true
	})
	r := l.reconcileRounds.Load()
	waitFor(t, 30*time.Second, "five reconcile rounds", func() bool { return l.reconcileRounds.Load() >= r+5 })
}

// checkTakesPushes pushes through every server.
func checkTakesPushes(t *testing.T, nodes []*node, tc *tlsCluster) {
	t.Helper()
	for i, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice").Push(ctx, &hivev1.PushRequest{Site: testSite(fmt.Sprint(i + 10)), Force: true})
		cancel()
		if err != nil {
			t.Fatalf("push through %s: %v", n.cfg.Name, err)
		}
	}
}

// TestGossipKeyAloneNeverMakesAVoter (issue 11, finding 1): processes that
// hold only the gossip key and advertise kind=COORDINATOR with a raft
// address, one serving TLS with an agent certificate, and one pointing its
// gRPC address at a real coordinator, never enter the raft configuration;
// the cluster keeps its leader and takes pushes. Before the fix the leader
// added each as a voter: one fake cost a one-server cluster its leader,
// three a three-server cluster.
func TestGossipKeyAloneNeverMakesAVoter(t *testing.T) {
	for _, tt := range []struct {
		servers int
		fakes   func(t *testing.T, nodes []*node, tc *tlsCluster, join string) []string
	}{
		{1, func(t *testing.T, nodes []*node, tc *tlsCluster, join string) []string {
			fakeMember(t, "evil-1", join, "", 0)
			return []string{"evil-1"}
		}},
		{3, func(t *testing.T, nodes []*node, tc *tlsCluster, join string) []string {
			for i := 1; i <= 3; i++ {
				fakeMember(t, fmt.Sprintf("evil-%d", i), join, "", 0)
			}
			return []string{"evil-1", "evil-2", "evil-3"}
		}},
		{1, func(t *testing.T, nodes []*node, tc *tlsCluster, join string) []string {
			fakeMember(t, "web-1", join, agentTLSServer(t, tc, "web-1"), 0)
			return []string{"web-1"}
		}},
		{3, func(t *testing.T, nodes []*node, tc *tlsCluster, join string) []string {
			// A real coordinator's gRPC address: it proves coordinator:c1,
			// not the fake's name.
			fakeMember(t, "evil-borrow", join, nodes[0].GRPCAddr(), 0)
			return []string{"evil-borrow"}
		}},
	} {
		t.Run(fmt.Sprint(tt.servers, "servers"), func(t *testing.T) {
			nodes, tc, _ := gossipCluster(t, tt.servers)
			before := names(nodes)
			fakes := tt.fakes(t, nodes, tc, nodes[0].GossipAddr())
			waitSeen(t, nodes, fakes...)
			got := raftServers(t, nodes)
			for _, f := range fakes {
				if _, ok := got[f]; ok {
					t.Fatalf("fake member %s entered the raft configuration: %v", f, got)
				}
			}
			if len(got) != len(before) {
				t.Fatalf("raft configuration = %v; want only %v", got, before)
			}
			checkTakesPushes(t, nodes, tc)
		})
	}
}

// TestCoordinatorCertNameMustMatchGossipName: a real coordinator whose
// certificate names coordinator:c9 but which gossips as c5 is refused; a
// coordinator certificate of the site is not a pass for any name.
func TestCoordinatorCertNameMustMatchGossipName(t *testing.T) {
	nodes, tc, cfgs := gossipCluster(t, 1)
	cfg := cfgs[1]
	cfg.Name = "c5"
	f := tc.issue(pki.KindCoordinator, "c9")
	cfg.TLSCert, cfg.TLSKey = f.Cert, f.Key
	c5 := startNode(t, cfg)
	waitSeen(t, nodes, "c5")
	if got := raftServers(t, nodes); len(got) != 1 {
		t.Fatalf("raft configuration = %v; want c1 only", got)
	}
	_, err := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice").AddPeer(context.Background(), &hivev1.AddPeerRequest{Id: "c5", Address: c5.RaftAddr()})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "coordinator:c9, not coordinator:c5") {
		t.Fatalf("AddPeer c5 with a coordinator:c9 certificate = %v; want FailedPrecondition naming both", err)
	}
	checkTakesPushes(t, nodes, tc)
}

// TestNewCoordinatorJoinsAsNonvoterThenVoter: a real new coordinator with
// a proper certificate, started with --join only, is added as a non-voter
// and promoted once it caught up.
func TestNewCoordinatorJoinsAsNonvoterThenVoter(t *testing.T) {
	nodes, tc, cfgs := gossipCluster(t, 3)
	checkTakesPushes(t, nodes, tc)
	start := time.Now()
	c4 := startNode(t, cfgs[3])
	waitFor(t, 20*time.Second, "c4 to be a non-voter", func() bool { return raftServers(t, nodes)["c4"] == raft.Nonvoter })
	nonvoter := time.Since(start)
	all := append(nodes, c4)
	waitVoters(t, all, "c1", "c2", "c3", "c4")
	t.Logf("c4: non-voter %v after start, voter %v after start (stabilization %v)", nonvoter.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), cfgs[3].PromoteStabilization)
	l := leader(t, all)
	if c4.raft.LastIndex()+l.cfg.PromoteMaxLag < l.raft.LastIndex() {
		t.Fatalf("c4 promoted at index %d, leader at %d", c4.raft.LastIndex(), l.raft.LastIndex())
	}
	checkTakesPushes(t, all, tc)
}

// TestAddPeerProvesAndAddsNonvoter: AddPeer of a bare address is refused
// (FailedPrecondition), also for a coordinator caller; AddPeer of a real
// coordinator that is not in gossip, with its gRPC address, adds it as a
// non-voter that the leader then promotes.
func TestAddPeerProvesAndAddsNonvoter(t *testing.T) {
	cfgs, tc := clusterConfigs(t, 2, clusterOpts{})
	for i := range cfgs {
		fastMembership(&cfgs[i])
	}
	nodes := startCluster(t, cfgs[:1])
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	peerCli := tc.dial(t, nodes[0].GRPCAddr(), pki.KindCoordinator, "c1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []hivev1.CoordinatorServiceClient{admin, peerCli} {
		_, err := c.AddPeer(ctx, &hivev1.AddPeerRequest{Id: "evil", Address: "127.0.0.1:1"})
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("AddPeer of an unknown server = %v; want FailedPrecondition", err)
		}
	}
	c2 := startNode(t, cfgs[1])
	if _, err := admin.AddPeer(ctx, &hivev1.AddPeerRequest{Id: "c2", Address: c2.RaftAddr(), GrpcAddress: c2.GRPCAddr()}); err != nil {
		t.Fatalf("AddPeer c2: %v", err)
	}
	if got := raftServers(t, nodes)["c2"]; got != raft.Nonvoter {
		t.Fatalf("c2 after AddPeer is %v; want a non-voter", got)
	}
	waitVoters(t, append(nodes, c2), "c1", "c2")
}

// TestRemovePeerUnknownID (issue 11, finding 12): removing an id that is
// not in the raft configuration is NotFound naming the peers, through the
// leader and through a follower; before the fix it answered success.
func TestRemovePeerUnknownID(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	for _, n := range []*node{l, followers(nodes, l)[0]} {
		_, err := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice").RemovePeer(context.Background(), &hivev1.RemovePeerRequest{Id: "c7"})
		if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "peers: c1, c2, c3") {
			t.Fatalf("RemovePeer c7 through %s = %v; want NotFound listing c1, c2, c3", n.cfg.Name, err)
		}
	}
	if got := raftServers(t, nodes); len(got) != 3 {
		t.Fatalf("raft configuration = %v", got)
	}
}

// TestBootstrapIgnoresUnprovenCandidate: a fake gossip member with the
// matching bootstrap expectation and the lowest name does not enter the
// bootstrap set; the three real servers bootstrap together.
func TestBootstrapIgnoresUnprovenCandidate(t *testing.T) {
	cfgs, tc := clusterConfigs(t, 3, clusterOpts{})
	for i := range cfgs {
		cfgs[i].GossipKey, cfgs[i].BootstrapExpect = testGossipKey, 3
		fastMembership(&cfgs[i])
	}
	first := startNode(t, cfgs[0])
	fakeMember(t, "a0", first.GossipAddr(), "", 3)
	waitFor(t, 20*time.Second, "c1 to see a0", func() bool { return len(first.aliveCoordinators()) == 2 })
	nodes := []*node{first}
	for _, cfg := range cfgs[1:] {
		cfg.Join = []string{first.GossipAddr()}
		nodes = append(nodes, startNode(t, cfg))
	}
	waitReady(t, nodes...)
	got := raftServers(t, nodes)
	ids := make([]string, 0, len(got))
	for id := range got {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if strings.Join(ids, ",") != "c1,c2,c3" {
		t.Fatalf("bootstrapped raft configuration = %v; want c1, c2, c3", ids)
	}
	checkTakesPushes(t, nodes, tc)
}

// TestCanPromote: a promotion needs the healthy voters and the new one to
// make the quorum of the larger configuration.
func TestCanPromote(t *testing.T) {
	for _, tt := range []struct {
		voters, healthy int
		want            bool
	}{
		{1, 1, true}, {2, 2, true}, {2, 1, true}, {3, 3, true}, {3, 2, true},
		{3, 1, false}, {4, 1, false}, {4, 3, true}, {5, 3, true}, {5, 2, false},
	} {
		if got := canPromote(tt.voters, tt.healthy); got != tt.want {
			t.Errorf("canPromote(%d voters, %d healthy) = %v; want %v", tt.voters, tt.healthy, got, tt.want)
		}
	}
}

// TestCheckPeerCert: the certificate must name coordinator:NAME and cover
// the host of every advertised address.
func TestCheckPeerCert(t *testing.T) {
	tc := newTLS(t)
	issue := func(kind pki.Kind, name string, ips ...net.IP) *pki.Issued {
		iss, err := tc.pki.CA.Issue(pki.CertRequest{Identity: pki.Identity{Kind: kind, Name: name}, IPs: ips, NoDefaultSANs: true})
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	c1 := issue(pki.KindCoordinator, "c1", net.ParseIP("10.0.0.1"))
	agent := issue(pki.KindAgent, "c1")
	for _, tt := range []struct {
		name  string
		cert  *pki.Issued
		as    string
		addrs []string
		want  string
	}{
		{"match", c1, "c1", []string{"10.0.0.1:7400", "10.0.0.1:7401"}, ""},
		{"other name", c1, "c2", []string{"10.0.0.1:7401"}, "presented coordinator:c1, not coordinator:c2"},
		{"agent", agent, "c1", []string{"10.0.0.1:7401"}, "presented agent:c1"},
		{"raft host not covered", c1, "c1", []string{"10.0.0.1:7400", "10.0.0.9:7401"}, "does not cover 10.0.0.9"},
		{"no port", c1, "c1", []string{"10.0.0.1"}, "address \"10.0.0.1\""},
	} {
		err := checkPeerCert(tt.cert.Cert, tt.as, tt.addrs...)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: checkPeerCert = %v; want %q", tt.name, err, tt.want)
		}
	}
}

// TestNonvoterThatStopsProvingIsRemoved: a non-voter that cannot be probed
// for NonvoterTimeout (here: it stopped) is removed by the leader; a voter
// that stops is never removed.
func TestNonvoterThatStopsProvingIsRemoved(t *testing.T) {
	cfgs, tc := clusterConfigs(t, 4, clusterOpts{})
	for i := range cfgs {
		cfgs[i].PromoteStabilization = time.Hour // c4 stays a non-voter
		cfgs[i].ReconcileInterval, cfgs[i].NonvoterTimeout = 100*time.Millisecond, time.Second
	}
	nodes := startCluster(t, cfgs[:3]) // voters added directly (addVoter)
	l := leader(t, nodes)
	c4 := startNode(t, cfgs[3])
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	if _, err := admin.AddPeer(context.Background(), &hivev1.AddPeerRequest{Id: "c4", Address: c4.RaftAddr(), GrpcAddress: c4.GRPCAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "c4 to record its addresses", func() bool { return l.fsm.Store().Coordinator("c4") != nil })
	c4.crash(t)
	waitFor(t, 20*time.Second, "the leader to remove the stopped non-voter c4 and its record", func() bool {
		_, ok := raftServers(t, nodes)["c4"]
		return !ok && l.fsm.Store().Coordinator("c4") == nil
	})
	followers(nodes, l)[0].crash(t)
	r := l.reconcileRounds.Load()
	waitFor(t, 20*time.Second, "20 reconcile rounds", func() bool { return l.reconcileRounds.Load() >= r+20 })
	if got := raftServers(t, nodes); len(got) != 3 {
		t.Fatalf("configuration after a voter stopped = %v; want the three voters kept", got)
	}
}

// TestDevRefusesMembershipChanges: --dev without TLS cannot prove anyone,
// so AddPeer is refused and gossip never changes the raft configuration.
func TestDevRefusesMembershipChanges(t *testing.T) {
	n := startDev(t)
	_, err := dialPlain(t, n.GRPCAddr()).AddPeer(context.Background(), &hivev1.AddPeerRequest{Id: "c2", Address: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "need TLS") {
		t.Fatalf("AddPeer in --dev = %v; want FailedPrecondition (needs TLS)", err)
	}
	if f := n.raft.GetConfiguration(); f.Error() != nil || len(f.Configuration().Servers) != 1 {
		t.Fatalf("dev raft configuration = %v", f.Configuration())
	}
}

// TestFakeCannotTakeOverADepartedVoter: once voter c3 has left gossip, a
// process holding only the gossip key that gossips as c3 with its own raft
// address does not move c3's raft address to itself (before, the leader
// "updated the address of a known server that moved").
func TestFakeCannotTakeOverADepartedVoter(t *testing.T) {
	nodes, tc, _ := gossipCluster(t, 3)
	var c3 *node
	for _, n := range nodes {
		if n.cfg.Name == "c3" {
			c3 = n
		}
	}
	addr := c3.RaftAddr()
	live := []*node{nodes[0], nodes[1]}
	c3.stop(t)
	waitFor(t, 20*time.Second, "c3 to leave gossip", func() bool {
		for _, m := range leader(t, live).aliveCoordinators() {
			if m.Name == "c3" {
				return false
			}
		}
		return true
	})
	fakeMember(t, "c3", nodes[0].GossipAddr(), "", 0)
	waitSeen(t, live, "c3")
	f := leader(t, live).raft.GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == "c3" && string(s.Address) != addr {
			t.Fatalf("c3's raft address moved to the fake's %s (was %s)", s.Address, addr)
		}
	}
	checkTakesPushes(t, live, tc)
}

// TestRefuseBacksOff: an unproven gossip member is probed again after a
// doubling backoff capped at a minute; new addresses start afresh.
func TestRefuseBacksOff(t *testing.T) {
	s := &Server{cfg: Config{ReconcileInterval: time.Second}, log: testLogger(t)}
	ms := &membership{refusals: map[string]*refusal{}}
	m := gossip.Member{Name: "x", Meta: &hivev1.MemberMeta{GrpcAddr: "10.0.0.9:7400", RaftAddr: "10.0.0.9:7401"}}
	now := time.Unix(1000, 0)
	var got []time.Duration
	for i := 0; i < 8; i++ {
		s.refuse(ms, now, m, ErrUnproven)
		got = append(got, ms.refusals["x"].next.Sub(now))
	}
	if fmt.Sprint(got) != "[1s 2s 4s 8s 16s 32s 1m0s 1m0s]" {
		t.Fatalf("backoffs = %v", got)
	}
	m.Meta.RaftAddr = "10.0.0.9:7411"
	s.refuse(ms, now, m, ErrUnproven)
	if d := ms.refusals["x"].next.Sub(now); d != time.Second {
		t.Fatalf("backoff after new addresses = %v; want 1s", d)
	}
}

// TestRaftStatsCoordinatorsOnly: RaftStats answers coordinator
// certificates only.
func TestRaftStatsCoordinatorsOnly(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	addr := nodes[0].GRPCAddr()
	for _, tt := range []struct {
		kind pki.Kind
		want codes.Code
	}{{pki.KindCoordinator, codes.OK}, {pki.KindAdmin, codes.PermissionDenied}, {pki.KindAgent, codes.PermissionDenied}} {
		f := tc.issue(tt.kind, "x-"+string(tt.kind))
		cfg, err := pki.ClientTLSConfig(f.CA, f.Cert, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hivev1.NewClusterServiceClient(dialConn(t, addr, cfg)).RaftStats(context.Background(), &hivev1.RaftStatsRequest{})
		if status.Code(err) != tt.want {
			t.Fatalf("RaftStats as %s = %v; want %v", tt.kind, err, tt.want)
		}
		if err == nil && (resp.GetId() != "c1" || resp.GetTerm() == 0 || resp.GetLastIndex() == 0 || resp.GetState() != hivev1.RaftRole_RAFT_ROLE_LEADER) {
			t.Fatalf("RaftStats = %v", resp)
		}
	}
}
