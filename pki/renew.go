package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// DefaultAgentCertLifetime is the lifetime of the agent certificates
// coordinators mint (bootstrap and renewal): short, because an agent
// renews its own at two thirds of it (see RenewAt).
const DefaultAgentCertLifetime = 7 * 24 * time.Hour

// ReissueOptions configure CA.ReissueAgent.
type ReissueOptions struct {
	// Lifetime from Now to NotAfter (required; capped by the CA's own
	// NotAfter).
	Lifetime time.Duration
	// Now overrides the clock (tests).
	Now time.Time
	// After, when set, puts NotBefore strictly after it: a revocation
	// cut-off of the identity, so that the new certificate is not denied
	// together with the ones it replaces.
	After time.Time
}

// Extensions the CA sets itself for every certificate; ReissueAgent copies
// every other extension of the old certificate verbatim.
var (
	oidSubjectKeyID     = asn1.ObjectIdentifier{2, 5, 29, 14}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	caManagedExtensions = []asn1.ObjectIdentifier{oidSubjectKeyID, oidKeyUsage, oidBasicConstraints, oidAuthorityKeyID, oidExtKeyUsage}
)

// ReissueAgent signs a new agent certificate for pub that carries old's
// identity and everything else old says about the node: its subject and
// every extension (the subject alternative names, with any label URIs,
// and extensions hive does not know) are copied verbatim; only the key,
// serial, validity, key usages and key identifiers are new. It is how a
// coordinator renews an agent's certificate and shortens a bootstrap
// certificate to the configured lifetime. old must be a verified agent
// certificate of this CA; anything else is refused.
func (ca *CA) ReissueAgent(old *x509.Certificate, pub crypto.PublicKey, opts ReissueOptions) (*Issued, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("reissue certificate: no ca")
	}
	id, err := IdentityFromCert(old)
	if err != nil {
		return nil, fmt.Errorf("reissue certificate: %w", err)
	}
	if id.Kind != KindAgent {
		return nil, fmt.Errorf("reissue certificate: %s is not an agent; only agent certificates are reissued", id)
	}
	if len(old.DNSNames) > 0 || len(old.IPAddresses) > 0 || len(old.EmailAddresses) > 0 {
		return nil, fmt.Errorf("reissue certificate: %s carries DNS, IP or email names, which agent certificates never do", id)
	}
	if err := old.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, fmt.Errorf("reissue certificate: %s was not signed by this CA: %w", id, err)
	}
	if err := checkAgentKey(pub); err != nil {
		return nil, fmt.Errorf("reissue certificate: %w", err)
	}
	if opts.Lifetime <= 0 {
		return nil, fmt.Errorf("reissue certificate: lifetime %v must be positive", opts.Lifetime)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	// Backdate for clock skew, but by little for a short lifetime (tests
	// run with seconds), and never to or before a revocation cut-off.
	notBefore := now.Add(-min(clockSkew, opts.Lifetime/10))
	if !opts.After.IsZero() {
		// x509 times have whole seconds: the first second after After.
		floor := opts.After.Truncate(time.Second).Add(time.Second)
		if notBefore.Before(floor) {
			notBefore = floor
		}
	}
	notAfter := now.Add(opts.Lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("reissue certificate: NotAfter %s is not after NotBefore %s", notAfter.UTC().Format(time.RFC3339), notBefore.UTC().Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		RawSubject:            old.RawSubject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, e := range old.Extensions {
		if !slices.ContainsFunc(caManagedExtensions, e.Id.Equal) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	der, err := ca.sign(tmpl, pub)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse reissued certificate: %w", err)
	}
	if got, err := IdentityFromCert(cert); err != nil || got != id {
		return nil, fmt.Errorf("reissue certificate: the new certificate names %v (%v), not %s", got, err, id)
	}
	return &Issued{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// ParseAgentCSR parses and checks a PEM CSR an agent sends for id (to
// redeem a bootstrap token or to renew its certificate): one PEM block, a valid signature, an ECDSA
// P-256 or P-384 key, and no name but id's (common name and URI may be
// left out). Errors wrap ErrBadCSR.
func ParseAgentCSR(csrPEM []byte, id Identity) (*x509.CertificateRequest, error) {
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
	if cn := csr.Subject.CommonName; cn != "" && cn != id.String() {
		return nil, fmt.Errorf("%w: asks for %q, the certificate can only be for %q", ErrBadCSR, cn, id.String())
	}
	for _, u := range csr.URIs {
		if u.String() != id.URI().String() {
			return nil, fmt.Errorf("%w: asks for URI %q, the certificate can only be for %q", ErrBadCSR, u.String(), id.URI())
		}
	}
	if len(csr.IPAddresses) > 0 || len(csr.DNSNames) > 0 || len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: agent certificates carry no IP, DNS or email names", ErrBadCSR)
	}
	if err := checkAgentKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return csr, nil
}

func checkAgentKey(pub crypto.PublicKey) error {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("key type %T not accepted (want ECDSA P-256)", pub)
	}
	if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
		return fmt.Errorf("ecdsa curve %s not accepted", k.Curve.Params().Name)
	}
	return nil
}

// RenewAt is when an agent renews a certificate: at two thirds of its
// lifetime (NotBefore to NotAfter).
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life * 2 / 3)
}
