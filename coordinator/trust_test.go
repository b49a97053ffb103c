package coordinator

import (
	"context"
	"crypto/tls"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// trustSite: role web for tier=web, role db for tier=db with the
// db-password secret and a firewall accepting 5432 from role web.
func trustSite() *hivev1.Site {
	return &hivev1.Site{
		Name: "trust",
		Roles: []*hivev1.Role{
			{Name: "web", Resources: []*hivev1.Resource{
				{Key: "package:nginx", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx", State: hivev1.PackageState_PACKAGE_STATE_PRESENT}}},
			}},
			{Name: "db", Resources: []*hivev1.Resource{
				{Key: "file:/etc/db.conf", Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/db.conf", State: hivev1.FileState_FILE_STATE_FILE, Content: "pw={{ secret \"db-password\" }}\n", Template: true, Secrets: []string{"db-password"}}}},
				{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{Rules: []*hivev1.FirewallRule{
					{Chain: "input", Protocol: "tcp", Ports: []string{"5432"}, SourceRoles: []string{"web"}, Action: hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT},
				}}}},
			}},
		},
		Selectors: []*hivev1.Selector{
			{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}},
			{MatchLabels: map[string]string{"tier": "db"}, Roles: []string{"db"}},
		},
		Secrets: []string{"db-password"},
	}
}

// trustCluster is one TLS coordinator that can sign (--tls-ca-key), with
// trustSite pushed and db-password set.
func trustCluster(t *testing.T) (*node, *tlsCluster, hivev1.CoordinatorServiceClient) {
	t.Helper()
	cfgs, tc := clusterConfigs(t, 1, clusterOpts{})
	cfgs[0].TLSCAKey = filepath.Join(tc.pki.Dir, pki.CAKeyFile)
	n := startCluster(t, cfgs)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice")
	pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: trustSite()})
	if _, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "db-password", Value: []byte("s3cret")}); err != nil {
		t.Fatal(err)
	}
	return n, tc, admin
}

// TestWatchReportedLabelsAreFacts (finding 2): an agent certificate for
// web-1 bound to tier=web, watching with labels {tier: db}, gets the web
// role only, no db-password, and db's firewall does not admit it as db;
// the reported label is kept as a fact. Before: the watch's labels chose
// the roles and web-1 received the db role and db-password.
func TestWatchReportedLabelsAreFacts(t *testing.T) {
	n, tc, admin := trustCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc.issueAgent("web-1", map[string]string{"tier": "web"})
	agent := tc.dial(t, n.GRPCAddr(), pki.KindAgent, "web-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "db"}, Addresses: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	st := m.GetState()
	if slices.Contains(st.GetFacts().GetRoles(), "db") || !slices.Contains(st.GetFacts().GetRoles(), "web") {
		t.Fatalf("roles = %v, want [web]", st.GetFacts().GetRoles())
	}
	if _, ok := st.GetSecrets()["db-password"]; ok {
		t.Fatal("web-1 received db-password by reporting tier=db")
	}
	if st.GetFacts().GetLabels()["tier"] != "web" || st.GetFacts().GetReportedLabels()["tier"] != "db" {
		t.Fatalf("facts: labels %v reported %v", st.GetFacts().GetLabels(), st.GetFacts().GetReportedLabels())
	}
	s, err := admin.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	ns := s.GetNodes()[0]
	if ns.GetLabels()["tier"] != "web" || ns.GetLabelSources()["tier"] != "certificate" || ns.GetReportedLabels()["tier"] != "db" || ns.GetCertificateSerial() == "" {
		t.Fatalf("status: %v", ns)
	}

	// An operator label changes the roles (and overrides the certificate).
	lr, err := admin.LabelNode(ctx, &hivev1.LabelNodeRequest{Node: "web-1", Set: map[string]string{"tier": "db"}})
	if err != nil {
		t.Fatal(err)
	}
	if lr.GetLabelSources()["tier"] != "operator" || !slices.Contains(lr.GetRoles(), "db") {
		t.Fatalf("label node: %v", lr)
	}
	for {
		m, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(m.GetState().GetFacts().GetRoles(), "db") {
			break
		}
	}
	_, err = admin.LabelNode(ctx, &hivev1.LabelNodeRequest{Node: "nope", Set: map[string]string{"tier": "db"}})
	wantCode(t, "label an unknown node", err, codes.NotFound)
	_, err = admin.LabelNode(ctx, &hivev1.LabelNodeRequest{Node: "web-1", Set: map[string]string{"tier": "a\nb"}})
	wantCode(t, "label value with a newline", err, codes.InvalidArgument, `\n`)
	_, err = agent.LabelNode(ctx, &hivev1.LabelNodeRequest{Node: "web-1", Set: map[string]string{"tier": "db"}})
	wantCode(t, "an agent labelling itself", err, codes.PermissionDenied)
}

// TestWatchRefusesBadInput (finding 2): addresses that are not one unicast
// IP (0.0.0.0/0, a newline, the unspecified address), addresses the agent
// cannot vouch for, and out-of-charset labels or versions are refused with
// InvalidArgument/PermissionDenied naming the field, before anything
// reaches raft. Before: 0.0.0.0/0 widened another node's from_roles rule
// to anywhere, and a newline was injected through .Peers.
func TestWatchRefusesBadInput(t *testing.T) {
	n, tc, _ := trustCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc.issueAgent("web-1", map[string]string{"tier": "web"}, "10.0.0.7")
	agent := tc.dial(t, n.GRPCAddr(), pki.KindAgent, "web-1")
	index := n.fsm.Store().Index()
	for _, c := range []struct {
		name     string
		req      *hivev1.WatchNodeStateRequest
		code     codes.Code
		contains []string
	}{
		{"cidr", &hivev1.WatchNodeStateRequest{Addresses: []string{"0.0.0.0/0"}}, codes.InvalidArgument, []string{"addresses[0]", `"0.0.0.0/0"`}},
		{"newline", &hivev1.WatchNodeStateRequest{Addresses: []string{"10.0.0.7\n  - 0.0.0.0/0"}}, codes.InvalidArgument, []string{"addresses[0]", `\n`}},
		{"unspecified", &hivev1.WatchNodeStateRequest{Addresses: []string{"0.0.0.0"}}, codes.InvalidArgument, []string{"unspecified"}},
		{"multicast", &hivev1.WatchNodeStateRequest{Addresses: []string{"224.0.0.1"}}, codes.InvalidArgument, []string{"multicast"}},
		{"too many", &hivev1.WatchNodeStateRequest{Addresses: slices.Repeat([]string{"10.0.0.7"}, MaxNodeAddresses+1)}, codes.InvalidArgument, []string{"limit is 16"}},
		{"not its own", &hivev1.WatchNodeStateRequest{Addresses: []string{"10.9.9.9"}}, codes.PermissionDenied, []string{"addresses[0]", "10.9.9.9"}},
		{"label value", &hivev1.WatchNodeStateRequest{Labels: map[string]string{"rack": "a\nb"}}, codes.InvalidArgument, []string{"labels", `\n`}},
		{"label key", &hivev1.WatchNodeStateRequest{Labels: map[string]string{"a b": "x"}}, codes.InvalidArgument, []string{"labels"}},
		{"version", &hivev1.WatchNodeStateRequest{AgentVersion: "1.0\nX"}, codes.InvalidArgument, []string{"agent_version", `\n`}},
		{"long version", &hivev1.WatchNodeStateRequest{AgentVersion: strings.Repeat("1", MaxAgentVersionLen+1)}, codes.InvalidArgument, []string{"agent_version", "limit is 64"}},
	} {
		c.req.Node = "web-1"
		w, err := agent.WatchNodeState(ctx, c.req)
		if err == nil {
			_, err = w.Recv()
		}
		wantCode(t, c.name, err, c.code, c.contains...)
	}
	if got := n.fsm.Store().Index(); got != index || n.fsm.Store().Node("web-1") != nil {
		t.Fatalf("refused watches wrote to raft: index %d -> %d", index, got)
	}
	// Its certificate's IP and its connection's address are accepted.
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Addresses: []string{"10.0.0.7", "127.0.0.1"}})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// noCertClient dials like a new node: the site's CA, no certificate.
func noCertClient(t *testing.T, tc *tlsCluster, addr string) hivev1.CoordinatorServiceClient {
	pool, err := pki.LoadCertPool(tc.pki.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	return dialTLS(t, addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13})
}

// TestBootstrapTokens (findings 5, 6): tokens are bound to a name (or a
// pattern) and labels; an unknown token writes nothing to raft; a token
// for x cannot mint y, nor a registered node or a coordinator without
// --replace; a 136-year TTL is refused; the minted certificate carries the
// token's labels.
func TestBootstrapTokens(t *testing.T) {
	n, tc, admin := trustCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	anon := noCertClient(t, tc, n.GRPCAddr())
	csr := func(node string) []byte {
		c, _, err := pki.CreateAgentCSR(node)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	_, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{})
	wantCode(t, "token without a node", err, codes.InvalidArgument, "--node")
	_, err = admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "x", TtlSeconds: 136 * 365 * 24 * 3600})
	wantCode(t, "136-year ttl", err, codes.InvalidArgument, "cap of 604800")
	_, err = admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{NodePattern: "*"})
	wantCode(t, "pattern matching anything", err, codes.InvalidArgument, "any name")
	_, err = admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "c1"})
	wantCode(t, "token for a coordinator", err, codes.FailedPrecondition, "coordinator")
	_, err = admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "alice"})
	wantCode(t, "token for the admin's own name", err, codes.FailedPrecondition, "admin")

	// Unknown token: refused, nothing signed, nothing written.
	index := n.fsm.Store().Index()
	_, err = anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: "0000", Node: "x", Csr: csr("x")})
	wantCode(t, "unknown token", err, codes.NotFound)
	if got := n.fsm.Store().Index(); got != index {
		t.Fatalf("unknown token wrote to raft: index %d -> %d", index, got)
	}

	tok, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "x", Labels: map[string]string{"tier": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	index = n.fsm.Store().Index()
	_, err = anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: tok.GetToken(), Node: "y", Csr: csr("y")})
	wantCode(t, "token for x minting y", err, codes.PermissionDenied, `"x"`)
	if got := n.fsm.Store().Index(); got != index {
		t.Fatalf("wrong-node redemption wrote to raft: index %d -> %d", index, got)
	}
	resp, err := anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: tok.GetToken(), Node: "x", Csr: csr("x")})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(resp.GetCertificate())
	if err != nil {
		t.Fatal(err)
	}
	if l, err := pki.LabelsFromCert(certs[0]); err != nil || l["tier"] != "web" {
		t.Fatalf("minted certificate labels = %v, %v", l, err)
	}

	// A registered node: no token without --replace, and a pattern token
	// cannot mint it either.
	tc.issueAgent("web-1", map[string]string{"tier": "web"})
	w, err := tc.dial(t, n.GRPCAddr(), pki.KindAgent, "web-1").WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1"})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "web-1"})
	wantCode(t, "token for a registered node", err, codes.FailedPrecondition, "--replace")
	pat, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{NodePattern: "web-*"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: pat.GetToken(), Node: "web-1", Csr: csr("web-1")})
	wantCode(t, "pattern token for a registered node", err, codes.PermissionDenied, "--replace")
	_, err = anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: pat.GetToken(), Node: "c1", Csr: csr("c1")})
	wantCode(t, "pattern token for another name", err, codes.PermissionDenied, "web-*")
	re, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "web-1", Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: re.GetToken(), Node: "web-1", Csr: csr("web-1")}); err != nil {
		t.Fatalf("--replace token: %v", err)
	}
}

// TestRequestCertificateRateLimit (finding 5): a burst of calls from one
// address is refused with ResourceExhausted after CertRequestBurst, and
// none of them writes to raft. Before: 113 calls/s, each signing a
// certificate and proposing a raft entry.
func TestRequestCertificateRateLimit(t *testing.T) {
	n, tc, _ := trustCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	anon := noCertClient(t, tc, n.GRPCAddr())
	csr, _, err := pki.CreateAgentCSR("x")
	if err != nil {
		t.Fatal(err)
	}
	index := n.fsm.Store().Index()
	limited := 0
	for range 3 * CertRequestBurst {
		_, err := anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: "guess", Node: "x", Csr: csr})
		if status.Code(err) == codes.ResourceExhausted {
			limited++
		}
	}
	if limited < CertRequestBurst {
		t.Fatalf("%d of %d calls limited", limited, 3*CertRequestBurst)
	}
	if got := n.fsm.Store().Index(); got != index {
		t.Fatalf("guessed tokens wrote to raft: index %d -> %d", index, got)
	}
}

func TestIPLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newRateLimiter(CertRequestRate, CertRequestBurst, func() time.Time { return now })
	l.maxKeys = 2
	a, b, c := "10.0.0.1", "10.0.0.2", "10.0.0.3"
	for i := range 10 {
		if ok, _ := l.take(a, 1); !ok {
			t.Fatalf("call %d of the burst refused", i)
		}
	}
	if ok, wait := l.take(a, 1); ok || wait != 200*time.Millisecond {
		t.Fatalf("11th call: %v %v", ok, wait)
	}
	if ok, _ := l.take(b, 1); !ok {
		t.Fatal("another source limited")
	}
	if ok, _ := l.take(c, 1); ok {
		t.Fatal("a third source admitted into a table of two busy buckets")
	}
	now = now.Add(200 * time.Millisecond)
	if ok, _ := l.take(a, 1); !ok {
		t.Fatal("refilled token refused")
	}
	now = now.Add(time.Hour)
	if ok, _ := l.take(c, 1); !ok {
		t.Fatal("a new source refused once the others' buckets refilled")
	}
}

// TestRequestCertificateOnFollower: a follower checks tokens read-only as
// well (catching up with a read-index round when it does not know the
// token yet): a token created through the leader is redeemed at once
// through a follower, and an unknown token through a follower writes
// nothing.
func TestRequestCertificateOnFollower(t *testing.T) {
	cfgs, tc := clusterConfigs(t, 3, clusterOpts{})
	for i := range cfgs {
		cfgs[i].TLSCAKey = filepath.Join(tc.pki.Dir, pki.CAKeyFile)
	}
	nodes := startCluster(t, cfgs)
	l := leader(t, nodes)
	f := followers(nodes, l)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	anon := noCertClient(t, tc, f.GRPCAddr())
	csr, _, err := pki.CreateAgentCSR("new-1")
	if err != nil {
		t.Fatal(err)
	}
	// The cluster writes entries of its own right after it starts
	// (coordinator records, promotions): wait until it is quiet, so that a
	// moving index can only be the call's.
	last, since := l.fsm.Store().Index(), time.Now()
	waitFor(t, 20*time.Second, "the cluster quiet for a second, followers caught up", func() bool {
		if i := l.fsm.Store().Index(); i != last {
			last, since = i, time.Now()
		}
		return time.Since(since) > time.Second && f.fsm.Store().Index() == last
	})
	index := l.fsm.Store().Index()
	_, err = anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: "unknown", Node: "new-1", Csr: csr})
	wantCode(t, "unknown token via a follower", err, codes.NotFound)
	if got := l.fsm.Store().Index(); got != index {
		t.Fatalf("unknown token via a follower wrote to raft: %d -> %d", index, got)
	}
	tok, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "new-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: tok.GetToken(), Node: "new-1", Csr: csr}); err != nil {
		t.Fatalf("fresh token via a follower: %v", err)
	}
}

// FuzzCheckAddresses: an accepted address is one canonical unicast IP,
// never a prefix, never with a character that could break a rendered file.
func FuzzCheckAddresses(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "0.0.0.0/0", "::1", "fe80::1%eth0", "10.0.0.1\nx", "224.0.0.1", "::ffff:10.0.0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := checkAddresses([]string{s})
		if err != nil {
			return
		}
		ip, perr := netip.ParseAddr(out[0])
		if perr != nil || ip.String() != out[0] || ip.IsUnspecified() || ip.IsMulticast() || ip.Zone() != "" || strings.ContainsAny(out[0], "/\n\r ") {
			t.Fatalf("accepted %q as %q", s, out[0])
		}
	})
}
