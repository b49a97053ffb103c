package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	"google.golang.org/grpc/credentials"
)

// TestHandshakeGateBounds: many clients handshaking at once, each
// handshake slow, never more than the gate's slots compute at the same
// time, and every waiting handshake completes.
func TestHandshakeGateBounds(t *testing.T) {
	const slots, clients = 3, 60
	g := newHandshakeGate(slots)
	var cur, peak atomic.Int64
	hs := func(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
		n := cur.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		var b [4]byte
		if _, err := c.Read(b[:]); err != nil { // the prefix byte, then the rest
			return nil, nil, err
		}
		time.Sleep(10 * time.Millisecond) // the handshake's CPU work
		cur.Add(-1)
		return c, nil, nil
	}
	var wg sync.WaitGroup
	var done atomic.Int64
	var sawWaiting atomic.Bool
	for range clients {
		server, client := net.Pipe()
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer client.Close()
			if _, err := client.Write([]byte("h")); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			defer server.Close()
			if g.waiting.Load() > 0 {
				sawWaiting.Store(true)
			}
			if _, _, err := g.handshake(server, hs); err != nil {
				t.Error(err)
				return
			}
			done.Add(1)
		}()
	}
	wg.Wait()
	if done.Load() != clients {
		t.Fatalf("%d of %d handshakes completed", done.Load(), clients)
	}
	if p := peak.Load(); p > slots {
		t.Fatalf("%d handshakes in progress at once; the gate has %d slots", p, slots)
	}
	if p := g.peak.Load(); p > slots || p < 1 {
		t.Fatalf("gate's own peak %d, want 1..%d", p, slots)
	}
	if !sawWaiting.Load() {
		t.Log("no handshake had to wait (scheduling); the bound is still checked")
	}
	if g.inProgress.Load() != 0 || g.waiting.Load() != 0 || len(g.slots) != 0 {
		t.Fatalf("gate not empty after all handshakes: %d in progress, %d waiting, %d slots taken", g.inProgress.Load(), g.waiting.Load(), len(g.slots))
	}
}

// TestHandshakeGateSlowClients: real TLS 1.3 with client certificates
// through a one-slot gate. A slot is held only while the server computes:
// a client that connects and sends nothing never takes it; a client that
// sends the start of a ClientHello and stalls, and a real client that
// needs seconds to send its second flight (a starved host), wait without
// it; real clients arriving meanwhile complete first; the slow one
// completes too, and the stalled one fails at the handshake timeout.
func TestHandshakeGateSlowClients(t *testing.T) {
	p := pkitest.New(t)
	sf := p.Issue(pki.KindCoordinator, "c1")
	serverCfg, err := pki.ServerTLSConfig(sf.CA, sf.Cert, sf.Key)
	if err != nil {
		t.Fatal(err)
	}
	af := p.Issue(pki.KindAgent, "a1")
	clientCfg, err := pki.ClientTLSConfig(af.CA, af.Cert, af.Key)
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(serverCfg)

	g := newHandshakeGate(1)
	g.timeout = 4 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		client string // the client's address
		info   credentials.AuthInfo
		err    error
	}
	results := make(chan result, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // as gRPC does
				conn, info, err := g.handshake(c, creds.ServerHandshake)
				results <- result{c.RemoteAddr().String(), info, err}
				if conn != nil {
					conn.Close()
				} else {
					c.Close()
				}
			}()
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// handshake runs a real client's handshake on c, then writes a byte
	// (TLS 1.3: the server's side completes on the client's Finished) and
	// waits for the server to close. Errors are checked at the end (not
	// t.Error: the goroutine may outlive a failed test).
	var clientMu sync.Mutex
	var clientErrs []error
	handshake := func(c net.Conn) {
		tc := tls.Client(c, clientCfg)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			clientMu.Lock()
			clientErrs = append(clientErrs, err)
			clientMu.Unlock()
			return
		}
		_, _ = tc.Write([]byte("x"))
		_, _ = tc.Read(make([]byte, 1))
	}

	// A silent connection: no byte, no slot.
	dial()
	// A stalled one: the first bytes of a TLS record, then nothing.
	stalled := dial()
	if _, err := stalled.Write([]byte{0x16, 0x03, 0x01}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the stalled handshake to start and give its slot back", func() bool {
		return g.peak.Load() == 1 && g.inProgress.Load() == 0
	})
	// A slow real client: its second flight leaves 1.5 s after the
	// server's first.
	slow := &slowWriter{Conn: dial(), delay: 1500 * time.Millisecond, delaying: make(chan struct{})}
	slowDone := make(chan struct{})
	go func() { defer close(slowDone); handshake(slow) }()
	select {
	case <-slow.delaying:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow client never got the server's first flight")
	}
	// The server gives its slot back when it goes back to reading, which
	// may be just after the client has its flight.
	waitFor(t, 5*time.Second, "no slot held while the server waits for its clients", func() bool { return g.inProgress.Load() == 0 })

	const fast = 5
	var wg sync.WaitGroup
	for range fast {
		c := dial()
		wg.Go(func() { handshake(c) })
	}
	var order []string
	want := map[string]string{stalled.LocalAddr().String(): "stalled", slow.LocalAddr().String(): "slow"}
	for range fast + 2 {
		select {
		case r := <-results:
			who := want[r.client]
			if who == "" {
				who = "fast"
			}
			order = append(order, who)
			switch {
			case who == "stalled" && r.err == nil:
				t.Errorf("the stalled client's handshake succeeded")
			case who != "stalled" && r.err != nil:
				t.Errorf("%s client: %v", who, r.err)
			case who != "stalled":
				if ti, isTLS := r.info.(credentials.TLSInfo); !isTLS || len(ti.State.PeerCertificates) == 0 {
					t.Errorf("%s client: handshake without a client certificate: %#v", who, r.info)
				}
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("handshakes still pending after 15s; done in order %v", order)
		}
	}
	wg.Wait()
	<-slowDone
	for _, err := range clientErrs {
		t.Errorf("client handshake: %v", err)
	}
	for i, who := range order[:fast] {
		if who != "fast" {
			t.Errorf("handshake %d to finish was the %s client's (order %v): the fast ones waited for it", i+1, who, order)
		}
	}
	if order[fast+1] != "stalled" {
		t.Errorf("the stalled client did not fail last (order %v)", order)
	}
	if g.peak.Load() != 1 {
		t.Fatalf("peak %d handshakes with one slot", g.peak.Load())
	}
	if g.inProgress.Load() != 0 || len(g.slots) != 0 {
		t.Fatalf("%d handshakes still hold a slot", g.inProgress.Load())
	}
}

// slowWriter delays every write after the first (a TLS client's second
// flight) by delay, closing delaying when it starts to wait.
type slowWriter struct {
	net.Conn
	delay    time.Duration
	delaying chan struct{}
	writes   int
}

func (c *slowWriter) Write(p []byte) (int, error) {
	c.writes++
	if c.writes == 2 {
		close(c.delaying)
		time.Sleep(c.delay)
	}
	return c.Conn.Write(p)
}

// TestHandshakeGateQueueTimeout: a connection that cannot get a slot
// within the queue timeout is refused (and counted), not kept waiting.
func TestHandshakeGateQueueTimeout(t *testing.T) {
	g := newHandshakeGate(1)
	g.queueTimeout = 100 * time.Millisecond
	release := make(chan struct{})
	holding := make(chan struct{})
	hold := func(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
		close(holding)
		<-release
		return c, nil, nil
	}
	s1, c1 := net.Pipe()
	defer s1.Close()
	defer c1.Close()
	go func() { _, _ = c1.Write([]byte("h")) }()
	first := make(chan error, 1)
	go func() {
		_, _, err := g.handshake(s1, hold)
		first <- err
	}()
	<-holding

	s2, c2 := net.Pipe()
	defer s2.Close()
	defer c2.Close()
	go func() { _, _ = c2.Write([]byte("h")) }()
	_, _, err := g.handshake(s2, func(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
		t.Error("second handshake ran while the only slot was held")
		return c, nil, nil
	})
	if !errors.Is(err, errHandshakeQueue) {
		t.Fatalf("second handshake: %v, want errHandshakeQueue", err)
	}
	if g.refused.Load() != 1 {
		t.Fatalf("refused %d, want 1", g.refused.Load())
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if g.inProgress.Load() != 0 || g.waiting.Load() != 0 {
		t.Fatalf("gate not empty: %d in progress, %d waiting", g.inProgress.Load(), g.waiting.Load())
	}
}
