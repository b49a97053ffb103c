package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/pki"
)

// streamLayer is raft's network: TCP, with mutual TLS outside --dev where
// both ends must present coordinator certificates of the site's CA.
//
// blocked is a fault-injection switch for tests: while set, dials fail,
// accepted connections are closed and every open connection is cut, which
// isolates the server from its raft peers (gRPC keeps working).
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	clientTLS *tls.Config // nil: plaintext

	blocked atomic.Bool
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	// onPeerClosed, when set, is called (it must not block) when a
	// connection a peer opened to us ends from its side: the leader's
	// replication and heartbeat connections end when its process dies.
	onPeerClosed atomic.Pointer[func()]
}

func newStreamLayer(ln net.Listener, advertise net.Addr, serverTLS, clientTLS *tls.Config) *streamLayer {
	s := &streamLayer{advertise: advertise, clientTLS: clientTLS, conns: map[net.Conn]struct{}{}}
	if serverTLS != nil {
		ln = tls.NewListener(ln, requireCoordinatorClient(serverTLS))
	}
	s.ln = ln
	return s
}

// requireCoordinatorClient returns cfg changed to require a verified
// client certificate naming a coordinator.
func requireCoordinatorClient(cfg *tls.Config) *tls.Config {
	check := func(cs tls.ConnectionState) error {
		id, err := pki.IdentityFromConnState(cs)
		if err != nil {
			return fmt.Errorf("raft peer: %w", err)
		}
		if id.Kind != pki.KindCoordinator {
			return fmt.Errorf("raft peer %s is not a coordinator", id)
		}
		return nil
	}
	c := cfg.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.VerifyConnection = check
	if get := cfg.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			inner, err := get(hi)
			if err != nil || inner == nil {
				return inner, err
			}
			inner = inner.Clone()
			inner.ClientAuth = tls.RequireAndVerifyClientCert
			inner.VerifyConnection = check
			return inner, nil
		}
	}
	return c
}

func (s *streamLayer) track(c net.Conn, accepted bool) net.Conn {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return &trackedConn{Conn: c, s: s, accepted: accepted}
}

type trackedConn struct {
	net.Conn
	s        *streamLayer
	once     sync.Once
	accepted bool // opened by the peer
	closed   atomic.Bool
}

// Read and Write fail while the layer is blocked, so that no raft traffic
// passes even on a connection set up while the block was being switched on.
func (c *trackedConn) Read(b []byte) (int, error) {
	if c.s.blocked.Load() {
		c.Close()
		return 0, errBlocked
	}
	n, err := c.Conn.Read(b)
	if err != nil && c.accepted && !c.closed.Load() && !c.s.blocked.Load() {
		if f := c.s.onPeerClosed.Load(); f != nil {
			(*f)()
		}
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	if c.s.blocked.Load() {
		c.Close()
		return 0, errBlocked
	}
	return c.Conn.Write(b)
}

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c.Conn)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

// Accept waits for the next raft connection.
func (s *streamLayer) Accept() (net.Conn, error) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return nil, err
		}
		if s.blocked.Load() {
			c.Close()
			continue
		}
		return s.track(c, true), nil
	}
}

func (s *streamLayer) Close() error   { return s.ln.Close() }
func (s *streamLayer) Addr() net.Addr { return s.advertise }

var errBlocked = errors.New("raft network blocked (fault injection)")

// Dial opens a raft connection to address.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if s.blocked.Load() {
		return nil, errBlocked
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil {
		return nil, err
	}
	if s.clientTLS != nil {
		tc := tls.Client(c, s.clientTLS)
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("raft tls handshake with %s: %w", address, err)
		}
		c = tc
	}
	return s.track(c, false), nil
}

// setBlocked switches the fault-injection block on or off.
func (s *streamLayer) setBlocked(b bool) {
	s.blocked.Store(b)
	if !b {
		return
	}
	s.mu.Lock()
	conns := make([]net.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
