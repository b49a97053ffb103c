// Package uitoken makes and checks dashboard tokens: short-lived bearer
// tokens that an admin signs with the private key of their own client
// certificate (`hivectl dashboard token`) and a browser presents to the
// coordinators' web dashboard (/ui/ on the HTTP address, which is plain
// HTTP and sees no client certificate).
//
// A token is stateless: "hdt1." + base64url(certificate DER) + "." +
// base64url(claims JSON) + "." + base64url(signature), the signature made
// by the certificate's key over everything before the last dot. A
// coordinator accepts it when the certificate chains to the site's CA, is
// an admin certificate valid now, the signature verifies, the scope is
// "dashboard:read" and the token has not expired. Nothing is stored, so
// any coordinator of the site accepts a token made for another; a token
// cannot outlive its certificate, nor MaxTTL.
package uitoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hivefleet/hive/pki"
)

const (
	prefix = "hdt1."
	// Scope is the only scope there is: read the dashboard.
	Scope = "dashboard:read"
	// MaxTTL caps a token's lifetime (as bootstrap tokens are capped).
	MaxTTL = 7 * 24 * time.Hour
	// DefaultTTL is the lifetime `hivectl dashboard token` gives by default.
	DefaultTTL = 12 * time.Hour
	// MaxLen bounds what a coordinator parses (a certificate is well under
	// 2 KiB; a cookie must stay under 4 KiB).
	MaxLen = 3500
	// clockSkew is how far in the future a token's issue time may be.
	clockSkew = 5 * time.Minute
)

type claims struct {
	Scope   string `json:"scope"`
	Issued  int64  `json:"iat"`
	Expires int64  `json:"exp"`
}

// ErrForbidden wraps the refusals of a well-formed, correctly signed token
// whose certificate is not an admin's (HTTP 403 rather than 401).
var ErrForbidden = errors.New("forbidden")

// Mint makes a token valid from now for ttl (at most MaxTTL, and never past
// the certificate's expiry), signed by key, the private key of cert.
func Mint(cert *x509.Certificate, key crypto.Signer, ttl time.Duration, now time.Time) (string, time.Time, error) {
	if ttl <= 0 || ttl > MaxTTL {
		return "", time.Time{}, fmt.Errorf("ttl %v: must be between 1s and %v", ttl, MaxTTL)
	}
	exp := now.Add(ttl)
	if exp.After(cert.NotAfter) {
		exp = cert.NotAfter
	}
	if !exp.After(now) {
		return "", time.Time{}, fmt.Errorf("certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	body, err := json.Marshal(claims{Scope: Scope, Issued: now.Unix(), Expires: exp.Unix()})
	if err != nil {
		return "", time.Time{}, err
	}
	enc := base64.RawURLEncoding
	signed := prefix + enc.EncodeToString(cert.Raw) + "." + enc.EncodeToString(body)
	sig, err := sign(key, []byte(signed))
	if err != nil {
		return "", time.Time{}, err
	}
	tok := signed + "." + enc.EncodeToString(sig)
	if len(tok) > MaxLen {
		return "", time.Time{}, fmt.Errorf("token is %d bytes; the limit is %d (certificate too large)", len(tok), MaxLen)
	}
	return tok, time.Unix(exp.Unix(), 0), nil
}

func sign(key crypto.Signer, msg []byte) ([]byte, error) {
	switch key.Public().(type) {
	case ed25519.PublicKey:
		return key.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		sum := sha256.Sum256(msg)
		return key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
}

func algorithm(pub any) (x509.SignatureAlgorithm, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return x509.ECDSAWithSHA256, nil
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil
	}
	return 0, fmt.Errorf("unsupported key type %T", pub)
}

// Verify checks tok against the CA pool roots at now and returns the
// identity of the admin who signed it and when it expires. Every error
// says why; errors.Is(err, ErrForbidden) for a valid token of someone who
// is not an admin.
func Verify(tok string, roots *x509.CertPool, now time.Time) (pki.Identity, time.Time, error) {
	var none pki.Identity
	if len(tok) > MaxLen {
		return none, time.Time{}, fmt.Errorf("token is %d bytes; the limit is %d", len(tok), MaxLen)
	}
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return none, time.Time{}, errors.New("not a dashboard token (make one with `hivectl dashboard token`)")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return none, time.Time{}, errors.New("malformed token: want 4 dot-separated parts")
	}
	enc := base64.RawURLEncoding
	der, err := enc.DecodeString(parts[0])
	if err != nil {
		return none, time.Time{}, fmt.Errorf("malformed token certificate: %v", err)
	}
	body, err := enc.DecodeString(parts[1])
	if err != nil {
		return none, time.Time{}, fmt.Errorf("malformed token claims: %v", err)
	}
	sig, err := enc.DecodeString(parts[2])
	if err != nil {
		return none, time.Time{}, fmt.Errorf("malformed token signature: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return none, time.Time{}, fmt.Errorf("token certificate: %v", err)
	}
	if roots == nil {
		return none, time.Time{}, errors.New("this coordinator has no CA to check tokens with (started with --dev and no --tls-ca)")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return none, time.Time{}, fmt.Errorf("token certificate is not valid for this site: %v", err)
	}
	algo, err := algorithm(cert.PublicKey)
	if err != nil {
		return none, time.Time{}, err
	}
	if err := cert.CheckSignature(algo, []byte(prefix+parts[0]+"."+parts[1]), sig); err != nil {
		return none, time.Time{}, errors.New("token signature does not verify")
	}
	var c claims
	if err := json.Unmarshal(body, &c); err != nil {
		return none, time.Time{}, fmt.Errorf("malformed token claims: %v", err)
	}
	if c.Scope != Scope {
		return none, time.Time{}, fmt.Errorf("token scope %q; want %q", c.Scope, Scope)
	}
	exp := time.Unix(c.Expires, 0)
	switch {
	case !now.Before(exp):
		return none, time.Time{}, fmt.Errorf("token expired at %s", exp.UTC().Format(time.RFC3339))
	case time.Unix(c.Issued, 0).After(now.Add(clockSkew)):
		return none, time.Time{}, errors.New("token issued in the future")
	case exp.Sub(time.Unix(c.Issued, 0)) > MaxTTL:
		return none, time.Time{}, fmt.Errorf("token lives longer than %v", MaxTTL)
	}
	id, err := pki.IdentityFromCert(cert)
	if err != nil {
		return none, time.Time{}, fmt.Errorf("token certificate: %v", err)
	}
	if id.Kind != pki.KindAdmin {
		return id, time.Time{}, fmt.Errorf("%w: %s is not an admin; the dashboard needs an admin's token", ErrForbidden, id)
	}
	return id, exp, nil
}
