package coordinator

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// A fleet restarting at once (power back after a cut) opens hundreds of
// TLS connections to each coordinator within seconds. gRPC handshakes
// every accepted connection on a goroutine of its own, and Go's scheduler
// has no priorities: hundreds of handshakes (key exchange, signature,
// client chain verification) in the run queue delay raft's heartbeat,
// replication and apply goroutines by as much, and a follower that hears
// nothing for HeartbeatTimeout starts an election. The gate lets only a
// few handshakes compute at a time (about one per P: they are CPU work,
// more in parallel finish no sooner); the rest wait for a slot, without
// CPU, in arrival order.
//
// A slot is held only while the handshake computes: taken when the
// client's bytes arrive (its ClientHello, later its certificate and
// Finished) and given back whenever the handshake goes back to reading and
// waits for the client. A connection that sends nothing (a port scan, a
// TCP health probe) never takes one, and a slow or starved client, one
// that needs seconds to answer the server's flight, waits without one: an
// operator's hivectl queues behind other handshakes' CPU work, not behind
// hundreds of agents' round trips. A connection that waited
// handshakeQueueTimeout for a slot, or whose handshake is not done within
// handshakeTimeout of its first byte, is closed; the client retries with
// its backoff (agents dial with a growing attempt timeout and back off
// with jitter).

const (
	// handshakeTimeout bounds one handshake from the client's first
	// byte: TLS 1.3 with client certificates is one round trip after the
	// ClientHello plus about a millisecond of CPU per side (P-256), but on
	// a starved host that can take seconds of wall time, and a handshake
	// cut short is a reconnect, i.e. more work. A client that stalls costs
	// a goroutine and a socket for this long, no slot.
	handshakeTimeout = 30 * time.Second
	// handshakeQueueTimeout bounds each wait for a slot.
	handshakeQueueTimeout = 20 * time.Second
)

// errHandshakeQueue is returned for a connection that waited too long
// for a handshake slot.
var errHandshakeQueue = errors.New("tls handshake: server busy (no handshake slot within the queue timeout)")

// handshakeGate bounds the server-side TLS handshakes in progress.
type handshakeGate struct {
	slots        chan struct{}
	timeout      time.Duration
	queueTimeout time.Duration

	inProgress atomic.Int64 // handshakes holding a slot (computing)
	waiting    atomic.Int64 // connections waiting for a slot
	peak       atomic.Int64 // most handshakes in progress at once (tests)
	refused    atomic.Int64 // connections closed after queueTimeout
}

// newHandshakeGate returns a gate of n slots (n < 1: one per P, at least
// two).
func newHandshakeGate(n int) *handshakeGate {
	if n < 1 {
		n = max(runtime.GOMAXPROCS(0), 2)
	}
	return &handshakeGate{slots: make(chan struct{}, n), timeout: handshakeTimeout, queueTimeout: handshakeQueueTimeout}
}

// handshake runs hs on raw once the client's first bytes arrived, holding
// a slot whenever hs is not waiting for the client (gatedConn).
func (g *handshakeGate) handshake(raw net.Conn, hs func(net.Conn) (net.Conn, credentials.AuthInfo, error)) (net.Conn, credentials.AuthInfo, error) {
	// Wait for the ClientHello outside the gate, under the deadline gRPC
	// set on the connection (its connection timeout).
	var first [1]byte
	n, err := raw.Read(first[:])
	if n == 0 {
		if err == nil {
			err = errors.New("tls handshake: empty read")
		}
		return nil, nil, err
	}
	_ = raw.SetDeadline(time.Now().Add(g.timeout))
	if err := g.acquire(raw); err != nil {
		return nil, nil, err
	}
	conn := &gatedConn{Conn: raw, g: g, held: true, prefix: first[:n]}
	c, info, err := hs(conn)
	conn.release()
	// The TLS connection keeps reading through conn: from now on it is
	// the raw connection and nothing more.
	conn.done.Store(true)
	if err != nil {
		return c, info, err
	}
	// gRPC reads the HTTP/2 preface next and clears the deadline once
	// its transport is set up: allow it as long as a handshake.
	_ = raw.SetDeadline(time.Now().Add(g.timeout))
	return c, info, nil
}

// acquire waits for a slot, at most queueTimeout.
func (g *handshakeGate) acquire(raw net.Conn) error {
	select {
	case g.slots <- struct{}{}:
	default:
		g.waiting.Add(1)
		t := time.NewTimer(g.queueTimeout)
		select {
		case g.slots <- struct{}{}:
			t.Stop()
			g.waiting.Add(-1)
		case <-t.C:
			g.waiting.Add(-1)
			g.refused.Add(1)
			return fmt.Errorf("%w (%v, %s)", errHandshakeQueue, g.queueTimeout, raw.RemoteAddr())
		}
	}
	cur := g.inProgress.Add(1)
	for p := g.peak.Load(); cur > p && !g.peak.CompareAndSwap(p, cur); p = g.peak.Load() {
	}
	return nil
}

func (g *handshakeGate) releaseSlot() {
	g.inProgress.Add(-1)
	<-g.slots
}

// gatedConn is the connection a handshake reads and writes: its first
// reads return the bytes already read; a read that has to wait for the
// client gives the slot back first and queues for one again once bytes
// arrived, so the slot is held only while the handshake computes. Once the
// handshake is over (done) it is the raw connection.
type gatedConn struct {
	net.Conn
	g      *handshakeGate
	held   bool // only the handshake's goroutine reads and writes held
	prefix []byte
	done   atomic.Bool
}

func (c *gatedConn) Read(p []byte) (int, error) {
	if c.done.Load() {
		return c.Conn.Read(p)
	}
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	c.release()
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	if qerr := c.g.acquire(c.Conn); qerr != nil {
		return 0, qerr
	}
	c.held = true
	return n, err
}

// release gives the slot back if held.
func (c *gatedConn) release() {
	if c.held {
		c.held = false
		c.g.releaseSlot()
	}
}
