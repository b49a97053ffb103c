package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestBootstrapToken: an agent with only the CA and a bootstrap token gets
// its certificate from a real TLS coordinator, then watches as itself; the
// token cannot be used twice.
func TestBootstrapToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	p, admin, srv := startTLSCoordinator(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{srv.GRPCAddr()}, CA: admin.CA, Cert: admin.Cert, Key: admin.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok, err := conn.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "new-1", TtlSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte(tok.GetToken()+"\n"), 0o600)

	acfg := testConfig(t, filepath.Join(dir, "data"))
	acfg.Name, acfg.Dev = "new-1", false
	acfg.Coordinators = []string{srv.GRPCAddr()}
	acfg.TLSCA, acfg.BootstrapTokenFile = p.CAFile(), tokFile
	eng := &fakeEngine{}
	a, stop := startAgent(t, acfg, eng, nil)
	select {
	case <-a.Ready(): // a state came through the watch and was converged
	case <-time.After(20 * time.Second):
		t.Fatal("agent never converged after bootstrap")
	}
	stop()
	certFile := filepath.Join(dir, "data", "tls", "agent.pem")
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(data)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(certs[0])
	if err != nil || id.Kind != pki.KindAgent || id.Name != "new-1" {
		t.Fatalf("certificate identity %v, %v", id, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "data", "tls", "agent-key.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}

	// A second agent with the same (used) token is refused and does not
	// write a certificate.
	acfg2 := acfg
	acfg2.DataDir = filepath.Join(dir, "data2")
	a2, err := agent.New(acfg2, agent.Deps{Engine: &fakeEngine{}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	defer rcancel()
	a2.Run(rctx)
	if _, err := os.Stat(filepath.Join(acfg2.DataDir, "tls", "agent.pem")); err == nil {
		t.Fatal("a used token produced a second certificate")
	}
}

// startTLSCoordinator starts a one-server coordinator "c1" with mutual TLS
// and the site CA's key (it mints agent certificates), after tune adjusts
// its configuration; it returns the PKI, an admin certificate and the
// ready server, stopped when the test ends.
func startTLSCoordinator(t *testing.T, tune func(*coordinator.Config)) (*pkitest.Dir, pkitest.Files, *coordinator.Server) {
	t.Helper()
	p := pkitest.New(t)
	cf := p.Issue(pki.KindCoordinator, "c1")
	admin := p.Issue(pki.KindAdmin, "ops")
	cfg := coordinator.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.BootstrapExpect = "c1", t.TempDir(), 1
	cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr, cfg.GossipAddr = "127.0.0.1:0", "127.0.0.1:0", "", "127.0.0.1:0"
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = cf.CA, cf.Cert, cf.Key
	cfg.TLSCAKey = filepath.Join(p.Dir, pki.CAKeyFile)
	if tune != nil {
		tune(&cfg)
	}
	cfg.Logger = testLogger(t).With("side", "coordinator")
	srv, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Run(ctx)
	select {
	case <-srv.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("coordinator not ready")
	}
	return p, admin, srv
}
