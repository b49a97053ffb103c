package coordinator

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
	"google.golang.org/grpc/codes"
)

const certSite = `
site: certs
selectors:
  - roles: [registry]
roles:
  registry:
    certificates:
      - name: registry
        cert: /etc/registry/cert.pem
        key: /etc/registry/key.pem
        dns_names: ["{node}.example.com", registry.example.com]
        validity: 1h
`

// TestIssueServiceCertificate: an agent obtains a certificate for a
// certificate resource of its state, with the names the coordinator
// decides (its name, its addresses proven at the watch, the site's DNS
// names) whatever the CSR asks for; the certificate verifies for
// serverAuth against the CA and carries no hive identity (hive refuses
// it); bad requests are refused precisely; a revoked node gets none.
func TestIssueServiceCertificate(t *testing.T) {
	nodes, tc := signingCluster(t, 1, time.Hour)
	addr := nodes[0].GRPCAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, addr, pki.KindAdmin, "alice")
	s, err := site.Parse("site.yaml", []byte(certSite))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Push(ctx, &hivev1.PushRequest{Site: s}); err != nil {
		t.Fatal(err)
	}
	tc.issueAgent("web-1", nil, "10.9.9.9")
	agent := tc.dial(t, addr, pki.KindAgent, "web-1")
	csr, _, err := pki.CreateServiceCSR("anything.evil.example")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(c hivev1.CoordinatorServiceClient, name string, csr []byte) (*hivev1.IssueServiceCertificateResponse, error) {
		return c.IssueServiceCertificate(ctx, &hivev1.IssueServiceCertificateRequest{Name: name, Csr: csr})
	}

	_, err = issue(agent, "registry", csr)
	wantCode(t, "before registering", err, codes.FailedPrecondition, "not registered")

	// The watch registers the node with its connection's address and an
	// IP SAN of its certificate.
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Addresses: []string{"127.0.0.1", "10.9.9.9"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}

	_, err = issue(admin, "registry", csr)
	wantCode(t, "admin", err, codes.PermissionDenied, "only agents")
	_, err = issue(agent, "other", csr)
	wantCode(t, "unknown certificate", err, codes.NotFound, "has no resource certificate:other")
	_, err = issue(agent, "../x", csr)
	wantCode(t, "bad name", err, codes.InvalidArgument, "name:")
	_, err = issue(agent, "registry", []byte("not a csr"))
	wantCode(t, "bad csr", err, codes.InvalidArgument, "csr:")

	before := time.Now()
	resp, err := issue(agent, "registry", csr)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(resp.GetCertificate())
	if err != nil || len(certs) != 1 {
		t.Fatalf("certificate: %v %v", certs, err)
	}
	c := certs[0]
	wantDNS := []string{"web-1", "web-1.example.com", "registry.example.com"}
	if !slices.Equal(c.DNSNames, wantDNS) {
		t.Fatalf("DNS names %v, want %v", c.DNSNames, wantDNS)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if !slices.Equal(ips, []string{"127.0.0.1", "10.9.9.9"}) {
		t.Fatalf("IP addresses %v", ips)
	}
	if life := c.NotAfter.Sub(before); life < 59*time.Minute || life > 61*time.Minute {
		t.Fatalf("lifetime %v, want 1h", life)
	}
	pool := x509.NewCertPool()
	ca, _ := pki.ParseCerts(resp.GetCa())
	pool.AddCert(ca[0])
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "registry.example.com", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("service certificate does not verify: %v", err)
	}
	if _, err := pki.IdentityFromCert(c); err == nil {
		t.Fatal("a service certificate carries a hive identity")
	}
	if _, err := pki.VerifyServer([]*x509.Certificate{c}, pool, time.Now()); err == nil {
		t.Fatal("a service certificate passes as a coordinator")
	}

	// A revoked node gets none.
	if _, err := admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-1", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	_, err = issue(tc.dial(t, addr, pki.KindAgent, "web-1"), "registry", csr)
	wantCode(t, "revoked", err, codes.PermissionDenied, "revoked at")

	// An agent cannot make the coordinators sign in a loop.
	web2 := tc.dial(t, addr, pki.KindAgent, "web-2")
	for i := range ServiceCertBurst {
		_, err = issue(web2, "none", csr)
		wantCode(t, fmt.Sprintf("call %d", i), err, codes.FailedPrecondition, "not registered")
	}
	_, err = issue(web2, "none", csr)
	wantCode(t, "over the burst", err, codes.ResourceExhausted, "too many service certificate requests from agent:web-2")
}

// TestIssueServiceCertificateWithoutCAKey: a coordinator that cannot sign
// says so.
func TestIssueServiceCertificateWithoutCAKey(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	csr, _, _ := pki.CreateServiceCSR("x")
	_, err := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAgent, "web-1").IssueServiceCertificate(context.Background(), &hivev1.IssueServiceCertificateRequest{Name: "registry", Csr: csr})
	wantCode(t, "no CA key", err, codes.FailedPrecondition, "--tls-ca-key")
}
