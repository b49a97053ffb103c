package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hivefleet/hive/pki"
)

// Default addresses (ports 7400–7403 are hive's; 7946, memberlist's
// default, is Docker swarm's own on swarm hosts and never used).
const (
	DefaultGRPCAddr   = ":7400"
	DefaultRaftAddr   = ":7401"
	DefaultGossipAddr = ":7402"
	DefaultHTTPAddr   = ":7403"
	// DefaultMaxPushBytes is the largest push accepted (encoded request).
	DefaultMaxPushBytes = 4 << 20
	// MaxSecretBytes is the largest secret value accepted.
	MaxSecretBytes = 64 << 10
	// MinAgentCertLifetime and MaxAgentCertLifetime bound
	// Config.AgentCertLifetime (the minimum is for tests).
	MinAgentCertLifetime = 10 * time.Second
	MaxAgentCertLifetime = 365 * 24 * time.Hour
)

// Config configures a Server. Only cmd/hive-coordinator reads flags, the
// environment and files to fill it.
type Config struct {
	// Name is the server's raft id and gossip name (default: host name).
	Name string
	// DataDir holds raft.db (log and stable store), snapshots/ and
	// keyring.json.
	DataDir string
	// Dev: one server, plaintext gRPC and raft allowed, bootstraps itself
	// at once, every caller is allowed everything (author "dev").
	Dev bool

	GRPCAddr   string
	RaftAddr   string
	GossipAddr string
	// HTTPAddr serves /metrics and /healthz ("" disables).
	HTTPAddr string
	// AdvertiseAddr is the IP other servers and agents use to reach this
	// one when the listen addresses are unspecified (0.0.0.0 / ::).
	AdvertiseAddr string

	// Join lists gossip addresses to join (retried).
	Join []string
	// GossipKey encrypts gossip (16, 24 or 32 bytes; nil: plaintext).
	GossipKey []byte
	// GossipProfile is the gossip timing: lan (default), wan or local.
	GossipProfile string
	// BootstrapExpect: bootstrap raft once this many coordinators found
	// each other (1: bootstrap alone at once).
	BootstrapExpect int
	// BootstrapPeers bootstraps raft with exactly these servers when the
	// data directory is empty (every listed server must be given the same
	// list). Used by tests and by the gossip bootstrap.
	BootstrapPeers []Peer

	// TLS files (all required outside Dev).
	TLSCA, TLSCert, TLSKey string
	// TLSCAKey, when set, lets this server sign agent certificates for
	// redeemed bootstrap tokens (RequestCertificate).
	TLSCAKey string
	// AgentCertLifetime is the lifetime of the agent certificates this
	// server signs (bootstrap and renewal; agents renew at two thirds).
	AgentCertLifetime time.Duration

	// KeyringFile holds the secret-sealing keys (default
	// DataDir/keyring.json; created when missing).
	KeyringFile string

	// Raft tuning.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	// ApplyTimeout bounds one raft apply (and a forwarded write).
	ApplyTimeout time.Duration

	// Raft membership (join.go). ReconcileInterval is how often the leader
	// checks gossip and its non-voters (also on every gossip event). A
	// non-voter is promoted to voter once it has stayed within
	// PromoteMaxLag entries of the leader's last index, in the same term,
	// for PromoteStabilization; one that cannot prove its coordinator
	// certificate for NonvoterTimeout is removed.
	ReconcileInterval    time.Duration
	PromoteStabilization time.Duration
	PromoteMaxLag        uint64
	NonvoterTimeout      time.Duration

	// ReportBatchMax is the most reports in one raft entry.
	ReportBatchMax int
	// /healthz bounds (health.go): a server answers 503 when it knows no
	// leader, when a follower has not heard from the leader for
	// HealthMaxContact, or when its applied index is more than
	// HealthMaxLag entries behind the leader's.
	HealthMaxLag     uint64
	HealthMaxContact time.Duration
	// MembershipDebounce coalesces watch wake-ups after registry changes.
	MembershipDebounce time.Duration
	// MaxPushBytes bounds the encoded size of a push.
	MaxPushBytes int

	// gRPC keepalive. KeepaliveMinTime is the shortest ping interval a
	// client may use (pings also allowed without an open stream; a client
	// pinging faster is sent GOAWAY ENHANCE_YOUR_CALM "too_many_pings"), so
	// agents can find a silently dead coordinator at the HTTP/2 level.
	// KeepaliveTime is how long a connection may be idle before the server
	// pings the client, and KeepaliveTimeout how long it waits for the
	// answer before closing the connection.
	KeepaliveMinTime time.Duration
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration

	// Pprof serves Go's runtime profiles (net/http/pprof) under
	// /debug/pprof/ on HTTPAddr. Off by default: a CPU profile costs CPU,
	// and like /metrics the listener has no authentication.
	Pprof bool

	// Logger receives structured logs (component attributes are added).
	Logger *slog.Logger
}

// Peer is a raft server.
type Peer struct {
	ID      string
	Address string
}

// DefaultConfig returns the production defaults. The raft timeouts are
// raft's (and Consul's) own, kept for loaded hosts: a follower calls an
// election after 1–3 s without the leader, which is how a leader whose host
// vanished silently is replaced; a leader whose process died is replaced
// at once (raftnode.Node.LeaderGone: its raft port refuses connections).
// 500 ms timeouts were tried: elections and lease step-downs under load
// (make test at load average 800). The leader lease is the heartbeat
// timeout (raft allows no longer; its default is half): a leader steps
// down only after a whole second without hearing from a quorum, not after
// the 500 ms that a starved host (hundreds of agents reconnecting at once,
// or ten 4.5 MB reports arriving on a loaded machine) went without
// answering. A leader cut off from its followers keeps the title 0.5 s
// longer; it can commit nothing meanwhile, and consistent reads still
// check leadership with a quorum round (raftnode).
func DefaultConfig() Config {
	return Config{
		GRPCAddr:           DefaultGRPCAddr,
		RaftAddr:           DefaultRaftAddr,
		GossipAddr:         DefaultGossipAddr,
		HTTPAddr:           DefaultHTTPAddr,
		BootstrapExpect:    0,
		HeartbeatTimeout:   time.Second,
		ElectionTimeout:    time.Second,
		LeaderLeaseTimeout: time.Second,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		ApplyTimeout:       10 * time.Second,
		ReportBatchMax:     1000,
		HealthMaxLag:       DefaultHealthMaxLag,
		HealthMaxContact:   DefaultHealthMaxContact,
		MembershipDebounce: 100 * time.Millisecond,
		MaxPushBytes:       DefaultMaxPushBytes,
		AgentCertLifetime:  pki.DefaultAgentCertLifetime,
		KeepaliveMinTime:   10 * time.Second,
		KeepaliveTime:      30 * time.Second,
		KeepaliveTimeout:   10 * time.Second,

		// Consul autopilot's defaults: 10 s stable, 250 entries behind.
		ReconcileInterval:    3 * time.Second,
		PromoteStabilization: 10 * time.Second,
		PromoteMaxLag:        250,
		NonvoterTimeout:      5 * time.Minute,
	}
}

// DevConfig returns DefaultConfig adjusted for --dev: fast election,
// bootstrap alone.
func DevConfig() Config {
	c := DefaultConfig()
	c.Dev = true
	c.Name = "dev"
	c.BootstrapExpect = 1
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	return c
}

// ErrNoTLS is returned by Validate outside Dev when the TLS files are
// missing.
var ErrNoTLS = errors.New("mutual TLS certificates are required outside --dev: create them with `hivectl tls ca create` and `hivectl tls cert create --coordinator NAME --ip ADDR`, then pass --tls-ca ca.pem --tls-cert NAME.pem --tls-key NAME-key.pem")

// Validate checks the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	for _, a := range []struct{ name, v string }{{"grpc", c.GRPCAddr}, {"raft", c.RaftAddr}} {
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q: %w", a.name, a.v, err))
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("http address %q: %w", c.HTTPAddr, err))
		}
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("advertise address %q is not an IP", c.AdvertiseAddr))
	}
	if !c.Dev && (c.TLSCA == "" || c.TLSCert == "" || c.TLSKey == "") {
		errs = append(errs, ErrNoTLS)
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, fmt.Errorf("bootstrap-expect %d is negative", c.BootstrapExpect))
	}
	if c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, errors.New("raft timeouts must be positive and the leader lease no longer than the heartbeat timeout"))
	}
	if c.ApplyTimeout <= 0 {
		errs = append(errs, errors.New("apply timeout must be positive"))
	}
	if c.ReconcileInterval <= 0 || c.PromoteStabilization < 0 || c.NonvoterTimeout <= 0 {
		errs = append(errs, errors.New("reconcile interval and non-voter timeout must be positive, promote stabilization not negative"))
	}
	if c.HealthMaxLag == 0 || c.HealthMaxContact <= 0 {
		errs = append(errs, errors.New("health max lag and max contact must be positive"))
	}
	if c.ReportBatchMax <= 0 {
		errs = append(errs, errors.New("report batch max must be positive"))
	}
	if c.MaxPushBytes <= 0 {
		errs = append(errs, errors.New("max push bytes must be positive"))
	}
	if c.KeepaliveMinTime <= 0 || c.KeepaliveTime < time.Second || c.KeepaliveTimeout <= 0 {
		errs = append(errs, errors.New("keepalive min time and timeout must be positive and keepalive time at least 1s"))
	}
	if c.AgentCertLifetime < MinAgentCertLifetime || c.AgentCertLifetime > MaxAgentCertLifetime {
		errs = append(errs, fmt.Errorf("agent certificate lifetime %v: must be between %v and %v", c.AgentCertLifetime, MinAgentCertLifetime, MaxAgentCertLifetime))
	}
	if c.SnapshotThreshold == 0 || c.SnapshotInterval <= 0 {
		errs = append(errs, errors.New("snapshot threshold and interval must be positive"))
	}
	return errors.Join(errs...)
}
