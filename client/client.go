// Package client connects to hive coordinators over gRPC: mutual TLS with
// the pki package's configurations (or plaintext for a --dev coordinator),
// trying the configured addresses in order and keeping the first that
// answers a gRPC health check.
//
// It is shared by hivectl and hive-agent. It never reads flags, environment
// or files other than the TLS files named in Config; the callers map their
// flags (hivectl: --addr, --ca, --cert, --key and HIVE_ADDR, HIVE_CACERT,
// HIVE_CERT, HIVE_KEY) onto Config. Dial blocks until an address answered or
// ctx ends; the returned Conn is safe for concurrent use by many goroutines.
// With Config.Failover (hivectl), a unary call that fails in transport moves
// on to the next address when RetryOf says it is safe to send twice
// (failover.go); without it (the agent, which reconnects its watch itself)
// every call goes to the coordinator Dial picked.
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// DefaultPort is the coordinator's gRPC port, added to addresses without one.
const DefaultPort = "7400"

// DefaultAddr is used when Config.Addrs is empty.
const DefaultAddr = "127.0.0.1:" + DefaultPort

// MaxMessageSize bounds messages received from coordinators (a generation
// with its source text can be large).
const MaxMessageSize = 64 << 20

// Config says where the coordinators are and how to authenticate.
type Config struct {
	// Addrs are coordinator gRPC addresses (host:port; host alone means
	// port 7400), tried in order.
	Addrs []string
	// CA, Cert and Key are PEM file paths. CA is required unless Insecure;
	// Cert and Key go together (both empty: no client certificate, which
	// only the bootstrap call accepts).
	CA, Cert, Key string
	// Insecure dials without TLS, for a coordinator started with --dev.
	Insecure bool
	// AttemptTimeout bounds the connection and health check of each
	// address (default 3s).
	AttemptTimeout time.Duration
	// Keepalive, when positive, pings the coordinator after this long
	// without traffic and drops the connection when no answer comes within
	// KeepaliveTimeout (default 10s), so that a long-lived watch stream
	// notices a partitioned coordinator. The coordinator's keepalive
	// enforcement policy must allow it (MinTime at most Keepalive), else it
	// closes the connection with "too_many_pings". Zero: no pings.
	Keepalive        time.Duration
	KeepaliveTimeout time.Duration
	// DialOptions are appended to the client's own.
	DialOptions []grpc.DialOption
	// Failover makes the Conn move on to the next address that answers
	// when a unary call fails with UNAVAILABLE and RetryOf says the call
	// may be sent again (failover.go). Off: every call goes to the
	// coordinator Dial picked.
	Failover bool
	// OnFailover, with Failover, is told of each move (from, to and the
	// failure), for a warning line. It must not block.
	OnFailover func(from, to string, err error)
}

// DefaultConfig returns a Config for a coordinator on the local host.
func DefaultConfig() Config {
	return Config{Addrs: []string{DefaultAddr}, AttemptTimeout: 3 * time.Second}
}

// ErrNoTLSFiles is returned by Validate when neither a CA nor Insecure was
// given.
var ErrNoTLSFiles = errors.New("no tls ca given")

// Validate checks the configuration without touching the files.
func (c Config) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("no coordinator address")
	}
	for _, a := range c.Addrs {
		if _, err := NormalizeAddr(a); err != nil {
			return err
		}
	}
	if c.AttemptTimeout < 0 {
		return fmt.Errorf("attempt timeout %v is negative", c.AttemptTimeout)
	}
	if c.Keepalive < 0 || c.KeepaliveTimeout < 0 {
		return errors.New("keepalive durations must not be negative")
	}
	if c.Keepalive > 0 && c.Keepalive < 10*time.Second {
		return fmt.Errorf("keepalive %v: gRPC allows no less than 10s", c.Keepalive)
	}
	if c.Insecure {
		return nil
	}
	if c.CA == "" {
		return ErrNoTLSFiles
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("give both a client certificate and its key, or neither")
	}
	return nil
}

// NormalizeAddr trims addr and adds the default port when it has none. It
// refuses URLs, spaces, empty hosts and ports outside 1-65535.
func NormalizeAddr(addr string) (string, error) {
	a := strings.TrimSpace(addr)
	if a == "" {
		return "", errors.New("empty coordinator address")
	}
	if strings.Contains(a, "://") {
		return "", fmt.Errorf("coordinator address %q: want host:port, not a URL", addr)
	}
	if strings.IndexFunc(a, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return "", fmt.Errorf("coordinator address %q: contains spaces or control characters", addr)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// No port: a bare host name, IPv4 or IPv6 address.
		host = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]")
		if strings.HasPrefix(a, "[") != strings.HasSuffix(a, "]") || strings.ContainsAny(host, "[]") {
			return "", fmt.Errorf("coordinator address %q: %w", addr, err)
		}
		if host == "" {
			return "", fmt.Errorf("coordinator address %q: empty host", addr)
		}
		return net.JoinHostPort(host, DefaultPort), nil
	}
	if host == "" {
		if strings.HasPrefix(a, "[") {
			return "", fmt.Errorf("coordinator address %q: empty host", addr)
		}
		host = "127.0.0.1"
	}
	if port == "" {
		port = DefaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("coordinator address %q: port %q is not a number from 1 to 65535", addr, port)
	}
	return net.JoinHostPort(host, port), nil
}

// Conn is a connection to one coordinator.
type Conn struct {
	hivev1.CoordinatorServiceClient
	// Addr is the address that answered.
	Addr string
	// Serving is false when the coordinator answered NOT_SERVING (still
	// starting, or waiting for its cluster to elect a first leader): its
	// reads may answer from an empty or old state and writes will fail.
	Serving bool
	cc      *grpc.ClientConn
	fo      *failover // nil without Config.Failover
}

// ClientConn returns the underlying gRPC connection (for other services
// such as health); with Config.Failover, the current one.
func (c *Conn) ClientConn() *grpc.ClientConn {
	if c.fo != nil {
		cc, _ := c.fo.current()
		return cc
	}
	return c.cc
}

// Close closes the connection.
func (c *Conn) Close() error {
	if c.fo != nil {
		return c.fo.close()
	}
	return c.cc.Close()
}

// AttemptError is one address that did not answer.
type AttemptError struct {
	Addr string
	Err  error
}

func (e AttemptError) Error() string { return e.Addr + ": " + e.Err.Error() }

// DialError is returned when no address answered; it lists every attempt.
// It wraps ErrUnreachable and, when every attempt failed the same way for a
// TLS reason, that reason.
type DialError struct {
	Attempts []AttemptError
}

// ErrUnreachable: no configured coordinator answered.
var ErrUnreachable = errors.New("no coordinator answered")

func (e *DialError) Error() string {
	var b strings.Builder
	b.WriteString(ErrUnreachable.Error())
	for i, a := range e.Attempts {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(a.Error())
	}
	return b.String()
}

// Unwrap returns ErrUnreachable and the attempts' errors.
func (e *DialError) Unwrap() []error {
	errs := []error{ErrUnreachable}
	for _, a := range e.Attempts {
		errs = append(errs, a.Err)
	}
	return errs
}

// Dial connects to the first address in cfg.Addrs whose coordinator
// answers a health check with SERVING (or has no health service). When
// none is SERVING but some answered NOT_SERVING, it returns the first of
// those with Conn.Serving false. It returns a *DialError listing every
// attempt when none answers at all.
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 3 * time.Second
	}
	var creds credentials.TransportCredentials
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	} else {
		tc, err := pki.ClientTLSConfig(cfg.CA, cfg.Cert, cfg.Key)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	}
	if cfg.Keepalive > 0 {
		to := cfg.KeepaliveTimeout
		if to == 0 {
			to = 10 * time.Second
		}
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: cfg.Keepalive, Timeout: to, PermitWithoutStream: true}))
	}
	opts = append(opts, cfg.DialOptions...)

	var addrs []string
	for _, raw := range cfg.Addrs {
		addr, _ := NormalizeAddr(raw) // validated above
		addrs = append(addrs, addr)
	}
	conn, err := dialFirst(ctx, addrs, cfg.AttemptTimeout, opts)
	if err != nil || !cfg.Failover {
		return conn, err
	}
	conn.fo = &failover{addrs: addrs, timeout: cfg.AttemptTimeout, opts: opts, cc: conn.cc, addr: conn.Addr, onSwitch: cfg.OnFailover}
	conn.CoordinatorServiceClient = hivev1.NewCoordinatorServiceClient(conn.fo)
	return conn, nil
}

// dialFirst connects to the first of addrs that answers SERVING, else the
// first that answered NOT_SERVING, else returns a *DialError.
func dialFirst(ctx context.Context, addrs []string, timeout time.Duration, opts []grpc.DialOption) (*Conn, error) {
	dErr := &DialError{}
	var fallback *Conn // first NOT_SERVING answer
	for _, addr := range addrs {
		conn, err := try(ctx, addr, timeout, opts)
		if err == nil {
			if conn.Serving {
				if fallback != nil {
					fallback.Close()
				}
				return conn, nil
			}
			if fallback == nil {
				fallback = conn
			} else {
				conn.Close()
			}
			continue
		}
		dErr.Attempts = append(dErr.Attempts, AttemptError{Addr: addr, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	if fallback != nil {
		return fallback, nil
	}
	return nil, dErr
}

func try(ctx context.Context, addr string, timeout time.Duration, opts []grpc.DialOption) (*Conn, error) {
	// passthrough: the address is dialled as given (host names resolved by
	// the dialer), so the attempt is bounded by our timeout alone.
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(actx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false))
	serving := true
	switch {
	case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING:
	case err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING:
		serving = false
	case err == nil:
		cc.Close()
		return nil, fmt.Errorf("health status %s", resp.GetStatus())
	case status.Code(err) == codes.Unimplemented:
		// Answering, without a health service.
	default:
		cc.Close()
		return nil, cleanErr(err)
	}
	return &Conn{CoordinatorServiceClient: hivev1.NewCoordinatorServiceClient(cc), Addr: addr, Serving: serving, cc: cc}, nil
}

// cleanErr turns a gRPC connection error into a shorter one: the status
// message carries the cause (refused, TLS failure, timeout).
func cleanErr(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	msg = strings.TrimPrefix(msg, "connection error: desc = ")
	msg = strings.Trim(msg, "\"")
	if st.Code() == codes.DeadlineExceeded {
		msg = "no answer in time"
	}
	return &shortError{msg: msg, err: err}
}

// shortError shows a short message and unwraps to the gRPC status error
// (status.Code still works on it).
type shortError struct {
	msg string
	err error
}

func (e *shortError) Error() string { return e.msg }
func (e *shortError) Unwrap() error { return e.err }
func (e *shortError) GRPCStatus() *status.Status {
	st, _ := status.FromError(e.err)
	return st
}
