package coordinator

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Service certificates (the `certificate` resource kind).
//
// An agent asks for the certificate resource NAME of its own state with a
// CSR; the coordinator takes only the CSR's public key and decides every
// name itself:
//   - the node's name (a DNS name when it is a valid host name);
//   - the node's trusted addresses: those of its registry record, each
//     proven when the node's watch registered it (the address its
//     connection came from, or an IP SAN of its agent certificate; see
//     checkAgentAddresses). An address an agent merely claims in this call
//     is never used: the request carries none;
//   - the resource's dns_names from the site file, with "{node}" replaced
//     by the node's name.
// A revoked node gets none: the call reads the deny list as of now
// (readIndex) and refuses a denied or expired agent certificate, like
// RenewCertificate.

// Rate limit of IssueServiceCertificate and RenewCertificate: one token
// bucket per agent, so that an agent cannot make its coordinators sign
// (read the deny list through the leader, and write an audit entry) in a
// loop. The burst covers a node with many certificates on its first run.
const (
	ServiceCertRate  = 1
	ServiceCertBurst = 64
)

func (a *api) IssueServiceCertificate(ctx context.Context, req *hivev1.IssueServiceCertificateRequest) (*hivev1.IssueServiceCertificateResponse, error) {
	s := a.s
	id := callerFrom(ctx)
	if id.Kind != pki.KindAgent {
		return nil, status.Errorf(codes.PermissionDenied, "only agents obtain service certificates, for themselves, not %s", id)
	}
	if ok, wait := s.svcLimit.take(id.Name, 1); !ok {
		return nil, status.Errorf(codes.ResourceExhausted, "too many service certificate requests from %s (limit %d per second, burst %d); retry in %v", id, ServiceCertRate, ServiceCertBurst, wait.Round(time.Millisecond))
	}
	name := req.GetName()
	if err := site.CheckCertificateName(name); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "name: %v", err)
	}
	csr, err := pki.ParseServiceCSR(req.GetCsr())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}
	if s.ca == nil {
		return nil, status.Error(codes.FailedPrecondition, "this coordinator cannot sign certificates: start it with --tls-ca-key")
	}
	leaf := peerLeaf(ctx)
	if leaf == nil {
		return nil, status.Error(codes.Unauthenticated, "issue service certificate: the call carries no verified client certificate")
	}
	// See every revocation committed before this call, even on a follower
	// that lags: a revoked node must never get a certificate.
	if err := s.readIndex(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "issue service certificate: cannot confirm the deny list is current: %v", err)
	}
	if err := s.certError(id, leaf, time.Now()); err != nil {
		return nil, err
	}
	st := s.fsm.Store()
	rec := st.Node(id.Name)
	if rec == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is not registered yet (its agent registers when it watches its state)", id.Name)
	}
	out, err := s.renderer.Render(st, render.FactsOf(rec))
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	want := CertificateKey(name)
	var c *hivev1.Certificate
	for _, r := range out.State.GetResources() {
		if r.GetKey() == want {
			c = r.GetCertificate()
		}
	}
	if c == nil {
		return nil, status.Errorf(codes.NotFound, "the state of node %s (generation %d) has no resource %s", id.Name, out.State.GetGeneration(), want)
	}
	var ips []net.IP
	for _, ad := range rec.GetAddresses() {
		if ip := net.ParseIP(ad); ip != nil {
			ips = append(ips, ip)
		}
	}
	iss, err := s.ca.IssueService(pki.ServiceRequest{
		Node:      id.Name,
		DNS:       ServiceDNSNames(c, id.Name),
		IPs:       ips,
		PublicKey: csr.PublicKey,
		Validity:  time.Duration(c.GetValiditySeconds()) * time.Second,
	})
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s of node %s: %v", want, id.Name, err)
	}
	if err := s.auditOnlyErr(ctx, fmt.Sprintf("issue service certificate %s for node %s: serial %s, DNS %s, expires %s", name, id.Name,
		state.SerialText(iss.Cert.SerialNumber), strings.Join(iss.Cert.DNSNames, ","), iss.Cert.NotAfter.UTC().Format(time.RFC3339))); err != nil {
		return nil, status.Errorf(codes.Unavailable, "issue service certificate: cannot record it in the audit log: %v", err)
	}
	s.log.Info("issued a service certificate", "node", id.Name, "certificate", name,
		"serial", state.SerialText(iss.Cert.SerialNumber), "dns", iss.Cert.DNSNames, "ips", iss.Cert.IPAddresses,
		"not_after", iss.Cert.NotAfter.UTC())
	return &hivev1.IssueServiceCertificateResponse{Certificate: iss.CertPEM, Ca: s.ca.CertPEM()}, nil
}

// CertificateKey is the resource key of certificate name.
func CertificateKey(name string) string { return "certificate:" + name }

// ServiceDNSNames are the DNS names a certificate resource asks for on
// node, "{node}" replaced.
func ServiceDNSNames(c *hivev1.Certificate, node string) []string {
	var out []string
	for _, d := range c.GetDnsNames() {
		out = append(out, strings.ReplaceAll(d, site.CertificateNodePlaceholder, node))
	}
	return out
}

// The access rule and request cap of IssueServiceCertificate, set here
// beside the handler (auth.go's and limits.go's tables hold the rest).
func init() {
	methodAccess[coordSvc+"IssueServiceCertificate"] = accessNode // agents only, checked in the handler
	methodMaxBytes[coordSvc+"IssueServiceCertificate"] = MaxAgentRequestBytes
	typeMaxBytes[fullName(&hivev1.IssueServiceCertificateRequest{})] = MaxAgentRequestBytes
}
