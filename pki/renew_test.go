package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// labelledAgent signs an agent certificate that also carries what another
// part of hive may add: a second (non-hive) URI SAN and a private
// extension.
func labelledAgent(t *testing.T, ca *CA, name string) (*x509.Certificate, pkix.Extension) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := Identity{KindAgent, name}
	ext := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{0x0c, 0x03, 'r', 'a', 'c'}}
	tmpl := &x509.Certificate{
		Subject:         pkix.Name{CommonName: id.String(), Organization: []string{"hive"}},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:            []*url.URL{id.URI(), {Scheme: "hive-label", Host: "rack", Path: "/r1"}},
		ExtraExtensions: []pkix.Extension{ext},
	}
	der, err := ca.sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, ext
}

func TestReissueAgentKeepsIdentityAndExtensions(t *testing.T) {
	ca := mustCA(t)
	old, ext := labelledAgent(t, ca, "web-1")
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	cut := now.Add(30 * time.Second) // a revocation cut-off "in the future" of now-skew
	iss, err := ca.ReissueAgent(old, newKey.Public(), ReissueOptions{Lifetime: time.Hour, Now: now, After: cut})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	if id, err := IdentityFromCert(c); err != nil || id != (Identity{KindAgent, "web-1"}) {
		t.Fatalf("identity = %v, %v", id, err)
	}
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	if want := []string{"hive://agent/web-1", "hive-label://rack/r1"}; !slices.Equal(uris, want) {
		t.Errorf("URIs = %v, want %v", uris, want)
	}
	found := false
	for _, e := range c.Extensions {
		if e.Id.Equal(ext.Id) && string(e.Value) == string(ext.Value) {
			found = true
		}
	}
	if !found {
		t.Error("the private extension was not carried over")
	}
	if c.SerialNumber.Cmp(old.SerialNumber) == 0 || !newKey.PublicKey.Equal(c.PublicKey) {
		t.Error("serial or key not new")
	}
	if !c.NotBefore.After(cut) || c.NotAfter.Sub(now) > time.Hour || c.NotAfter.Sub(now) < time.Hour-time.Second {
		t.Errorf("validity %v .. %v (now %v, cut-off %v)", c.NotBefore, c.NotAfter, now, cut)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || c.IsCA {
		t.Errorf("usages %v, CA %v", c.ExtKeyUsage, c.IsCA)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: cut.Add(2 * time.Second)}); err != nil {
		t.Fatalf("reissued certificate does not verify: %v", err)
	}
	// Renewing the renewed certificate keeps everything again.
	again, err := ca.ReissueAgent(c, newKey.Public(), ReissueOptions{Lifetime: time.Minute})
	if err != nil || len(again.Cert.URIs) != 2 {
		t.Fatalf("second renewal: %v %v", again, err)
	}
	// A short lifetime is backdated by a tenth of it, not five minutes.
	if got := time.Until(again.Cert.NotBefore); got < -7*time.Second {
		t.Errorf("NotBefore backdated by %v for a 1m lifetime", -got)
	}
}

func TestReissueAgentRefuses(t *testing.T) {
	ca := mustCA(t)
	other := mustCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	admin := mustIssue(t, ca, CertRequest{Identity: Identity{KindAdmin, "ops"}}).Cert
	foreign := mustIssue(t, other, CertRequest{Identity: Identity{KindAgent, "web-1"}}).Cert
	agent := mustIssue(t, ca, CertRequest{Identity: Identity{KindAgent, "web-1"}}).Cert
	for _, tt := range []struct {
		name string
		old  *x509.Certificate
		pub  any
		opts ReissueOptions
		want string
	}{
		{"admin", admin, key.Public(), ReissueOptions{Lifetime: time.Hour}, "admin:ops is not an agent"},
		{"other CA", foreign, key.Public(), ReissueOptions{Lifetime: time.Hour}, "was not signed by this CA"},
		{"rsa key", agent, rsaKey.Public(), ReissueOptions{Lifetime: time.Hour}, "key type"},
		{"no lifetime", agent, key.Public(), ReissueOptions{}, "lifetime 0s must be positive"},
		{"cut-off past the end", agent, key.Public(), ReissueOptions{Lifetime: time.Minute, After: time.Now().Add(time.Hour)}, "is not after NotBefore"},
	} {
		_, err := ca.ReissueAgent(tt.old, tt.pub, tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestParseAgentCSR(t *testing.T) {
	id := Identity{KindAgent, "web-1"}
	good, _, err := CreateAgentCSR("web-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseAgentCSR(good, id); err != nil {
		t.Fatal(err)
	}
	otherName, _, _ := CreateAgentCSR("web-2")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"x"}}, key)
	withDNS := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	for name, csr := range map[string][]byte{
		"another node": otherName,
		"dns name":     withDNS,
		"not pem":      []byte("junk"),
		"trailing":     append(append([]byte(nil), good...), []byte("x")...),
	} {
		if _, err := ParseAgentCSR(csr, id); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: err = %v, want ErrBadCSR", name, err)
		}
	}
}

func TestRenewAt(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(9 * time.Hour)}
	if got := RenewAt(c); !got.Equal(nb.Add(6 * time.Hour)) {
		t.Fatalf("RenewAt = %v", got)
	}
}
