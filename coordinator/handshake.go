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
// A slot is taken only once the client has sent the first bytes of its
// ClientHello (a connection that sends nothing, a port scan, a TCP health
// probe, waits outside the gate under gRPC's own connection timeout), and
// is held at most handshakeSlotTimeout: a client that stalls mid-handshake
// then fails, so a slow or hostile peer holds a slot for that long at
// most. A connection that waited handshakeQueueTimeout for a slot is
// closed; the client retries with its backoff (agents dial with a 3 s
// attempt timeout and back off with jitter).

const (
	// handshakeSlotTimeout bounds one handshake once it has a slot: TLS
	// 1.3 with client certificates is one round trip after the
	// ClientHello plus about a millisecond of CPU (P-256), but on a
	// starved host that millisecond can take seconds of wall time, and a
	// handshake cut short is a reconnect, i.e. more work: 5 s.
	handshakeSlotTimeout = 5 * time.Second
	// handshakeQueueTimeout bounds the wait for a slot.
	handshakeQueueTimeout = 20 * time.Second
)

// errHandshakeQueue is returned for a connection that waited too long
// for a handshake slot.
var errHandshakeQueue = errors.New("tls handshake: server busy (no handshake slot within the queue timeout)")

// handshakeGate bounds the server-side TLS handshakes in progress.
type handshakeGate struct {
	slots        chan struct{}
	slotTimeout  time.Duration
	queueTimeout time.Duration

	inProgress atomic.Int64 // handshakes holding a slot
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
	return &handshakeGate{slots: make(chan struct{}, n), slotTimeout: handshakeSlotTimeout, queueTimeout: handshakeQueueTimeout}
}

// handshake runs hs on raw once the client's first bytes arrived and a
// slot is free.
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
	conn := &prefixConn{Conn: raw, prefix: first[:n]}

	g.waiting.Add(1)
	t := time.NewTimer(g.queueTimeout)
	select {
	case g.slots <- struct{}{}:
		t.Stop()
		g.waiting.Add(-1)
	case <-t.C:
		g.waiting.Add(-1)
		g.refused.Add(1)
		return nil, nil, fmt.Errorf("%w (%v, %s)", errHandshakeQueue, g.queueTimeout, raw.RemoteAddr())
	}
	cur := g.inProgress.Add(1)
	for p := g.peak.Load(); cur > p && !g.peak.CompareAndSwap(p, cur); p = g.peak.Load() {
	}
	_ = raw.SetDeadline(time.Now().Add(g.slotTimeout))
	c, info, err := hs(conn)
	g.inProgress.Add(-1)
	<-g.slots
	if err != nil {
		return c, info, err
	}
	// gRPC reads the HTTP/2 preface next and clears the deadline once
	// its transport is set up: allow it as long as a handshake.
	_ = raw.SetDeadline(time.Now().Add(g.slotTimeout))
	return c, info, nil
}

// prefixConn is a connection whose first reads return bytes already read
// from it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
