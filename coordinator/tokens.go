package coordinator

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CreateBootstrapToken stores a single-use token bound to one node name
// (or a pattern) and the labels the minted certificate will carry.
func (a *api) CreateBootstrapToken(ctx context.Context, req *hivev1.CreateBootstrapTokenRequest) (*hivev1.CreateBootstrapTokenResponse, error) {
	node, pattern := req.GetNode(), req.GetNodePattern()
	switch {
	case node == "" && pattern == "":
		return nil, invalid("a bootstrap token is bound to a node name: give node (--node NAME) or node_pattern (--node-pattern 'web-*')")
	case node != "" && pattern != "":
		return nil, invalid("give node or node_pattern, not both")
	case node != "":
		if err := pki.ValidateName(node); err != nil {
			return nil, invalid("node: %v", err)
		}
	default:
		if err := checkNodePattern(pattern); err != nil {
			return nil, invalid("%v", err)
		}
	}
	if err := pki.ValidateLabels(req.GetLabels()); err != nil {
		return nil, invalid("labels: %v", err)
	}
	ttl := DefaultTokenTTL
	if req.GetTtlSeconds() > 0 {
		ttl = time.Duration(req.GetTtlSeconds()) * time.Second
	}
	if ttl > MaxTokenTTL {
		return nil, invalid("ttl_seconds %d (%v) is longer than the cap of %d (%v)", req.GetTtlSeconds(), ttl, int(MaxTokenTTL/time.Second), MaxTokenTTL)
	}
	if node != "" && !req.GetReplace() {
		if err := a.s.reservedName(ctx, node); err != nil {
			return nil, err
		}
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return nil, toStatus(err)
	}
	token := hex.EncodeToString(raw)
	sum := sha256.Sum256([]byte(token))
	expires := timestamppb.New(time.Now().Add(ttl))
	if _, err := a.s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_BootstrapTokenCreate{BootstrapTokenCreate: &hivev1.BootstrapTokenCreateCommand{
		TokenSha256: hex.EncodeToString(sum[:]), Node: node, NodePattern: pattern, Labels: req.GetLabels(),
		Replace: req.GetReplace(), Expires: expires, Author: author(ctx),
	}}}); err != nil {
		return nil, toStatus(err)
	}
	a.s.log.Info("bootstrap token created", "node", node, "node_pattern", pattern, "labels", pki.FormatLabels(req.GetLabels()), "replace", req.GetReplace(), "expires", expires.AsTime(), "author", author(ctx))
	return &hivev1.CreateBootstrapTokenResponse{Token: token, Expires: expires}, nil
}

// reservedName refuses a token for a name that is taken: a registered
// node, a coordinator (recorded or in the raft configuration), or the
// calling admin's own name. --replace overrides it.
func (s *Server) reservedName(ctx context.Context, node string) error {
	st := s.fsm.Store()
	if st.Node(node) != nil {
		return status.Errorf(codes.FailedPrecondition, "node %q is already registered: a token for it would let its holder replace it; pass --replace if that is what you mean (a reinstall)", node)
	}
	coordinator := st.Coordinator(node) != nil
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			coordinator = coordinator || srv.ID == raft.ServerID(node)
		}
	}
	if coordinator {
		return status.Errorf(codes.FailedPrecondition, "%q is a coordinator's name; pass --replace to mint an agent certificate for it anyway", node)
	}
	if id := callerFrom(ctx); id.Kind == pki.KindAdmin && id.Name == node {
		return status.Errorf(codes.FailedPrecondition, "%q is your own admin name; pass --replace to mint an agent certificate for it anyway", node)
	}
	return nil
}

// RequestCertificate redeems a bootstrap token for an agent certificate.
// It is open to callers without a certificate, so it is rate limited per
// source address, and the token is checked read-only against this
// server's state before anything is signed or proposed: an unknown, used,
// expired or wrong token costs one map lookup and writes nothing.
func (a *api) RequestCertificate(ctx context.Context, req *hivev1.RequestCertificateRequest) (*hivev1.RequestCertificateResponse, error) {
	s := a.s
	if ok, wait := s.certLimit.take(sourceAddr(ctx).String(), 1); !ok {
		s.metrics.denied.Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "too many certificate requests from %v (limit %d per second, burst %d); retry in %v", sourceAddr(ctx), CertRequestRate, CertRequestBurst, wait.Round(time.Millisecond))
	}
	if s.ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator cannot sign certificates: start it with --tls-ca-key, or create the agent's certificate with `hivectl tls cert create --agent NAME`")
	}
	if err := pki.ValidateName(req.GetNode()); err != nil {
		return nil, invalid("node: %v", err)
	}
	if n := len(req.GetToken()); n == 0 || n > 128 {
		return nil, invalid("token: %d bytes; want 1 to 128", n)
	}
	sum := sha256.Sum256([]byte(req.GetToken()))
	sha := hex.EncodeToString(sum[:])
	tok, res := s.fsm.Store().CheckToken(time.Now(), sha, req.GetNode())
	if res.GetReason() == state.ReasonNotFound && s.raft.State() != raft.Leader {
		// The token may be newer than this follower's state: catch up
		// (a read, no write) and look again.
		if err := s.readIndex(ctx); err == nil {
			tok, res = s.fsm.Store().CheckToken(time.Now(), sha, req.GetNode())
		}
	}
	if res != nil {
		s.log.Info("bootstrap token refused", "node", req.GetNode(), "from", sourceAddr(ctx), "reason", res.GetReason())
		return nil, toStatus(&rejection{reason: res.GetReason(), msg: res.GetError()})
	}
	// Sign before redeeming (a bad CSR must not burn the token), hand the
	// certificate out only once the redemption is committed.
	cert, err := pki.SignAgentCSRLabels(s.ca.Cert, s.ca.Key, req.GetCsr(), req.GetNode(), tok.GetLabels())
	if err != nil {
		return nil, invalid("sign certificate: %v", err)
	}
	if cert, err = s.mintLifetime(cert, req.GetNode()); err != nil {
		return nil, invalid("sign certificate: %v", err)
	}
	// The caller has no certificate yet: the token is its credential.
	method, _ := grpc.Method(ctx)
	redeem := &hivev1.Command{Body: &hivev1.Command_BootstrapTokenRedeem{BootstrapTokenRedeem: &hivev1.BootstrapTokenRedeemCommand{
		TokenSha256: sha, Node: req.GetNode(),
	}}}
	redeem.Audit = &hivev1.AuditInfo{Identity: tokenIdentity(sha), Rpc: method,
		Summary: fmt.Sprintf("redeem a bootstrap token: issue an agent certificate for node %s from %v", req.GetNode(), sourceAddr(ctx))}
	if len(tok.GetLabels()) > 0 {
		redeem.Audit.Summary += " with labels " + pki.FormatLabels(tok.GetLabels())
	}
	if _, err := s.commit(ctx, redeem); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("issued an agent certificate for a bootstrap token", "node", req.GetNode(), "labels", pki.FormatLabels(tok.GetLabels()))
	return &hivev1.RequestCertificateResponse{Certificate: cert, Ca: s.ca.CertPEM()}, nil
}

// LabelNode sets and removes a node's operator labels.
func (a *api) LabelNode(ctx context.Context, req *hivev1.LabelNodeRequest) (*hivev1.LabelNodeResponse, error) {
	if err := pki.ValidateName(req.GetNode()); err != nil {
		return nil, invalid("node: %v", err)
	}
	if len(req.GetSet()) == 0 && len(req.GetRemove()) == 0 {
		return nil, invalid("nothing to do: give labels to set (key=value) or remove (key-)")
	}
	if err := pki.ValidateLabels(req.GetSet()); err != nil {
		return nil, invalid("set: %v", err)
	}
	if len(req.GetRemove()) > pki.MaxLabels {
		return nil, invalid("remove: %d keys; the limit is %d", len(req.GetRemove()), pki.MaxLabels)
	}
	for i, k := range req.GetRemove() {
		if err := pki.ValidateLabel(k, ""); err != nil {
			return nil, invalid("remove[%d]: %v", i, err)
		}
	}
	if _, err := a.s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_NodeLabel{NodeLabel: &hivev1.NodeLabelCommand{
		Name: req.GetNode(), Set: req.GetSet(), Remove: req.GetRemove(), Author: author(ctx),
	}}}); err != nil {
		return nil, toStatus(err)
	}
	a.s.log.Info("node labels changed", "node", req.GetNode(), "set", pki.FormatLabels(req.GetSet()), "remove", req.GetRemove(), "author", author(ctx))
	st := a.s.fsm.Store()
	n := st.Node(req.GetNode())
	labels, sources := state.TrustedLabels(n)
	resp := &hivev1.LabelNodeResponse{Labels: labels, LabelSources: sources}
	if cur := st.Current(); cur != nil {
		resp.Roles = render.SelectRoles(cur.GetSite(), req.GetNode(), labels)
	}
	return resp, nil
}
