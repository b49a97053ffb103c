package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// pkiDir is a directory with a CA and certificates written by the real
// file functions.
type pkiDir struct {
	t   *testing.T
	dir string
	ca  *CA
}

func newPKIDir(t *testing.T) *pkiDir {
	t.Helper()
	d := &pkiDir{t: t, dir: t.TempDir(), ca: mustCA(t)}
	if _, _, err := WriteCA(d.dir, d.ca, false); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *pkiDir) caFile() string { return filepath.Join(d.dir, CAFile) }

// issue writes a certificate for id and returns its cert and key paths.
func (d *pkiDir) issue(id Identity, req CertRequest) (string, string) {
	d.t.Helper()
	req.Identity = id
	iss := mustIssue(d.t, d.ca, req)
	c, k, err := WriteCert(d.dir, id.Name, iss, true)
	if err != nil {
		d.t.Fatal(err)
	}
	return c, k
}

// identityServer is a gRPC server over real TCP that records the identity
// of each caller.
type identityServer struct {
	addr string
	mu   sync.Mutex
	ids  []Identity
	errs []error
}

func startServer(t *testing.T, cfg *tls.Config) *identityServer {
	t.Helper()
	s := &identityServer{}
	var opts []grpc.ServerOption
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		id, err := IdentityFromContext(ctx)
		s.mu.Lock()
		s.ids, s.errs = append(s.ids, id), append(s.errs, err)
		s.mu.Unlock()
		return h(ctx, req)
	}))
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = lis.Addr().String()
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return s
}

func (s *identityServer) last() (Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 {
		return Identity{}, errors.New("no call recorded")
	}
	return s.ids[len(s.ids)-1], s.errs[len(s.errs)-1]
}

// call makes one health check with the given client TLS config (nil:
// plaintext).
func call(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func serverConfig(t *testing.T, d *pkiDir, opts ...ServerOption) *tls.Config {
	t.Helper()
	c, k := d.issue(Identity{KindCoordinator, "c1"}, CertRequest{})
	cfg, err := ServerTLSConfig(d.caFile(), c, k, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func clientConfig(t *testing.T, caFile, cert, key string) *tls.Config {
	t.Helper()
	cfg, err := ClientTLSConfig(caFile, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestHandshakeIdentity(t *testing.T) {
	d := newPKIDir(t)
	srv := startServer(t, serverConfig(t, d))
	for _, id := range []Identity{{KindAdmin, "alice"}, {KindAgent, "web-1"}, {KindCoordinator, "c2"}} {
		c, k := d.issue(id, CertRequest{})
		if err := call(t, srv.addr, clientConfig(t, d.caFile(), c, k)); err != nil {
			t.Fatalf("%v: call: %v", id, err)
		}
		got, err := srv.last()
		if err != nil || got != id {
			t.Fatalf("server saw %v, %v; want %v", got, err, id)
		}
	}
}

func TestHandshakeRejects(t *testing.T) {
	d := newPKIDir(t)
	other := newPKIDir(t) // a second, unrelated CA
	srv := startServer(t, serverConfig(t, d))

	t.Run("client cert from wrong CA", func(t *testing.T) {
		c, k := other.issue(Identity{KindAdmin, "mallory"}, CertRequest{})
		err := call(t, srv.addr, clientConfig(t, d.caFile(), c, k))
		if err == nil {
			t.Fatal("accepted a client certificate from another CA")
		}
	})
	t.Run("server from wrong CA", func(t *testing.T) {
		c, k := d.issue(Identity{KindAdmin, "alice"}, CertRequest{})
		err := call(t, srv.addr, clientConfig(t, other.caFile(), c, k))
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Fatalf("err = %v, want unknown authority", err)
		}
	})
	t.Run("expired client cert", func(t *testing.T) {
		c, k := d.issue(Identity{KindAdmin, "old"}, CertRequest{
			NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour,
		})
		if err := call(t, srv.addr, clientConfig(t, d.caFile(), c, k)); err == nil {
			t.Fatal("accepted an expired client certificate")
		}
	})
	t.Run("no client cert", func(t *testing.T) {
		if err := call(t, srv.addr, clientConfig(t, d.caFile(), "", "")); err == nil {
			t.Fatal("accepted a client without certificate")
		}
	})
	t.Run("plaintext client", func(t *testing.T) {
		if err := call(t, srv.addr, nil); err == nil {
			t.Fatal("plaintext call to a TLS server succeeded")
		}
	})
}

func TestClientRejectsServer(t *testing.T) {
	d := newPKIDir(t)
	admC, admK := d.issue(Identity{KindAdmin, "alice"}, CertRequest{})

	t.Run("expired server cert", func(t *testing.T) {
		c, k := d.issue(Identity{KindCoordinator, "old"}, CertRequest{
			NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour,
		})
		cfg, err := ServerTLSConfig(d.caFile(), c, k)
		if err != nil {
			t.Fatal(err)
		}
		srv := startServer(t, cfg)
		err = call(t, srv.addr, clientConfig(t, d.caFile(), admC, admK))
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("err = %v, want expired", err)
		}
	})
	t.Run("agent posing as server", func(t *testing.T) {
		// An agent certificate has no serverAuth usage: the client must
		// refuse it even though the CA signed it.
		c, k := d.issue(Identity{KindAgent, "evil"}, CertRequest{})
		cfg, err := ServerTLSConfig(d.caFile(), c, k)
		if err != nil {
			t.Fatal(err)
		}
		srv := startServer(t, cfg)
		if err := call(t, srv.addr, clientConfig(t, d.caFile(), admC, admK)); err == nil {
			t.Fatal("client accepted an agent certificate as server")
		}
	})
}

func TestAllowNoClientCert(t *testing.T) {
	d := newPKIDir(t)
	srv := startServer(t, serverConfig(t, d, AllowNoClientCert()))
	if err := call(t, srv.addr, clientConfig(t, d.caFile(), "", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.last(); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("identity err = %v, want ErrNoCertificate", err)
	}
	// A presented certificate is still verified.
	other := newPKIDir(t)
	c, k := other.issue(Identity{KindAdmin, "mallory"}, CertRequest{})
	if err := call(t, srv.addr, clientConfig(t, d.caFile(), c, k)); err == nil {
		t.Fatal("accepted a certificate from another CA")
	}
}

func TestIdentityFromContextPlaintext(t *testing.T) {
	srv := startServer(t, nil)
	if err := call(t, srv.addr, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.last(); !errors.Is(err, ErrNotTLS) {
		t.Fatalf("err = %v, want ErrNotTLS", err)
	}
	if _, err := IdentityFromContext(context.Background()); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("err = %v, want ErrNoPeer", err)
	}
}

func TestRotation(t *testing.T) {
	d := newPKIDir(t)
	c, k := d.issue(Identity{KindCoordinator, "c1"}, CertRequest{})
	scfg, err := ServerTLSConfig(d.caFile(), c, k)
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, scfg)
	admC, admK := d.issue(Identity{KindAdmin, "alice"}, CertRequest{})
	ccfg := clientConfig(t, d.caFile(), admC, admK)

	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", srv.addr, ccfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()

	// A half-written rotation (new certificate, old key) keeps the old pair.
	iss := mustIssue(t, d.ca, CertRequest{Identity: Identity{KindCoordinator, "c1"}})
	if err := os.WriteFile(c, iss.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != first {
		t.Fatalf("mismatched pair served: serial %s, want old %s", got, first)
	}
	if err := os.WriteFile(k, iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != iss.Cert.SerialNumber.String() {
		t.Fatalf("after rotation serial %s, want %s", got, iss.Cert.SerialNumber)
	}
	// The client's own certificate rotates the same way.
	newAdm := mustIssue(t, d.ca, CertRequest{Identity: Identity{KindAdmin, "bob"}})
	if err := os.WriteFile(admK, newAdm.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(admC, newAdm.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := call(t, srv.addr, ccfg); err != nil {
		t.Fatal(err)
	}
	if id, err := srv.last(); err != nil || id.Name != "bob" {
		t.Fatalf("after client rotation server saw %v, %v", id, err)
	}
}

func TestConfigErrors(t *testing.T) {
	d := newPKIDir(t)
	c, k := d.issue(Identity{KindAdmin, "a"}, CertRequest{})
	if _, err := ServerTLSConfig("", c, k); err == nil {
		t.Error("server config without CA accepted")
	}
	if _, err := ServerTLSConfig(d.caFile(), c, filepath.Join(d.dir, "missing.pem")); err == nil {
		t.Error("server config with missing key accepted")
	}
	if _, err := ClientTLSConfig(d.caFile(), c, ""); err == nil {
		t.Error("client config with cert but no key accepted")
	}
	if _, err := ClientTLSConfig(filepath.Join(d.dir, "nope.pem"), c, k); err == nil {
		t.Error("client config with missing CA accepted")
	}
	if _, err := ClientTLSConfig(c, c, k); err != nil {
		// A leaf used as CA file loads (it is PEM), but verification of
		// a real server then fails; loading is not the place to judge.
		t.Errorf("client config: %v", err)
	}
}

// BenchmarkHandshake measures a full mutual TLS 1.3 handshake over loopback
// TCP with the reloading configurations (one stat per file per handshake).
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	ca, err := NewCA(CAOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := WriteCA(dir, ca, false); err != nil {
		b.Fatal(err)
	}
	write := func(id Identity) (string, string) {
		iss, err := ca.Issue(CertRequest{Identity: id})
		if err != nil {
			b.Fatal(err)
		}
		c, k, err := WriteCert(dir, id.Name, iss, false)
		if err != nil {
			b.Fatal(err)
		}
		return c, k
	}
	sc, sk := write(Identity{KindCoordinator, "c1"})
	ac, ak := write(Identity{KindAgent, "n1"})
	caFile := filepath.Join(dir, CAFile)
	scfg, err := ServerTLSConfig(caFile, sc, sk)
	if err != nil {
		b.Fatal(err)
	}
	ccfg, err := ClientTLSConfig(caFile, ac, ak)
	if err != nil {
		b.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() == nil {
					if _, err := IdentityFromConnState(tc.ConnectionState()); err != nil {
						panic(err)
					}
					c.Write([]byte{1})
				}
			}()
		}
	}()
	for b.Loop() {
		c, err := tls.Dial("tcp", lis.Addr().String(), ccfg)
		if err != nil {
			b.Fatal(err)
		}
		var buf [1]byte
		if _, err := c.Read(buf[:]); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// TestServerConfigShared: while the files are unchanged every handshake
// gets the same configuration (no copy per connection); a rotated pair
// gets a new one.
func TestServerConfigShared(t *testing.T) {
	d := newPKIDir(t)
	c, k := d.issue(Identity{KindCoordinator, "c1"}, CertRequest{})
	old := time.Now().Add(-time.Hour)
	for _, f := range []string{c, k, d.caFile()} {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	scfg, err := ServerTLSConfig(d.caFile(), c, k)
	if err != nil {
		t.Fatal(err)
	}
	a, errA := scfg.GetConfigForClient(nil)
	b, errB := scfg.GetConfigForClient(nil)
	if errA != nil || errB != nil || a != b {
		t.Fatalf("unchanged files: configurations %p and %p (%v, %v), want one shared", a, b, errA, errB)
	}
	iss := mustIssue(t, d.ca, CertRequest{Identity: Identity{KindCoordinator, "c1"}})
	if err := os.WriteFile(c, iss.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k, iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := scfg.GetConfigForClient(nil)
	if err != nil || n == a || n.Certificates[0].Leaf.SerialNumber.Cmp(iss.Cert.SerialNumber) != 0 {
		t.Fatalf("after rotation: %p (was %p), %v", n, a, err)
	}
}
