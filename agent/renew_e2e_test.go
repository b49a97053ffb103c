package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRenewOverMutualTLS: an agent whose certificate is already past two
// thirds of its lifetime renews it at start from a real TLS coordinator
// that mints 10-second certificates, renews the renewed one in turn, and
// still receives and reports a generation pushed after its first
// certificate expired.
func TestRenewOverMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	p, admin, srv := startTLSCoordinator(t, func(c *coordinator.Config) { c.AgentCertLifetime = coordinator.MinAgentCertLifetime })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A 12 s certificate 9 s into its life: due for renewal at once.
	iss, err := p.CA.Issue(pki.CertRequest{Identity: pki.Identity{Kind: pki.KindAgent, Name: "r1"}, Validity: 12 * time.Second, NotBefore: time.Now().Add(-9 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile, err := pki.WriteCert(dir, "r1", iss, false)
	if err != nil {
		t.Fatal(err)
	}
	acfg := testConfig(t, filepath.Join(dir, "data"))
	acfg.Name, acfg.Dev = "r1", false
	acfg.Coordinators = []string{srv.GRPCAddr()}
	acfg.TLSCA, acfg.TLSCert, acfg.TLSKey = p.CAFile(), certFile, keyFile
	_, stop := startAgent(t, acfg, &fakeEngine{}, nil)
	defer stop()

	serial := func() string {
		b, err := os.ReadFile(certFile)
		if err != nil {
			return ""
		}
		c, err := pki.ParseCerts(b)
		if err != nil || len(c) == 0 {
			return ""
		}
		return c[0].SerialNumber.Text(16)
	}
	seen := map[string]bool{iss.Cert.SerialNumber.Text(16): true}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		if s := serial(); s != "" {
			seen[s] = true
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(seen) < 3 {
		t.Fatalf("certificates seen: %v; want the original and two renewals", seen)
	}
	if time.Now().Before(iss.Cert.NotAfter) {
		time.Sleep(time.Until(iss.Cert.NotAfter) + time.Second)
	}

	conn, err := client.Dial(ctx, client.Config{Addrs: []string{srv.GRPCAddr()}, CA: admin.CA, Cert: admin.Cert, Key: admin.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	push, err := conn.Push(ctx, &hivev1.PushRequest{Site: &hivev1.Site{Name: "after-expiry"}})
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		s, err := conn.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "r1"})
		if err == nil && len(s.GetNodes()) == 1 && s.GetNodes()[0].GetAppliedGeneration() == push.GetGeneration() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r1 did not report generation %d after its first certificate expired: %v %v", push.GetGeneration(), s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
