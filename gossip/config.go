package gossip

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// DefaultPort is hive's gossip port. It is deliberately not memberlist's
// 7946, which Docker swarm's own gossip uses on swarm hosts.
const DefaultPort = 7402

// MaxMetaSize is the largest encoded MemberMeta memberlist can carry.
const MaxMetaSize = memberlist.MetaMaxSize

// Profile selects memberlist's timing.
type Profile string

const (
	// ProfileLAN is memberlist's LAN timing (probe every second, push/pull
	// every 30s). The default.
	ProfileLAN Profile = "lan"
	// ProfileWAN is memberlist's WAN timing, for links with high latency.
	ProfileWAN Profile = "wan"
	// ProfileLocal detects failures within a few seconds; for loopback tests
	// and network-namespace labs, not for real fleets.
	ProfileLocal Profile = "local"
)

// Config configures a gossip member.
type Config struct {
	// Name is the member's unique name in the pool (the node name).
	Name string
	// BindAddr is host:port to listen on (UDP and TCP). Port 0 picks a free
	// port (tests). Default ":7402".
	BindAddr string
	// AdvertiseAddr is the host:port (or host, then the bound port) other
	// members reach this one at. Empty: memberlist picks a private address
	// of this host (or the bind address if it is not a wildcard).
	AdvertiseAddr string
	// Join lists host:port of members to join. Run retries with exponential
	// backoff and jitter until one join succeeds, and later rejoins any of
	// them that is not an alive member (healing partitions). Empty: this
	// member starts a pool and waits for others to join it.
	Join []string
	// Meta is advertised to the pool; encoded it must fit MaxMetaSize.
	Meta *hivev1.MemberMeta
	// Key encrypts gossip (AES-GCM, 16, 24 or 32 bytes). Nil: plaintext,
	// only for --dev.
	Key []byte
	// Logger receives lifecycle logs and memberlist's own log lines.
	Logger *slog.Logger
	// Profile selects memberlist timing (default ProfileLAN).
	Profile Profile
	// PoolSize is the number of members the pool is expected to hold
	// (the fleet: agents and coordinators). With ProfileLAN it sizes
	// memberlist's timing and queues for that many members (see
	// SizeFor); 0 or anything up to 64 keeps memberlist's LAN defaults.
	// memberlist's own scaling (suspicion timeout, retransmits and
	// push/pull interval grow with log N of the members it knows) applies
	// on top.
	PoolSize int

	// JoinBackoffMin and JoinBackoffMax bound the retry delay of joins.
	JoinBackoffMin, JoinBackoffMax time.Duration
	// JoinSpread is the longest random delay before the first join: when
	// a whole fleet starts at once (after a power cut), its joins arrive
	// spread over this window instead of at the same moment. Zero: join
	// at once.
	JoinSpread time.Duration
	// RejoinInterval is how often join addresses that are not alive members
	// are joined again (jittered). Zero disables rejoining. An address
	// that stays missing is retried with exponential backoff up to
	// RejoinMax, so that a fleet does not hammer a seed that is down.
	RejoinInterval time.Duration
	// RejoinMax bounds the rejoin backoff of one address (default
	// RejoinInterval × 8).
	RejoinMax time.Duration
	// DeadRetention is how long dead and left members stay in Members().
	DeadRetention time.Duration
	// LeaveTimeout bounds the leave broadcast on shutdown.
	LeaveTimeout time.Duration
}

// DefaultConfig returns the defaults: port 7402, LAN timing, no key.
func DefaultConfig() Config {
	return Config{
		BindAddr:       ":" + strconv.Itoa(DefaultPort),
		Profile:        ProfileLAN,
		JoinBackoffMin: 500 * time.Millisecond,
		JoinBackoffMax: 15 * time.Second,
		RejoinInterval: 15 * time.Second,
		RejoinMax:      2 * time.Minute,
		DeadRetention:  time.Hour,
		LeaveTimeout:   3 * time.Second,
	}
}

// Validate reports the first problem of c.
func (c *Config) Validate() error {
	if c.Name == "" {
		return errors.New("gossip: name is empty")
	}
	if _, _, err := splitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("gossip: bind address: %w", err)
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitAdvertise(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("gossip: advertise address: %w", err)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("gossip: join address %q: %w", j, err)
		}
	}
	if err := validateMeta(c.Meta); err != nil {
		return err
	}
	if c.Key != nil {
		if err := memberlist.ValidateKey(c.Key); err != nil {
			return fmt.Errorf("gossip: key: %w", err)
		}
	}
	switch c.Profile {
	case "", ProfileLAN, ProfileWAN, ProfileLocal:
	default:
		return fmt.Errorf("gossip: unknown profile %q (lan, wan, local)", c.Profile)
	}
	if c.JoinBackoffMin <= 0 || c.JoinBackoffMax < c.JoinBackoffMin {
		return fmt.Errorf("gossip: join backoff %v..%v is invalid", c.JoinBackoffMin, c.JoinBackoffMax)
	}
	if c.RejoinInterval < 0 || c.RejoinMax < 0 || c.DeadRetention < 0 || c.LeaveTimeout < 0 || c.JoinSpread < 0 {
		return errors.New("gossip: negative interval")
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("gossip: pool size %d is negative", c.PoolSize)
	}
	return nil
}

// ErrMetaTooLarge is returned when an encoded MemberMeta does not fit the
// MaxMetaSize bytes memberlist allows.
var ErrMetaTooLarge = errors.New("gossip: member metadata too large")

func encodeMeta(m *hivev1.MemberMeta) ([]byte, error) {
	if m == nil {
		return nil, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode member metadata: %w", err)
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d (fewer or shorter labels)", ErrMetaTooLarge, len(b), MaxMetaSize)
	}
	return b, nil
}

func validateMeta(m *hivev1.MemberMeta) error {
	_, err := encodeMeta(m)
	return err
}

// ParseKey decodes a gossip key file's content: the standard base64 form of
// 16, 24 or 32 random bytes (surrounding white space ignored), as NewKey
// makes.
func ParseKey(text []byte) ([]byte, error) {
	s := strings.TrimSpace(string(text))
	if s == "" {
		return nil, errors.New("gossip: key is empty")
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip: key is not base64: %w", err)
	}
	if err := memberlist.ValidateKey(k); err != nil {
		return nil, fmt.Errorf("gossip: key: %w", err)
	}
	return k, nil
}

func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, port, nil
}

// splitAdvertise accepts host:port or a bare host (port 0: the bound one).
func splitAdvertise(s string) (string, int, error) {
	if h, p, err := splitHostPort(s); err == nil {
		if net.ParseIP(h) == nil {
			return "", 0, fmt.Errorf("%q is not an IP address", h)
		}
		return h, p, nil
	}
	if net.ParseIP(s) == nil {
		return "", 0, fmt.Errorf("%q is neither IP nor IP:port", s)
	}
	return s, 0, nil
}

func (c *Config) memberlistConfig() (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch c.Profile {
	case ProfileWAN:
		mc = memberlist.DefaultWANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 250 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.SuspicionMaxTimeoutMult = 2
		mc.GossipInterval = 50 * time.Millisecond
		mc.PushPullInterval = 5 * time.Second
		mc.GossipToTheDeadTime = 5 * time.Second
	default:
		mc = memberlist.DefaultLANConfig()
		SizeFor(mc, c.PoolSize)
	}
	// The queue of received messages waiting for memberlist's handler:
	// a join storm or a burst of state changes from thousands of members
	// arrives faster than a busy member handles it, and memberlist drops
	// what does not fit ("handler queue full"), which loses acks and
	// makes healthy members suspect. Serf keeps at least 4096 of its
	// own messages queued, or twice the members.
	mc.HandoffQueueDepth = max(mc.HandoffQueueDepth, 4096, 2*c.PoolSize)
	// memberlist compresses every packet, each ping and ack included, with
	// a new LZW writer holding a 64 KiB table: on an idle member most of
	// the garbage, and so most of the collector's work, came from
	// compressing packets of a few hundred bytes. Outside WAN timing the
	// bytes are cheaper than the CPU; members with and without
	// compression understand each other (a compressed message says so).
	if c.Profile != ProfileWAN {
		mc.EnableCompression = false
	}
	mc.Name = c.Name
	host, port, err := splitHostPort(c.BindAddr)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if c.AdvertiseAddr != "" {
		ah, ap, err := splitAdvertise(c.AdvertiseAddr)
		if err != nil {
			return nil, err
		}
		mc.AdvertiseAddr = ah
		if ap != 0 {
			mc.AdvertisePort = ap
		}
	}
	if c.Key != nil {
		mc.SecretKey = append([]byte(nil), c.Key...)
	}
	return mc, nil
}

// SizeFor adjusts memberlist LAN timing for a pool of n members. Every
// member probes one other per ProbeInterval and gossips every
// GossipInterval, so a pool of n costs n probes per interval over the
// network (and, on one machine running many members, n times one
// member's CPU). hive does not need second-scale failure detection from
// gossip (watch streams have their own keepalives; gossip states are
// shown, not acted on), so large pools trade detection time for load,
// as memberlist's WAN profile does:
//
//	members   probe interval  probe timeout  gossip interval  suspicion mult
//	≤ 64      1s              500ms          200ms            4  (LAN defaults)
//	≤ 256     2s              1s             300ms            4
//	≤ 512     3s              1s             400ms            4
//	≤ 1024    4s              1.5s           500ms            3
//	more      5s              2s             500ms            3
//
// A dead member is declared after about ProbeInterval + SuspicionMult ×
// log10(n) × ProbeInterval (at the earliest: memberlist lengthens it when
// few members confirm the suspicion): ~8 s at 64 members (1 s probes),
// ~40 s at 1,000 (4 s). The push/pull interval (30 s) is scaled by memberlist itself
// (×6 at 1,000 members); gossip fan-out (3 members) and retransmits
// (4 × log10(n+1)) are memberlist's. SizeFor leaves mc unchanged for
// n ≤ 64.
func SizeFor(mc *memberlist.Config, n int) {
	switch {
	case n <= 64:
		return
	case n <= 256:
		mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = 2*time.Second, time.Second, 300*time.Millisecond
	case n <= 512:
		mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = 3*time.Second, time.Second, 400*time.Millisecond
	case n <= 1024:
		mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = 4*time.Second, 1500*time.Millisecond, 500*time.Millisecond
		mc.SuspicionMult = 3
	default:
		mc.ProbeInterval, mc.ProbeTimeout, mc.GossipInterval = 5*time.Second, 2*time.Second, 500*time.Millisecond
		mc.SuspicionMult = 3
	}
	// Dead members are gossiped about for as long as a push/pull round
	// takes to reach everyone.
	mc.GossipToTheDeadTime = max(mc.GossipToTheDeadTime, 10*mc.ProbeInterval)
}

// NewKey returns a new random 32-byte gossip key in the text form ParseKey
// reads (for key files and the demo).
func NewKey() (string, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("gossip: make key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k), nil
}
