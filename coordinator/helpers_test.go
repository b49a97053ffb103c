package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

func testLogger(t testing.TB) *slog.Logger {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

// node is a running test server.
type node struct {
	*Server
	cfg    Config
	cancel context.CancelFunc
	errc   chan error
}

func (n *node) stop(t testing.TB) {
	t.Helper()
	n.cancel()
	select {
	case err := <-n.errc:
		if err != nil {
			t.Errorf("server %s: %v", n.cfg.Name, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("server %s did not stop", n.cfg.Name)
	}
}

// crash stops n like a crash as far as raft is concerned: no leadership
// hand-over (the connections close as the process would close them).
func (n *node) crash(t testing.TB) {
	t.Helper()
	n.noTransfer.Store(true)
	n.stop(t)
}

func startNode(t testing.TB, cfg Config) *node {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("new server %s: %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{Server: s, cfg: cfg, cancel: cancel, errc: make(chan error, 1)}
	go func() { n.errc <- s.Run(ctx) }()
	t.Cleanup(func() {
		select {
		case <-s.Done():
		default:
			n.stop(t)
		}
	})
	return n
}

// startDev starts a --dev server on loopback.
func startDev(t testing.TB) *node {
	t.Helper()
	cfg := DevConfig()
	cfg.DataDir = t.TempDir()
	cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.GossipAddr, cfg.GossipProfile = "127.0.0.1:0", "local"
	cfg.Logger = testLogger(t)
	n := startNode(t, cfg)
	waitReady(t, n)
	return n
}

func waitReady(t testing.TB, ns ...*node) {
	t.Helper()
	for _, n := range ns {
		select {
		case <-n.Ready():
		case <-time.After(20 * time.Second):
			t.Fatalf("server %s not ready", n.cfg.Name)
		}
	}
}

func dialPlain(t testing.TB, addr string) hivev1.CoordinatorServiceClient {
	t.Helper()
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return hivev1.NewCoordinatorServiceClient(c)
}

// tlsCluster is a CA with certificates for servers and clients.
type tlsCluster struct {
	pki   *pkitest.Dir
	files map[string]pkitest.Files
}

func newTLS(t testing.TB) *tlsCluster {
	return &tlsCluster{pki: pkitest.New(t), files: map[string]pkitest.Files{}}
}

func (c *tlsCluster) issue(kind pki.Kind, name string) pkitest.Files {
	f := c.pki.Issue(kind, name)
	c.files[string(kind)+":"+name] = f
	return f
}

// issueAgent makes an agent certificate with bound labels and IP SANs
// (the addresses the agent may report besides its connection's).
func (c *tlsCluster) issueAgent(name string, labels map[string]string, ips ...string) pkitest.Files {
	var nips []net.IP
	for _, ip := range ips {
		nips = append(nips, net.ParseIP(ip))
	}
	f := c.pki.IssueRequest(pki.CertRequest{Identity: pki.Identity{Kind: pki.KindAgent, Name: name}, Labels: labels, IPs: nips})
	c.files[string(pki.KindAgent)+":"+name] = f
	return f
}

func (c *tlsCluster) dial(t testing.TB, addr string, kind pki.Kind, name string) hivev1.CoordinatorServiceClient {
	t.Helper()
	f, ok := c.files[string(kind)+":"+name]
	if !ok {
		f = c.issue(kind, name)
	}
	cfg, err := pki.ClientTLSConfig(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return dialTLS(t, addr, cfg)
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) hivev1.CoordinatorServiceClient {
	return hivev1.NewCoordinatorServiceClient(dialConn(t, addr, cfg))
}

func dialConn(t testing.TB, addr string, cfg *tls.Config) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// dialAgentConn dials addr with a new agent certificate for node, as the
// node's agent would.
func (tc *tlsCluster) dialAgentConn(t testing.TB, addr, node string) *grpc.ClientConn {
	t.Helper()
	files := tc.issue(pki.KindAgent, node)
	cfg, err := pki.ClientTLSConfig(files.CA, files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	return dialConn(t, addr, cfg)
}

// clusterOpts tune newCluster.
type clusterOpts struct {
	snapshotThreshold uint64
	trailingLogs      uint64
	// ownKeyrings: each server creates its own keyring (as when nobody
	// distributed a keyring file).
	ownKeyrings bool
}

// newCluster starts n TLS servers bootstrapped together, with one shared
// keyring, raft on disk in temp dirs.
func newCluster(t testing.TB, n int, o clusterOpts) ([]*node, *tlsCluster) {
	t.Helper()
	cfgs, tc := clusterConfigs(t, n, o)
	return startCluster(t, cfgs), tc
}

// startCluster starts servers of cfgs as one cluster.
func startCluster(t testing.TB, cfgs []Config) []*node {
	t.Helper()
	// The first server bootstraps alone; the others join it as voters,
	// as an operator adds servers (AddPeer). A leadership change on a
	// loaded machine is retried (addVoter).
	var nodes []*node
	cfgs[0].BootstrapExpect = 1
	nodes = append(nodes, startNode(t, cfgs[0]))
	waitReady(t, nodes[0])
	for _, cfg := range cfgs[1:] {
		n := startNode(t, cfg)
		addVoter(t, nodes, n)
		nodes = append(nodes, n)
	}
	waitReady(t, nodes...)
	return nodes
}

// addVoter adds n as a voter through the current leader of nodes,
// retrying after leadership changes.
func addVoter(t testing.TB, nodes []*node, n *node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		err := leader(t, nodes).addVoter(ctx, n.cfg.Name, n.RaftAddr())
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("add voter %s: %v", n.cfg.Name, err)
		}
		t.Logf("add voter %s: %v; retrying", n.cfg.Name, err)
	}
}

// clusterConfigs returns the configurations of n TLS servers c1..cn (not
// started) sharing one keyring.
func clusterConfigs(t testing.TB, n int, o clusterOpts) ([]Config, *tlsCluster) {
	t.Helper()
	tc := newTLS(t)
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	krFile := filepath.Join(t.TempDir(), "keyring.json")
	if err := kr.Save(krFile); err != nil {
		t.Fatal(err)
	}
	var cfgs []Config
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("c%d", i+1)
		f := tc.issue(pki.KindCoordinator, name)
		cfg := DefaultConfig()
		cfg.Name = name
		cfg.DataDir = t.TempDir()
		cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.GossipAddr, cfg.GossipProfile = "127.0.0.1:0", "local"
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = f.CA, f.Cert, f.Key
		cfg.KeyringFile = krFile
		if o.ownKeyrings {
			cfg.KeyringFile = ""
		}
		cfg.Logger = testLogger(t).With("node", name)
		if o.snapshotThreshold > 0 {
			cfg.SnapshotThreshold = o.snapshotThreshold
			cfg.SnapshotInterval = 100 * time.Millisecond
		}
		if o.trailingLogs > 0 {
			cfg.TrailingLogs = o.trailingLogs
		}
		cfg.ReconcileInterval, cfg.PromoteStabilization = 200*time.Millisecond, time.Second
		cfgs = append(cfgs, cfg)
	}
	return cfgs, tc
}

// leader waits for a leader among nodes and returns it.
func leader(t testing.TB, nodes []*node) *node {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			select {
			case <-n.Done():
				continue
			default:
			}
			if n.IsLeader() {
				// The leader must have recorded its address for forwarding.
				if rec := n.fsm.Store().Coordinator(n.cfg.Name); rec != nil {
					return n
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

func followers(nodes []*node, l *node) []*node {
	var out []*node
	for _, n := range nodes {
		if n != l {
			out = append(out, n)
		}
	}
	return out
}

// waitFor polls cond until it is true or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testSite returns a small site: role web (package, file with a secret,
// firewall from role lb), role lb, role db (drbd between db nodes), swarm
// roles; selectors by label.
func testSite(version string) *hivev1.Site {
	return &hivev1.Site{
		Name: "test",
		Roles: []*hivev1.Role{
			{Name: "db", Resources: []*hivev1.Resource{
				{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0", Minor: 0, Disk: "/dev/vdb", Port: 7789, PeerRole: "db"}}},
			}},
			{Name: "lb", Resources: []*hivev1.Resource{
				{Key: "package:haproxy", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "haproxy", State: hivev1.PackageState_PACKAGE_STATE_PRESENT}}},
			}},
			{Name: "web", Resources: []*hivev1.Resource{
				{Key: "package:nginx", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx", State: hivev1.PackageState_PACKAGE_STATE_PRESENT, Version: version}}},
				{Key: "file:/etc/app.conf", Requires: []string{"package:nginx"}, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/app.conf", State: hivev1.FileState_FILE_STATE_FILE, Content: "key={{ secret \"api-key\" }}\n", Template: true, Secrets: []string{"api-key"}}}},
				{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{Rules: []*hivev1.FirewallRule{
					{Chain: "input", Protocol: "tcp", Ports: []string{"80"}, SourceRoles: []string{"lb"}, Action: hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT},
				}}}},
			}},
		},
		Selectors: []*hivev1.Selector{
			{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}},
			{MatchLabels: map[string]string{"tier": "lb"}, Roles: []string{"lb"}},
			{Names: []string{"db-*"}, Roles: []string{"db"}},
		},
		Secrets: []string{"api-key"},
	}
}
