package coordinator

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/coordinator/fsm"
	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Revocation, removal and renewal of agent certificates.
//
// The deny list lives in raft (package state: a per-node cut-off on
// NotBefore plus explicit serials). It is enforced in three places:
//   - every call: authorize refuses a denied certificate with
//     PermissionDenied and an expired one with Unauthenticated (TLS checks
//     validity only at the handshake, and connections live for days);
//   - open watch streams: a revocation wakes every watch (hub), which
//     re-checks its caller and ends with the same PermissionDenied;
//   - connections: connTracker knows every TLS connection by its client
//     certificate and closes those of a revoked certificate shortly after
//     the revocation is applied here (after the watch ended with its
//     reason), and every connection when its certificate expires.

// maxRevokeReason bounds the free-text reason of a revocation.
const maxRevokeReason = 1024

// onApply is the FSM's OnApply hook: wake the watches, and when the deny
// list changed, close the connections it now denies. It never blocks.
func (s *Server) onApply(c fsm.Change) {
	s.hub.onApply(c)
	s.statusw.onApply(c, s.fsm.Store().Index())
	if c&fsm.ChangeRevocations != 0 {
		s.conns.kick()
	}
}

// peerLeaf returns the verified client certificate of the call, or nil.
func peerLeaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// checkCert refuses the call's certificate when it expired or when id is
// an agent whose certificate is on the deny list.
func (s *Server) checkCert(ctx context.Context, id pki.Identity) error {
	leaf := peerLeaf(ctx)
	if leaf == nil {
		return nil
	}
	return s.certError(id, leaf, time.Now())
}

func (s *Server) certError(id pki.Identity, leaf *x509.Certificate, now time.Time) error {
	if now.After(leaf.NotAfter) {
		return status.Errorf(codes.Unauthenticated, "certificate %s of %s expired at %s", state.SerialText(leaf.SerialNumber), id, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if id.Kind != pki.KindAgent {
		return nil
	}
	// Every call and every watch wake-up passes here: the serial's text
	// is made only for a node that has a deny-list entry.
	r := s.fsm.Store().Revocation(id.Name)
	if r == nil {
		return nil
	}
	serial := state.SerialText(leaf.SerialNumber)
	if why, denied := state.DeniedBy(r, leaf.NotBefore, serial); denied {
		return status.Errorf(codes.PermissionDenied, "certificate %s of %s %s", serial, id, why)
	}
	return nil
}

func (a *api) RevokeNode(ctx context.Context, req *hivev1.RevokeNodeRequest) (*hivev1.RevokeNodeResponse, error) {
	s := a.s
	node := req.GetNode()
	if err := pki.ValidateName(node); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node: %v", err)
	}
	if len(req.GetReason()) > maxRevokeReason {
		return nil, status.Errorf(codes.InvalidArgument, "reason is %d bytes; the limit is %d", len(req.GetReason()), maxRevokeReason)
	}
	var serials []string
	for _, raw := range req.GetSerials() {
		sn, err := state.NormalizeSerial(raw)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if !slices.Contains(serials, sn) {
			serials = append(serials, sn)
		}
	}
	if len(serials) > state.MaxRevokedSerials {
		return nil, status.Errorf(codes.InvalidArgument, "%d serials; at most %d per node (revoke the whole node instead)", len(serials), state.MaxRevokedSerials)
	}
	sort.Strings(serials)
	if _, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_NodeRevoke{NodeRevoke: &hivev1.NodeRevokeCommand{
		Node: node, Cutoff: len(serials) == 0, Serials: serials, Author: author(ctx), Reason: req.GetReason(),
	}}}); err != nil {
		return nil, toStatus(err)
	}
	st := s.fsm.Store()
	rv := st.Revocation(node)
	s.log.Info("node revoked", "node", node, "serials", serials, "cutoff", rv.GetCutoff().AsTime(), "author", author(ctx), "reason", req.GetReason())
	return &hivev1.RevokeNodeResponse{Revocation: rv, UnknownNode: st.Node(node) == nil}, nil
}

func (a *api) RemoveNode(ctx context.Context, req *hivev1.RemoveNodeRequest) (*hivev1.RemoveNodeResponse, error) {
	s := a.s
	node := req.GetNode()
	if err := pki.ValidateName(node); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node: %v", err)
	}
	if len(req.GetReason()) > maxRevokeReason {
		return nil, status.Errorf(codes.InvalidArgument, "reason is %d bytes; the limit is %d", len(req.GetReason()), maxRevokeReason)
	}
	var published []string
	for _, sec := range s.fsm.Store().Secrets() {
		if strings.HasPrefix(sec.GetName(), node+"/") {
			published = append(published, sec.GetName())
		}
	}
	if _, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_NodeRemove{NodeRemove: &hivev1.NodeRemoveCommand{
		Node: node, Author: author(ctx), Reason: req.GetReason(),
	}}}); err != nil {
		return nil, toStatus(err)
	}
	rv := s.fsm.Store().Revocation(node)
	s.log.Info("node removed", "node", node, "cutoff", rv.GetCutoff().AsTime(), "deleted_secrets", published, "author", author(ctx))
	return &hivev1.RemoveNodeResponse{Revocation: rv, DeletedSecrets: published}, nil
}

func (a *api) RenewCertificate(ctx context.Context, req *hivev1.RenewCertificateRequest) (*hivev1.RenewCertificateResponse, error) {
	s := a.s
	id := callerFrom(ctx)
	if id.Kind != pki.KindAgent {
		return nil, status.Errorf(codes.PermissionDenied, "only agents renew their certificates over the API, not %s: make a new one with `hivectl tls cert create`", id)
	}
	if s.ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator cannot sign certificates: start it with --tls-ca-key")
	}
	// The service certificates' bucket: every certificate signed for an
	// agent is an audit entry, and a loop must not flush the audit log.
	if ok, wait := s.svcLimit.take(id.Name, 1); !ok {
		return nil, status.Errorf(codes.ResourceExhausted, "too many certificate requests from %s (limit %d per second, burst %d); retry in %v", id, ServiceCertRate, ServiceCertBurst, wait.Round(time.Millisecond))
	}
	leaf := peerLeaf(ctx)
	if leaf == nil {
		return nil, status.Error(codes.Unauthenticated, "renew certificate: the call carries no verified client certificate")
	}
	csr, err := pki.ParseAgentCSR(req.GetCsr(), id)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "renew certificate: %v", err)
	}
	// See every revocation committed before this call, even on a follower
	// that lags: a revoked node must never get a fresh certificate.
	if err := s.readIndex(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "renew certificate: cannot confirm the deny list is current: %v", err)
	}
	if err := s.certError(id, leaf, time.Now()); err != nil {
		return nil, err
	}
	iss, err := s.ca.ReissueAgent(leaf, csr.PublicKey, s.reissueOptions(id.Name))
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "renew certificate: %v", err)
	}
	if err := s.auditOnlyErr(ctx, fmt.Sprintf("renew the agent certificate of node %s: serial %s (was %s), expires %s", id.Name,
		state.SerialText(iss.Cert.SerialNumber), state.SerialText(leaf.SerialNumber), iss.Cert.NotAfter.UTC().Format(time.RFC3339))); err != nil {
		return nil, status.Errorf(codes.Unavailable, "renew certificate: cannot record it in the audit log: %v", err)
	}
	s.log.Info("renewed an agent certificate", "node", id.Name, "old_serial", state.SerialText(leaf.SerialNumber),
		"serial", state.SerialText(iss.Cert.SerialNumber), "not_after", iss.Cert.NotAfter.UTC())
	return &hivev1.RenewCertificateResponse{Certificate: iss.CertPEM, Ca: s.ca.CertPEM()}, nil
}

// reissueOptions are the lifetime of certificates this coordinator mints
// for node, starting after node's revocation cut-off (if any).
func (s *Server) reissueOptions(node string) pki.ReissueOptions {
	o := pki.ReissueOptions{Lifetime: s.cfg.AgentCertLifetime}
	if c := s.fsm.Store().Revocation(node).GetCutoff(); c != nil {
		o.After = c.AsTime()
	}
	return o
}

// mintLifetime re-signs a certificate just signed for a bootstrap token
// with the configured agent lifetime (and after node's revocation
// cut-off, so a removed node given a new token is admitted again),
// keeping everything else it carries.
func (s *Server) mintLifetime(certPEM []byte, node string) ([]byte, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, fmt.Errorf("mint agent certificate: no PEM block")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("mint agent certificate: %w", err)
	}
	iss, err := s.ca.ReissueAgent(c, c.PublicKey, s.reissueOptions(node))
	if err != nil {
		return nil, err
	}
	return iss.CertPEM, nil
}

// connTracker knows every client-certificate TLS connection of the gRPC
// listener, so that the connections of a revoked certificate are closed
// (ending every stream on them) and a connection does not outlive its
// certificate. All methods are safe for concurrent use; kick never blocks.
type connTracker struct {
	// denied reports why a connection's certificate is no longer accepted
	// (nil: accepted).
	denied func(id pki.Identity, leaf *x509.Certificate) error
	// grace lets a watch stream end with its reason before the
	// connection under it is closed.
	grace time.Duration
	log   *slog.Logger

	mu    sync.Mutex
	conns map[*certConn]struct{}
	kickC chan struct{}
}

// revokeGrace is how long after a revocation the connections it denies
// are closed.
const revokeGrace = 250 * time.Millisecond

func newConnTracker(denied func(pki.Identity, *x509.Certificate) error, grace time.Duration, log *slog.Logger) *connTracker {
	return &connTracker{denied: denied, grace: grace, log: log, conns: map[*certConn]struct{}{}, kickC: make(chan struct{}, 1)}
}

type certConn struct {
	net.Conn
	t      *connTracker
	id     pki.Identity
	leaf   *x509.Certificate
	expiry *time.Timer
	once   sync.Once
}

func (c *certConn) Close() error {
	c.once.Do(func() {
		// Under the lock: track sets expiry under it, and the timer may
		// fire (and call Close) before track returns.
		c.t.mu.Lock()
		if c.expiry != nil {
			c.expiry.Stop()
		}
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// track wraps conn when it carries a verified hive client certificate.
func (t *connTracker) track(conn net.Conn, info credentials.AuthInfo) net.Conn {
	ti, ok := info.(credentials.TLSInfo)
	if !ok {
		return conn
	}
	id, err := pki.IdentityFromConnState(ti.State)
	if err != nil {
		return conn
	}
	tc := &certConn{Conn: conn, t: t, id: id, leaf: ti.State.VerifiedChains[0][0]}
	t.mu.Lock()
	t.conns[tc] = struct{}{}
	// Closing a connection at its certificate's expiry: the client
	// reconnects with the certificate it has renewed meanwhile.
	tc.expiry = time.AfterFunc(time.Until(tc.leaf.NotAfter), func() {
		t.log.Info("closing a connection whose certificate expired", "peer", tc.RemoteAddr().String(), "identity", id.String(), "not_after", tc.leaf.NotAfter.UTC())
		tc.Close()
	})
	t.mu.Unlock()
	return tc
}

// kick asks run to check every connection against the deny list.
func (t *connTracker) kick() {
	select {
	case t.kickC <- struct{}{}:
	default:
	}
}

// run closes the connections the deny list refuses, after each kick,
// until ctx ends.
func (t *connTracker) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kickC:
		}
		t.mu.Lock()
		var doomed []*certConn
		var why []error
		for c := range t.conns {
			if err := t.denied(c.id, c.leaf); err != nil {
				doomed = append(doomed, c)
				why = append(why, err)
			}
		}
		t.mu.Unlock()
		if len(doomed) == 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(t.grace):
		}
		for i, c := range doomed {
			t.log.Info("closing a connection whose certificate is no longer accepted", "peer", c.RemoteAddr().String(), "identity", c.id.String(), "err", status.Convert(why[i]).Message())
			c.Close()
		}
	}
}

// count returns how many connections of id are open (tests, logs).
func (t *connTracker) count(id pki.Identity) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for c := range t.conns {
		if c.id == id {
			n++
		}
	}
	return n
}

// trackingCreds are the server's TLS credentials with every handshaken
// connection registered in a connTracker, the handshakes bounded by a
// handshakeGate (handshake.go).
type trackingCreds struct {
	credentials.TransportCredentials
	t    *connTracker
	gate *handshakeGate
}

func (c trackingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.gate.handshake(raw, c.TransportCredentials.ServerHandshake)
	if err != nil {
		return conn, info, err
	}
	return c.t.track(conn, info), info, nil
}

func (c trackingCreds) Clone() credentials.TransportCredentials {
	return trackingCreds{TransportCredentials: c.TransportCredentials.Clone(), t: c.t, gate: c.gate}
}
