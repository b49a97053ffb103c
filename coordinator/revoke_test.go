package coordinator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// signingCluster starts n TLS coordinators that hold the CA key and mint
// agent certificates of the given lifetime.
func signingCluster(t *testing.T, n int, lifetime time.Duration) ([]*node, *tlsCluster) {
	t.Helper()
	cfgs, tc := clusterConfigs(t, n, clusterOpts{})
	for i := range cfgs {
		cfgs[i].TLSCAKey = filepath.Join(tc.pki.Dir, pki.CAKeyFile)
		cfgs[i].AgentCertLifetime = lifetime
	}
	return startCluster(t, cfgs), tc
}

// agentCert writes an agent certificate for name valid from notBefore,
// carrying a label URI and a private extension as certificates with
// trusted labels do, and returns its files and certificate.
func agentCert(t *testing.T, d *pkitest.Dir, name string, notBefore time.Time) (pkitest.Files, *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := pki.Identity{Kind: pki.KindAgent, Name: name}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(bigOne, 100))
	tmpl := &x509.Certificate{
		SerialNumber:    serial.Add(serial, bigOne),
		Subject:         pkix.Name{CommonName: id.String(), Organization: []string{"hive"}},
		NotBefore:       notBefore,
		NotAfter:        notBefore.Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:            []*url.URL{id.URI(), {Scheme: "hive-label", Host: "rack", Path: "/r1"}},
		ExtraExtensions: []pkix.Extension{{Id: labelOID, Value: []byte{0x0c, 0x02, 'r', '1'}}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, d.CA.Cert, key.Public(), d.CA.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	kp, _ := pki.EncodeKey(key)
	dir := t.TempDir()
	cp, kpath, err := pki.WriteCert(dir, name, &pki.Issued{Cert: c, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: kp}, true)
	if err != nil {
		t.Fatal(err)
	}
	return pkitest.Files{CA: d.CAFile(), Cert: cp, Key: kpath}, c
}

var labelOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 7}

func dialFiles(t *testing.T, addr string, f pkitest.Files) hivev1.CoordinatorServiceClient {
	t.Helper()
	cfg, err := pki.ClientTLSConfig(f.CA, f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	return dialTLS(t, addr, cfg)
}

// TestRevokeNodeClosesStreamAndDeniesEverywhere revokes an agent through
// a follower while it watches another follower: its stream ends with
// PermissionDenied within a second, its connections are closed on every
// coordinator, every coordinator refuses its calls, it cannot renew, and
// another agent watching on the same server is untouched. A certificate
// issued after the cut-off is accepted again.
func TestRevokeNodeClosesStreamAndDeniesEverywhere(t *testing.T) {
	nodes, tc := signingCluster(t, 3, time.Hour)
	l := leader(t, nodes)
	f := followers(nodes, l)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	web1 := tc.dial(t, f[1].GRPCAddr(), pki.KindAgent, "web-1")
	web2 := tc.dial(t, f[1].GRPCAddr(), pki.KindAgent, "web-2")
	w1, err := web1.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := web2.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []hivev1.CoordinatorService_WatchNodeStateClient{w1, w2} {
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	// web-1 also holds connections to the other coordinators.
	for _, n := range []*node{l, f[0]} {
		c := tc.dial(t, n.GRPCAddr(), pki.KindAgent, "web-1")
		if _, err := c.GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-1"}); err != nil {
			t.Fatal(err)
		}
	}
	web1ID := pki.Identity{Kind: pki.KindAgent, Name: "web-1"}
	for _, n := range nodes {
		if n.conns.count(web1ID) != 1 {
			t.Fatalf("%s tracks %d connections of web-1", n.cfg.Name, n.conns.count(web1ID))
		}
	}

	admin := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	if _, err := admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web/1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("revoke of a bad name: %v", err)
	}
	if _, err := admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-1", Serials: []string{"zz"}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("revoke of a bad serial: %v", err)
	}
	if l.fsm.Store().Revocation("web-1") != nil {
		t.Fatal("refused revocations changed the deny list")
	}
	if _, err := web2.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an agent revoked another node: %v", err)
	}

	began := time.Now()
	resp, err := admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-1", Reason: "disk stolen"})
	if err != nil {
		t.Fatal(err)
	}
	acked := time.Since(began)
	if resp.GetRevocation().GetCutoff() == nil || resp.GetRevocation().GetAuthor() != "alice" || resp.GetRevocation().GetReason() != "disk stolen" || resp.GetUnknownNode() {
		t.Fatalf("revoke response = %v", resp)
	}
	_, err = w1.Recv()
	closed := time.Since(began)
	wantCode(t, "web-1 watch after revocation", err, codes.PermissionDenied, "revoked at")
	t.Logf("revocation acknowledged after %v; web-1's watch stream ended after %v", acked, closed)
	if closed > 2*time.Second {
		t.Fatalf("watch stream ended %v after the revocation", closed)
	}
	for _, n := range nodes {
		waitFor(t, 5*time.Second, "web-1's connections closed on "+n.cfg.Name, func() bool { return n.conns.count(web1ID) == 0 })
	}
	t.Logf("every connection of web-1 closed after %v", time.Since(began))

	// Every coordinator refuses every call of the revoked certificate.
	for _, n := range nodes {
		c := tc.dial(t, n.GRPCAddr(), pki.KindAgent, "web-1")
		_, err := c.GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-1"})
		wantCode(t, "GetNodeState on "+n.cfg.Name, err, codes.PermissionDenied, "of agent:web-1 revoked at")
		_, err = c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "web-1", Seq: 9}})
		wantCode(t, "Report on "+n.cfg.Name, err, codes.PermissionDenied, "revoked at")
		csr, _, _ := pki.CreateAgentCSR("web-1")
		_, err = c.RenewCertificate(ctx, &hivev1.RenewCertificateRequest{Csr: csr})
		wantCode(t, "RenewCertificate on "+n.cfg.Name, err, codes.PermissionDenied, "revoked at")
	}
	// The other agent on the same coordinator carries on.
	if _, err := web2.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "web-2", Seq: 1}}); err != nil {
		t.Fatalf("web-2 after web-1's revocation: %v", err)
	}
	admin.Push(ctx, &hivev1.PushRequest{Site: &hivev1.Site{Name: "after"}})
	if m, err := w2.Recv(); err != nil || m.GetState() == nil {
		t.Fatalf("web-2's watch after web-1's revocation: %v %v", m, err)
	}

	// A certificate issued after the cut-off (re-enrolment) is accepted.
	cut := l.fsm.Store().Revocation("web-1").GetCutoff().AsTime()
	files, _ := agentCert(t, tc.pki, "web-1", cut.Truncate(time.Second).Add(time.Second))
	time.Sleep(time.Until(cut.Add(1100 * time.Millisecond)))
	if _, err := dialFiles(t, f[1].GRPCAddr(), files).GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-1"}); err != nil {
		t.Fatalf("certificate issued after the cut-off: %v", err)
	}
}

// TestRevokeSerial denies one certificate by serial (as openssl prints
// it), leaving the node's other certificate good, on every coordinator.
func TestRevokeSerial(t *testing.T) {
	nodes, tc := signingCluster(t, 3, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	oldFiles, oldCert := agentCert(t, tc.pki, "db-1", time.Now().Add(-time.Minute))
	newFiles, _ := agentCert(t, tc.pki, "db-1", time.Now().Add(-time.Minute))
	hex := strings.ToUpper(oldCert.SerialNumber.Text(16))
	var colons []string
	for i := len(hex); i > 0; i -= 2 {
		colons = append([]string{hex[max(0, i-2):i]}, colons...)
	}
	admin := tc.dial(t, nodes[2].GRPCAddr(), pki.KindAdmin, "alice")
	resp, err := admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "db-1", Serials: []string{strings.Join(colons, ":")}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRevocation().GetCutoff() != nil || len(resp.GetRevocation().GetSerials()) != 1 || !resp.GetUnknownNode() {
		t.Fatalf("revoke response = %v", resp)
	}
	for _, n := range nodes {
		waitFor(t, 5*time.Second, "deny list on "+n.cfg.Name, func() bool { return n.fsm.Store().Revocation("db-1") != nil })
		_, err := dialFiles(t, n.GRPCAddr(), oldFiles).GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "db-1"})
		wantCode(t, "revoked serial on "+n.cfg.Name, err, codes.PermissionDenied, "serial "+state.SerialText(oldCert.SerialNumber)+" on the deny list")
		if _, err := dialFiles(t, n.GRPCAddr(), newFiles).GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "db-1"}); err != nil {
			t.Fatalf("the node's other certificate on %s: %v", n.cfg.Name, err)
		}
	}
}

// TestRemoveNode forgets a node that watched, reported and published a
// secret: it leaves status and the secrets, is revoked, and a report it
// sends later is refused; an unknown node is NotFound.
func TestRemoveNode(t *testing.T) {
	nodes, tc := signingCluster(t, 3, time.Hour)
	l := leader(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	agent := tc.dial(t, nodes[1].GRPCAddr(), pki.KindAgent, "db-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "db-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "db-1", Seq: 1, Phase: hivev1.Phase_PHASE_CONVERGED,
		PublishedSecrets: map[string][]byte{"join-token": []byte("s3cret")}}}); err != nil {
		t.Fatal(err)
	}
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	waitFor(t, 10*time.Second, "db-1 in status", func() bool {
		s, err := admin.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "db-1"})
		return err == nil && len(s.GetNodes()) == 1 && s.GetNodes()[0].GetPhase() == hivev1.Phase_PHASE_CONVERGED
	})
	if _, err := admin.RemoveNode(ctx, &hivev1.RemoveNodeRequest{Node: "ghost"}); status.Code(err) != codes.NotFound {
		t.Fatalf("remove of an unknown node: %v", err)
	}
	resp, err := admin.RemoveNode(ctx, &hivev1.RemoveNodeRequest{Node: "db-1", Reason: "decommissioned"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetDeletedSecrets()) != 1 || resp.GetDeletedSecrets()[0] != "db-1/join-token" || !resp.GetRevocation().GetRemoved() {
		t.Fatalf("remove response = %v", resp)
	}
	if _, err := w.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("watch of the removed node: %v", err)
	}
	for _, n := range nodes {
		c := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice")
		waitFor(t, 5*time.Second, "removal on "+n.cfg.Name, func() bool { return n.fsm.Store().Revocation("db-1") != nil })
		if _, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "db-1"}); status.Code(err) != codes.NotFound {
			t.Fatalf("status of the removed node on %s: %v", n.cfg.Name, err)
		}
		s, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{})
		if err != nil || len(s.GetNodes()) != 0 {
			t.Fatalf("status on %s = %v, %v", n.cfg.Name, s, err)
		}
		sec, err := c.ListSecrets(ctx, &hivev1.ListSecretsRequest{})
		if err != nil || len(sec.GetSecrets()) != 0 {
			t.Fatalf("secrets on %s = %v, %v", n.cfg.Name, sec, err)
		}
	}
	_, err = tc.dial(t, l.GRPCAddr(), pki.KindAgent, "db-1").Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "db-1", Seq: 2}})
	wantCode(t, "report of the removed node", err, codes.PermissionDenied, "revoked at")
}

// TestRenewCertificate renews an agent certificate over mutual TLS: the
// new one has the configured lifetime, the CSR's key, the same identity
// and the old one's label URI and private extension, and works at once;
// a CSR for another name, an admin, and a coordinator without the CA key
// are refused.
func TestRenewCertificate(t *testing.T) {
	nodes, tc := signingCluster(t, 1, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	files, old := agentCert(t, tc.pki, "web-1", time.Now().Add(-time.Minute))
	c := dialFiles(t, nodes[0].GRPCAddr(), files)

	other, _, _ := pki.CreateAgentCSR("web-2")
	_, err := c.RenewCertificate(ctx, &hivev1.RenewCertificateRequest{Csr: other})
	wantCode(t, "CSR for another node", err, codes.InvalidArgument, "asks for")
	_, err = tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice").RenewCertificate(ctx, &hivev1.RenewCertificateRequest{Csr: other})
	wantCode(t, "admin renewing", err, codes.PermissionDenied, "only agents")

	csr, keyPEM, err := pki.CreateAgentCSR("web-1")
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	resp, err := c.RenewCertificate(ctx, &hivev1.RenewCertificateRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(resp.GetCertificate())
	if err != nil || len(certs) != 1 {
		t.Fatalf("certificate: %v %v", certs, err)
	}
	nc := certs[0]
	if id, err := pki.IdentityFromCert(nc); err != nil || id.String() != "agent:web-1" {
		t.Fatalf("identity %v %v", id, err)
	}
	if life := nc.NotAfter.Sub(before); life < 59*time.Second || life > 61*time.Second {
		t.Fatalf("lifetime %v, want 1m", life)
	}
	if len(nc.URIs) != 2 || nc.URIs[1].String() != "hive-label://rack/r1" {
		t.Fatalf("URIs = %v", nc.URIs)
	}
	kept := false
	for _, e := range nc.Extensions {
		kept = kept || e.Id.Equal(labelOID)
	}
	if !kept || nc.SerialNumber.Cmp(old.SerialNumber) == 0 {
		t.Fatal("label extension lost or serial reused")
	}
	// The new pair works.
	dir := t.TempDir()
	cp, kp, err := pki.WriteCert(dir, "web-1", &pki.Issued{Cert: nc, CertPEM: resp.GetCertificate(), KeyPEM: keyPEM}, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialFiles(t, nodes[0].GRPCAddr(), pkitest.Files{CA: files.CA, Cert: cp, Key: kp}).GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-1"}); err != nil {
		t.Fatalf("renewed certificate refused: %v", err)
	}

	// A bootstrap certificate gets the configured lifetime too.
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	tok, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "web-3"})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := pki.ClientTLSConfig(files.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	csr3, _, _ := pki.CreateAgentCSR("web-3")
	rc, err := dialTLS(t, nodes[0].GRPCAddr(), anon).RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: tok.GetToken(), Node: "web-3", Csr: csr3})
	if err != nil {
		t.Fatal(err)
	}
	bc, _ := pki.ParseCerts(rc.GetCertificate())
	if life := time.Until(bc[0].NotAfter); life > time.Minute {
		t.Fatalf("bootstrap certificate lives %v, want at most 1m", life)
	}
}

// TestRenewWithoutCAKey: a coordinator that cannot sign says so.
func TestRenewWithoutCAKey(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	csr, _, _ := pki.CreateAgentCSR("web-1")
	_, err := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAgent, "web-1").RenewCertificate(context.Background(), &hivev1.RenewCertificateRequest{Csr: csr})
	wantCode(t, "renew without a CA key", err, codes.FailedPrecondition, "--tls-ca-key")
}

// TestCertErrorExpired: a connection's certificate is refused once it
// expired, even though TLS accepted it at the handshake.
func TestCertErrorExpired(t *testing.T) {
	s := &Server{}
	leaf := &x509.Certificate{SerialNumber: bigOne, NotAfter: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	err := s.certError(pki.Identity{Kind: pki.KindAdmin, Name: "ops"}, leaf, leaf.NotAfter.Add(time.Second))
	wantCode(t, "expired", err, codes.Unauthenticated, "certificate 1 of admin:ops expired at 2026-01-01T00:00:00Z")
}

// TestConnTrackerCloses: kick closes, after the grace, exactly the
// connections the check refuses; closing removes a connection.
func TestConnTrackerCloses(t *testing.T) {
	bad := pki.Identity{Kind: pki.KindAgent, Name: "bad"}
	good := pki.Identity{Kind: pki.KindAgent, Name: "good"}
	tr := newConnTracker(func(id pki.Identity, _ *x509.Certificate) error {
		if id == bad {
			return errors.New("revoked")
		}
		return nil
	}, 10*time.Millisecond, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tr.run(ctx)
	far := &x509.Certificate{NotAfter: time.Now().Add(time.Hour)}
	var pipes []*fakeConn
	for _, id := range []pki.Identity{bad, good, bad} {
		fc := &fakeConn{}
		pipes = append(pipes, fc)
		c := &certConn{Conn: fc, t: tr, id: id, leaf: far, expiry: time.AfterFunc(time.Hour, func() {})}
		tr.mu.Lock()
		tr.conns[c] = struct{}{}
		tr.mu.Unlock()
	}
	tr.kick()
	waitFor(t, 2*time.Second, "bad connections closed", func() bool { return tr.count(bad) == 0 })
	if tr.count(good) != 1 || !pipes[0].isClosed() || pipes[1].isClosed() || !pipes[2].isClosed() {
		t.Fatalf("good %d, closed %v %v %v", tr.count(good), pipes[0].isClosed(), pipes[1].isClosed(), pipes[2].isClosed())
	}
}

var bigOne = big.NewInt(1)

// fakeConn is a net.Conn that only records Close.
type fakeConn struct {
	net.Conn
	closed atomic.Bool
}

func (f *fakeConn) Close() error         { f.closed.Store(true); return nil }
func (f *fakeConn) isClosed() bool       { return f.closed.Load() }
func (f *fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestConnTrackerClosesAtExpiry: a connection is closed when its client
// certificate expires, also when it has expired by the time it is
// tracked; connections without a hive identity are not tracked.
func TestConnTrackerClosesAtExpiry(t *testing.T) {
	tr := newConnTracker(func(pki.Identity, *x509.Certificate) error { return nil }, time.Millisecond, testLogger(t))
	id := pki.Identity{Kind: pki.KindAgent, Name: "web-1"}
	leaf := func(d time.Duration) credentials.TLSInfo {
		c := &x509.Certificate{Subject: pkix.Name{CommonName: id.String()}, URIs: []*url.URL{id.URI()}, NotAfter: time.Now().Add(d)}
		return credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}}
	}
	soon, gone, plain := &fakeConn{}, &fakeConn{}, &fakeConn{}
	tr.track(soon, leaf(100*time.Millisecond))
	tr.track(gone, leaf(-time.Second))
	if got := tr.track(plain, credentials.TLSInfo{}); got != net.Conn(plain) {
		t.Fatal("a connection without a client certificate was wrapped")
	}
	waitFor(t, 5*time.Second, "expired connections closed", func() bool { return soon.isClosed() && gone.isClosed() })
	if tr.count(id) != 0 || plain.isClosed() {
		t.Fatalf("tracked %d, plain closed %v", tr.count(id), plain.isClosed())
	}
}
