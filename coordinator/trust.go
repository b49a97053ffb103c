package coordinator

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"time"

	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// What a watch may say about its node. Everything an agent sends is
// checked here, before anything reaches raft, and refused with
// InvalidArgument naming the field, the (Go-quoted) value and the limit.
const (
	// MaxNodeAddresses is the most addresses a node may report.
	MaxNodeAddresses = 16
	// MaxAgentVersionLen bounds WatchNodeStateRequest.agent_version.
	MaxAgentVersionLen = 64
	// maxKnownHashLen bounds WatchNodeStateRequest.known_hash (hex sha256).
	maxKnownHashLen = 64
)

// quote shows an agent-supplied value in an error: Go-quoted (a newline
// shows as \n), cut to 64 bytes.
func quote(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// checkWatchRequest validates every agent-supplied string of a watch and
// returns the addresses in canonical form.
func checkWatchRequest(req *hivev1.WatchNodeStateRequest) ([]string, error) {
	if err := pki.ValidateName(req.GetNode()); err != nil {
		return nil, invalid("node: %v", err)
	}
	if n := len(req.GetLabels()); n > pki.MaxLabels {
		return nil, invalid("labels: %d labels; the limit is %d", n, pki.MaxLabels)
	}
	for k, v := range req.GetLabels() {
		if err := pki.ValidateLabel(k, v); err != nil {
			return nil, invalid("labels[%s]: %v", quote(k), err)
		}
	}
	v := req.GetAgentVersion()
	if len(v) > MaxAgentVersionLen {
		return nil, invalid("agent_version %s is %d bytes; the limit is %d", quote(v), len(v), MaxAgentVersionLen)
	}
	for i, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' || r == '+' || r == '~') {
			return nil, invalid("agent_version %s has %q at offset %d (allowed: letters, digits, . - _ + ~)", quote(v), r, i)
		}
	}
	if h := req.GetKnownHash(); len(h) > maxKnownHashLen {
		return nil, invalid("known_hash is %d bytes; the limit is %d", len(h), maxKnownHashLen)
	}
	return checkAddresses(req.GetAddresses())
}

// checkAddresses accepts at most MaxNodeAddresses single unicast IP
// addresses (no prefix length, no zone, not 0.0.0.0 or ::, not multicast)
// and returns them canonical, without duplicates.
func checkAddresses(addrs []string) ([]string, error) {
	if len(addrs) > MaxNodeAddresses {
		return nil, invalid("addresses: %d addresses; the limit is %d", len(addrs), MaxNodeAddresses)
	}
	var out []string
	for i, a := range addrs {
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			return nil, invalid("addresses[%d] %s: not a single IP address (no prefix length, no host name)", i, quote(a))
		case ip.Zone() != "":
			return nil, invalid("addresses[%d] %s: an IPv6 zone is not allowed", i, quote(a))
		case ip.IsUnspecified():
			return nil, invalid("addresses[%d] %s: the unspecified address is not a node's address", i, quote(a))
		case ip.IsMulticast():
			return nil, invalid("addresses[%d] %s: a multicast address is not a node's address", i, quote(a))
		}
		c := ip.Unmap().String()
		if !containsStr(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

func containsStr(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

// watchIdentity returns what the watch's connection proves about the node:
// for an agent certificate its bound labels, serial and expiry; in --dev
// (no certificates) the labels the agent reports, marked "dev"; for an
// admin watching as a node nil (the record's identity is kept).
func (s *Server) watchIdentity(ctx context.Context, req *hivev1.WatchNodeStateRequest) (*hivev1.NodeIdentity, *x509.Certificate, error) {
	id := callerFrom(ctx)
	if id.Kind != pki.KindAgent {
		if s.cfg.Dev && id == devIdentity {
			return &hivev1.NodeIdentity{Source: state.SourceDev, Labels: req.GetLabels()}, nil, nil
		}
		return nil, nil, nil
	}
	leaf, err := pki.LeafFromContext(ctx)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unauthenticated, "agent certificate: %v", err)
	}
	labels, err := pki.LabelsFromCert(leaf)
	if err != nil {
		return nil, nil, status.Errorf(codes.PermissionDenied, "agent certificate of %s: %v", id, err)
	}
	return &hivev1.NodeIdentity{
		Source: state.SourceCertificate, Labels: labels,
		Serial: leaf.SerialNumber.Text(16), NotAfter: timestamppb.New(leaf.NotAfter),
	}, leaf, nil
}

// checkAgentAddresses refuses an address an agent cannot vouch for: each
// must be the address its connection comes from, or an IP SAN of its
// certificate (`hivectl tls cert create --agent NAME --ip ADDR`). Admins
// and --dev callers are not checked (an admin is trusted; --dev listens on
// loopback only).
func checkAgentAddresses(ctx context.Context, leaf *x509.Certificate, addrs []string) error {
	if leaf == nil {
		return nil
	}
	var from netip.Addr
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
			from = ap.Addr().Unmap()
		}
	}
	for i, a := range addrs {
		ip := netip.MustParseAddr(a)
		if ip == from {
			continue
		}
		if containsIP(leaf.IPAddresses, ip) {
			continue
		}
		return status.Errorf(codes.PermissionDenied, "addresses[%d] %s: neither the address this connection comes from (%v) nor an IP address of the node's certificate %v", i, quote(a), from, leaf.IPAddresses)
	}
	return nil
}

func containsIP(ips []net.IP, ip netip.Addr) bool {
	for _, c := range ips {
		if a, ok := netip.AddrFromSlice(c); ok && a.Unmap() == ip {
			return true
		}
	}
	return false
}

// Bootstrap token limits.
const (
	// DefaultTokenTTL is a bootstrap token's default lifetime.
	DefaultTokenTTL = time.Hour
	// MaxTokenTTL is the longest lifetime a token may be created with.
	MaxTokenTTL = 7 * 24 * time.Hour
)

// checkNodePattern accepts a path.Match pattern of node names that has at
// least one literal character (so "*" alone, any name, is refused).
func checkNodePattern(p string) error {
	if len(p) > pki.MaxNameLen {
		return fmt.Errorf("node_pattern %s is %d bytes; the limit is %d", quote(p), len(p), pki.MaxNameLen)
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("node_pattern %s: %v", quote(p), err)
	}
	literal := false
	for i, r := range p {
		switch {
		case r == '*' || r == '?' || r == '[' || r == ']' || r == '^' || r == '!':
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-', r == '@':
			literal = true
		default:
			return fmt.Errorf("node_pattern %s has %q at offset %d (allowed: name characters and * ? [ ])", quote(p), r, i)
		}
	}
	if !literal {
		return fmt.Errorf("node_pattern %s matches any name; give a node name or a pattern with a fixed part, e.g. 'web-*'", quote(p))
	}
	return nil
}

// Rate limit of RequestCertificate, the one call open to clients without a
// certificate: a token bucket per source IP address.
const (
	// CertRequestRate is the sustained rate per source address (per second).
	CertRequestRate = 5
	// CertRequestBurst is the bucket size.
	CertRequestBurst = 10
	// maxLimiterSources bounds the table; when full, idle buckets (full
	// again) are dropped, and if none is, the call is refused.
	maxLimiterSources = 4096
)

// sourceAddr is the IP a call comes from (the zero Addr when unknown: all
// such callers share one bucket).
func sourceAddr(ctx context.Context) netip.Addr {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
			return ap.Addr().Unmap()
		}
	}
	return netip.Addr{}
}
