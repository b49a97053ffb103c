package uitoken

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
)

func load(t *testing.T, f pkitest.Files) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf, pair.PrivateKey.(crypto.Signer)
}

// TestMintVerify: an admin's token verifies until it expires; every
// refusal names its reason; an agent's is ErrForbidden.
func TestMintVerify(t *testing.T) {
	d := pkitest.New(t)
	roots, err := pki.LoadCertPool(d.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, key := load(t, d.Issue(pki.KindAdmin, "alice"))
	tok, exp, err := Mint(cert, key, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > MaxLen {
		t.Errorf("token is %d bytes", len(tok))
	}
	id, gotExp, err := Verify(tok, roots, now.Add(time.Minute))
	if err != nil || id.Kind != pki.KindAdmin || id.Name != "alice" || !gotExp.Equal(exp) {
		t.Fatalf("Verify: %v %v %v (expires %v)", id, gotExp, err, exp)
	}
	if _, _, err := Mint(cert, key, MaxTTL+time.Second, now); err == nil {
		t.Error("Mint with a ttl over MaxTTL")
	}
	agentCert, agentKey := load(t, d.Issue(pki.KindAgent, "web-1"))
	agentTok, _, err := Mint(agentCert, agentKey, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by alice's certificate but with another key.
	_, otherKey := load(t, d.Issue(pki.KindAdmin, "bob"))
	forged, _, err := Mint(cert, otherKey, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	longer, _, err := Mint(cert, key, 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	future, _, err := Mint(cert, key, time.Hour, now.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	// The claims of the 2h token with the signature of the 1h one.
	parts := strings.Split(tok, ".")
	swapped := strings.Join([]string{parts[0], parts[1], strings.Split(longer, ".")[2], parts[3]}, ".")
	for _, c := range []struct {
		what, tok string
		at        time.Time
		want      string
	}{
		{"expired", tok, now.Add(time.Hour), "expired"},
		{"issued in the future", future, now, "future"},
		{"agent", agentTok, now, "not an admin"},
		{"another key", forged, now, "signature does not verify"},
		{"claims of another token", swapped, now, "signature does not verify"},
		{"not a token", "hello", now, "not a dashboard token"},
		{"parts", "hdt1.a.b", now, "4 dot-separated parts"},
		{"base64", "hdt1.!!.b.c", now, "malformed token certificate"},
		{"too long", "hdt1." + strings.Repeat("a", MaxLen), now, "limit"},
	} {
		_, _, err := Verify(c.tok, roots, c.at)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.what, err, c.want)
		}
		if forbidden := errors.Is(err, ErrForbidden); forbidden != (c.what == "agent") {
			t.Errorf("%s: ErrForbidden %v", c.what, forbidden)
		}
	}
	other := pkitest.New(t)
	otherRoots, _ := pki.LoadCertPool(other.CAFile())
	if _, _, err := Verify(tok, otherRoots, now); err == nil || !strings.Contains(err.Error(), "not valid for this site") {
		t.Errorf("another CA: %v", err)
	}
	if _, _, err := Verify(tok, nil, now); err == nil {
		t.Error("no roots: accepted")
	}
}
