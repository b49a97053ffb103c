package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// Service certificates are what the site CA signs for the services a
// node runs (Docker's TLS API, a registry, syslog): serverAuth and
// clientAuth for the node's name, its trusted addresses and the DNS names
// the site file lists. They carry no hive:// identity, so hive itself
// never accepts one: neither as a client (IdentityFromCert fails) nor as a
// coordinator (VerifyServer wants a coordinator identity).

// Service certificate lifetimes.
const (
	// DefaultServiceValidity is the lifetime of a service certificate
	// whose resource asks for none.
	DefaultServiceValidity = 90 * 24 * time.Hour
	// MinServiceValidity and MaxServiceValidity bound the lifetime a
	// certificate resource may ask for (the short end is for tests).
	MinServiceValidity = 10 * time.Second
	MaxServiceValidity = 397 * 24 * time.Hour
	// MaxServiceDNSNames bounds a service certificate's DNS names.
	MaxServiceDNSNames = 32
)

// ServiceRequest describes a service certificate to issue.
type ServiceRequest struct {
	// Node the certificate belongs to: its common name and first DNS
	// name (when it is a valid host name).
	Node string
	// DNS names besides the node's, and IP addresses.
	DNS []string
	IPs []net.IP
	// PublicKey to certify (from the node's CSR).
	PublicKey crypto.PublicKey
	// Validity from now (default DefaultServiceValidity; capped by the
	// CA's own NotAfter).
	Validity time.Duration
	// Now overrides the clock (tests).
	Now time.Time
}

// IssueService signs a service certificate. It refuses a bad node name,
// DNS name or IP address, a lifetime out of bounds and a weak key.
func (ca *CA) IssueService(req ServiceRequest) (*Issued, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issue service certificate: no ca")
	}
	if err := ValidateName(req.Node); err != nil {
		return nil, fmt.Errorf("issue service certificate: node: %w", err)
	}
	if req.Validity == 0 {
		req.Validity = DefaultServiceValidity
	}
	if req.Validity < MinServiceValidity || req.Validity > MaxServiceValidity {
		return nil, fmt.Errorf("issue service certificate: validity %v is outside %v to %v", req.Validity, MinServiceValidity, MaxServiceValidity)
	}
	if err := CheckServiceKey(req.PublicKey); err != nil {
		return nil, fmt.Errorf("issue service certificate: %w", err)
	}
	var dns []string
	if validDNSName(req.Node) == nil {
		dns = append(dns, req.Node)
	}
	for _, d := range req.DNS {
		if err := validDNSName(d); err != nil {
			return nil, fmt.Errorf("issue service certificate: %w", err)
		}
		dns = append(dns, d)
	}
	dns = dedupStrings(dns)
	if len(dns) > MaxServiceDNSNames+1 {
		return nil, fmt.Errorf("issue service certificate: %d DNS names; the limit is %d", len(dns), MaxServiceDNSNames+1)
	}
	for _, ip := range req.IPs {
		if ip.To16() == nil || ip.IsUnspecified() || ip.IsMulticast() {
			return nil, fmt.Errorf("issue service certificate: address %v is not a unicast IP address", ip)
		}
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	notBefore := now.Add(-min(clockSkew, req.Validity/10))
	notAfter := now.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: req.Node, Organization: []string{"hive"}, OrganizationalUnit: []string{"service"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           dedupIPs(req.IPs),
	}
	der, err := ca.sign(tmpl, req.PublicKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse service certificate: %w", err)
	}
	return &Issued{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// CheckServiceKey accepts ECDSA P-256 and P-384 keys and RSA keys of
// 2048 to 8192 bits.
func CheckServiceKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("ecdsa curve %s not accepted (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("rsa key of %d bits not accepted (want 2048 to 8192)", n)
		}
	default:
		return fmt.Errorf("key type %T not accepted (want ECDSA or RSA)", pub)
	}
	return nil
}

// ParseServiceCSR parses a PEM CSR for a service key: one PEM block and
// a valid signature by an accepted key (CheckServiceKey). The names it
// asks for are ignored: a service certificate's names come from the
// coordinators. Errors wrap ErrBadCSR.
func ParseServiceCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: no PEM \"CERTIFICATE REQUEST\" block", ErrBadCSR)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	if err := CheckServiceKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return csr, nil
}

// CreateServiceCSR makes an ECDSA P-256 key and a PEM CSR for it, for a
// service certificate of node.
func CreateServiceCSR(node string) (csrPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: node}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create csr: %w", err)
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// ValidateServiceDNSName checks a DNS name a service certificate may
// carry: a host name (letters, digits, '-', dots, at most 253
// characters), optionally with a leading "*." wildcard.
func ValidateServiceDNSName(d string) error { return validDNSName(d) }
