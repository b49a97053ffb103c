package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Default lifetimes.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
	// DefaultAgentCSRValidity is the lifetime of certificates signed from a
	// bootstrap CSR.
	DefaultAgentCSRValidity = DefaultCertValidity
	// clockSkew backdates NotBefore so that a new certificate is accepted
	// by peers whose clock is slightly behind.
	clockSkew = 5 * time.Minute
)

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// CAOptions configure NewCA.
type CAOptions struct {
	// CommonName of the CA (default "hive CA").
	CommonName string
	// Validity (default DefaultCAValidity).
	Validity time.Duration
	// Now overrides the clock (tests).
	Now time.Time
}

// NewCA creates a self-signed ECDSA P-256 CA that may sign only leaf
// certificates (path length 0).
func NewCA(opts CAOptions) (*CA, error) {
	if opts.CommonName == "" {
		opts.CommonName = "hive CA"
	}
	if opts.Validity == 0 {
		opts.Validity = DefaultCAValidity
	}
	if opts.Validity < 0 {
		return nil, fmt.Errorf("ca validity %v is negative", opts.Validity)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	ski, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CommonName, Organization: []string{"hive"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(opts.Validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertRequest describes a certificate to issue.
type CertRequest struct {
	Identity Identity
	// IPs and DNS names the certificate is valid for (coordinators only;
	// DefaultServerSANs adds loopback and localhost unless NoDefaultSANs).
	IPs []net.IP
	DNS []string
	// NoDefaultSANs leaves out 127.0.0.1, ::1 and localhost.
	NoDefaultSANs bool
	// Validity (default DefaultCertValidity). NotBefore defaults to now
	// minus a few minutes of allowed clock skew.
	Validity  time.Duration
	NotBefore time.Time
	// PublicKey to certify; nil generates a new P-256 key pair.
	PublicKey crypto.PublicKey
	// Labels bound to an agent (the OIDLabels extension): trusted labels
	// that site selectors match. Agents only.
	Labels map[string]string
}

// Issued is a certificate issued by a CA, with its key when the CA made it.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	// KeyPEM is the PKCS#8 private key, nil when the request brought its own
	// public key.
	KeyPEM []byte
}

// Issue signs a certificate for req.Identity. Coordinators get serverAuth
// and clientAuth with IP/DNS SANs; agents and admins get clientAuth only.
// An agent certificate may carry IP SANs (the addresses the node may
// report besides the one it connects from) and labels; DNS SANs on agents
// and IPs or labels on admins are an error.
func (ca *CA) Issue(req CertRequest) (*Issued, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issue certificate: no ca")
	}
	id := req.Identity
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	if req.Validity == 0 {
		req.Validity = DefaultCertValidity
	}
	if req.Validity < 0 {
		return nil, fmt.Errorf("issue certificate: validity %v is negative", req.Validity)
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-clockSkew)
	}
	notAfter := notBefore.Add(req.Validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // a leaf never outlives its CA
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: id.String(), Organization: []string{"hive"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
	}
	switch id.Kind {
	case KindCoordinator:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		ips := slices.Clone(req.IPs)
		dns := slices.Clone(req.DNS)
		if !req.NoDefaultSANs {
			ips = append(ips, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
			dns = append(dns, "localhost")
		}
		tmpl.IPAddresses = dedupIPs(ips)
		tmpl.DNSNames = dedupStrings(dns)
	case KindAgent:
		if len(req.DNS) > 0 {
			return nil, fmt.Errorf("issue certificate: --dns applies to coordinator certificates only, not %s", id.Kind)
		}
		for _, ip := range req.IPs {
			if ip.To16() == nil || ip.IsUnspecified() || ip.IsMulticast() {
				return nil, fmt.Errorf("issue certificate: agent address %v is not a unicast IP address", ip)
			}
		}
		tmpl.IPAddresses = dedupIPs(req.IPs)
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		if len(req.IPs) > 0 || len(req.DNS) > 0 {
			return nil, fmt.Errorf("issue certificate: --ip/--dns apply to coordinator and agent certificates only, not %s", id.Kind)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if len(req.Labels) > 0 {
		if id.Kind != KindAgent {
			return nil, fmt.Errorf("issue certificate: --label applies to agent certificates only, not %s", id.Kind)
		}
		ext, err := labelsExtension(req.Labels)
		if err != nil {
			return nil, fmt.Errorf("issue certificate: %w", err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
	}
	for _, d := range tmpl.DNSNames {
		if err := validDNSName(d); err != nil {
			return nil, fmt.Errorf("issue certificate: %w", err)
		}
	}
	out := &Issued{}
	pub := req.PublicKey
	if pub == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		pub = key.Public()
		out.KeyPEM, err = EncodeKey(key)
		if err != nil {
			return nil, err
		}
	}
	der, err := ca.sign(tmpl, pub)
	if err != nil {
		return nil, err
	}
	out.Cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	out.CertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return out, nil
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.SubjectKeyId, err = subjectKeyID(pub); err != nil {
		return nil, err
	}
	tmpl.AuthorityKeyId = ca.Cert.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return der, nil
}

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// ErrBadCSR: a certificate signing request is unparsable, has a bad
// signature, or names something other than the node it is redeemed for.
var ErrBadCSR = errors.New("invalid certificate signing request")

// CreateAgentCSR makes a key pair and a PEM CSR for agent node, for
// bootstrap: the agent keeps keyPEM and sends csrPEM with its token.
func CreateAgentCSR(node string) (csrPEM, keyPEM []byte, err error) {
	id := Identity{Kind: KindAgent, Name: node}
	if err := id.Validate(); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.String()},
		URIs:    []*url.URL{id.URI()},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create csr: %w", err)
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// SignAgentCSR signs a PEM CSR as an agent certificate for node, valid for
// DefaultAgentCSRValidity. Only the CSR's public key is taken: the
// certificate's identity is agent:<node> whatever the CSR asks for, and a
// CSR that names a different identity is refused with ErrBadCSR (so a
// token for one node cannot be redeemed for another name).
func SignAgentCSR(caCert *x509.Certificate, caKey crypto.Signer, csrPEM []byte, node string) ([]byte, error) {
	return SignAgentCSRLabels(caCert, caKey, csrPEM, node, nil)
}

// SignAgentCSRLabels is SignAgentCSR binding labels into the certificate
// (the labels of the bootstrap token it is redeemed with). Extensions the
// CSR asks for are ignored: labels come only from the caller.
func SignAgentCSRLabels(caCert *x509.Certificate, caKey crypto.Signer, csrPEM []byte, node string, labels map[string]string) ([]byte, error) {
	id := Identity{Kind: KindAgent, Name: node}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("sign agent csr: %w", err)
	}
	csr, err := ParseAgentCSR(csrPEM, id)
	if err != nil {
		return nil, err
	}
	ca := &CA{Cert: caCert, Key: caKey}
	iss, err := ca.Issue(CertRequest{Identity: id, Validity: DefaultAgentCSRValidity, PublicKey: csr.PublicKey, Labels: labels})
	if err != nil {
		return nil, err
	}
	return iss.CertPEM, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

func dedupIPs(ips []net.IP) []net.IP {
	var out []net.IP
	for _, ip := range ips {
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

func dedupStrings(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// validDNSName accepts host names (labels of letters, digits and '-',
// separated by dots, at most 253 characters) and a leading "*." wildcard.
func validDNSName(d string) error {
	name := strings.TrimPrefix(d, "*.")
	if name == "" || len(d) > 253 {
		return fmt.Errorf("dns name %q: empty or longer than 253 characters", d)
	}
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("dns name %q: bad label %q", d, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("dns name %q: %q is not allowed", d, r)
			}
		}
	}
	return nil
}
