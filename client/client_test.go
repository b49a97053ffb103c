package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
)

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:7400":  "10.0.0.1:7400",
		"10.0.0.1":       "10.0.0.1:7400",
		" c1.example ":   "c1.example:7400",
		"[::1]:9":        "[::1]:9",
		"::1":            "[::1]:7400",
		"[::1]":          "[::1]:7400",
		":7500":          "127.0.0.1:7500",
		"localhost:7400": "localhost:7400",
	} {
		got, err := NormalizeAddr(in)
		if err != nil || got != want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "  ", "http://x:1", "[::1", "[ ] ", "a b:1", "h:0", "h:70000", "h:http", "[]:1"} {
		if _, err := NormalizeAddr(bad); err == nil {
			t.Errorf("NormalizeAddr(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Addrs: []string{"a"}, CA: "ca.pem", Cert: "c.pem", Key: "k.pem"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Addrs: []string{"a"}, Insecure: true}).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Addrs: []string{"a"}}).Validate(); !errors.Is(err, ErrNoTLSFiles) {
		t.Errorf("no CA: %v", err)
	}
	if err := (Config{Insecure: true}).Validate(); err == nil {
		t.Error("no address accepted")
	}
	if err := (Config{Addrs: []string{"a"}, CA: "ca", Cert: "c"}).Validate(); err == nil {
		t.Error("cert without key accepted")
	}
	if err := (Config{Addrs: []string{"a"}, Insecure: true, Keepalive: time.Second}).Validate(); err == nil {
		t.Error("keepalive under 10s accepted")
	}
}

// serve starts a gRPC server over real TCP; health nil means no health
// service registered.
func serve(t *testing.T, tc *tls.Config, hs *health.Server) string {
	t.Helper()
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s := grpc.NewServer(opts...)
	if hs != nil {
		healthpb.RegisterHealthServer(s, hs)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// deadAddr returns an address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := lis.Addr().String()
	lis.Close()
	return a
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestDialTLSFirstThatAnswers(t *testing.T) {
	d := pkitest.New(t)
	srv := d.Issue(pki.KindCoordinator, "c1")
	tc, err := pki.ServerTLSConfig(srv.CA, srv.Cert, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	notServing := health.NewServer()
	notServing.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	sick := serve(t, tc, notServing)
	good := serve(t, tc, health.NewServer())
	dead := deadAddr(t)

	adm := d.Issue(pki.KindAdmin, "alice")
	conn, err := Dial(ctx(t), Config{Addrs: []string{dead, sick, good}, CA: adm.CA, Cert: adm.Cert, Key: adm.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.Addr != good || !conn.Serving {
		t.Fatalf("connected to %s (serving %v), want %s", conn.Addr, conn.Serving, good)
	}

	// When no server is SERVING, the first NOT_SERVING one is used.
	conn2, err := Dial(ctx(t), Config{Addrs: []string{dead, sick}, CA: adm.CA, Cert: adm.Cert, Key: adm.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if conn2.Addr != sick || conn2.Serving {
		t.Fatalf("fallback: connected to %s (serving %v), want %s not serving", conn2.Addr, conn2.Serving, sick)
	}
}

func TestDialNoneAnswers(t *testing.T) {
	d := pkitest.New(t)
	other := pkitest.New(t)
	srv := d.Issue(pki.KindCoordinator, "c1")
	tc, err := pki.ServerTLSConfig(srv.CA, srv.Cert, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	good := serve(t, tc, health.NewServer())
	dead := deadAddr(t)
	// Client trusts another CA: the server is refused.
	adm := other.Issue(pki.KindAdmin, "alice")
	_, err = Dial(ctx(t), Config{Addrs: []string{dead, good}, CA: adm.CA, Cert: adm.Cert, Key: adm.Key})
	var de *DialError
	if !errors.As(err, &de) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want a DialError", err)
	}
	if len(de.Attempts) != 2 || de.Attempts[0].Addr != dead || de.Attempts[1].Addr != good {
		t.Fatalf("attempts %+v", de.Attempts)
	}
	if msg := de.Attempts[0].Err.Error(); !strings.Contains(msg, "refused") {
		t.Errorf("dead address error %q does not say refused", msg)
	}
	if msg := de.Attempts[1].Err.Error(); !strings.Contains(msg, "unknown authority") {
		t.Errorf("wrong-CA error %q does not name the cause", msg)
	}
}

func TestDialInsecure(t *testing.T) {
	addr := serve(t, nil, nil) // plaintext, no health service: still answers
	conn, err := Dial(ctx(t), Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	// TLS to a plaintext server fails.
	d := pkitest.New(t)
	adm := d.Issue(pki.KindAdmin, "alice")
	if _, err := Dial(ctx(t), Config{Addrs: []string{addr}, CA: adm.CA, Cert: adm.Cert, Key: adm.Key, AttemptTimeout: time.Second}); err == nil {
		t.Fatal("TLS dial to a plaintext server succeeded")
	}
}

func FuzzNormalizeAddr(f *testing.F) {
	for _, s := range []string{"10.0.0.1:7400", "10.0.0.1", "::1", "[::1]:9", ":7500", "c1.example", "[::1", "http://x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := NormalizeAddr(s)
		if err != nil {
			return
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil || port == "" || host == "" {
			t.Fatalf("NormalizeAddr(%q) = %q: not host:port (%v)", s, a, err)
		}
		// Idempotent.
		if b, err := NormalizeAddr(a); err != nil || b != a {
			t.Fatalf("NormalizeAddr(%q) = %q, again %q, %v", s, a, b, err)
		}
	})
}

// blackhole is a TCP proxy that can stop forwarding without closing the
// connections, like a network partition.
type blackhole struct {
	addr string
	mu   sync.Mutex
	cut  bool
}

func newBlackhole(t *testing.T, target string) *blackhole {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	b := &blackhole{addr: lis.Addr().String()}
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if err != nil {
				return
			}
			b.mu.Lock()
			cut := b.cut
			b.mu.Unlock()
			if cut {
				continue // swallow
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return b
}

func (b *blackhole) cutOff() {
	b.mu.Lock()
	b.cut = true
	b.mu.Unlock()
}

// TestKeepaliveDetectsPartition: with Keepalive set, a stream to a
// coordinator that silently stops answering fails instead of hanging.
func TestKeepaliveDetectsPartition(t *testing.T) {
	testenv.SkipShort(t)
	s := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	bh := newBlackhole(t, lis.Addr().String())

	conn, err := Dial(ctx(t), Config{Addrs: []string{bh.addr}, Insecure: true, Keepalive: 10 * time.Second, KeepaliveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := healthpb.NewHealthClient(conn.ClientConn()).Watch(ctx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	bh.cutOff()
	start := time.Now()
	_, err = stream.Recv()
	if err == nil {
		t.Fatal("stream survived a partition")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("partition noticed after %v, want about 11s", d)
	}
	t.Logf("partition noticed after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
