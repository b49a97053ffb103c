package pki

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"
)

func TestValidateLabel(t *testing.T) {
	for _, c := range []struct {
		k, v string
		ok   bool
	}{
		{"tier", "web", true},
		{"example.com/zone", "eu-1", true},
		{"tier", "", true},
		{"", "x", false},
		{"-tier", "x", false},
		{"ti er", "x", false},
		{"tier", "web\nrole: db", false},
		{"tier", "a b", false},
		{strings.Repeat("k", MaxLabelKeyLen+1), "x", false},
		{"k", strings.Repeat("v", MaxLabelValueLen+1), false},
	} {
		err := ValidateLabel(c.k, c.v)
		if (err == nil) != c.ok {
			t.Errorf("ValidateLabel(%q, %q) = %v, want ok=%v", c.k, c.v, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrBadLabel) {
			t.Errorf("ValidateLabel(%q, %q) = %v, not ErrBadLabel", c.k, c.v, err)
		}
	}
	if err := ValidateLabel("tier", "a\nb"); err == nil || !strings.Contains(err.Error(), `\n`) {
		t.Errorf("newline not escaped in %v", err)
	}
}

func TestParseLabelArgs(t *testing.T) {
	got, err := ParseLabelArgs([]string{"tier=web", "zone=eu"})
	if err != nil || got["tier"] != "web" || got["zone"] != "eu" || len(got) != 2 {
		t.Fatalf("ParseLabelArgs = %v, %v", got, err)
	}
	for _, bad := range [][]string{{"tier"}, {"tier=a", "tier=b"}, {"=x"}, {"t=a b"}} {
		if _, err := ParseLabelArgs(bad); err == nil {
			t.Errorf("ParseLabelArgs(%q) accepted", bad)
		}
	}
}

func TestCertificateLabels(t *testing.T) {
	ca := mustCA(t)
	iss := mustIssue(t, ca, CertRequest{Identity: Identity{KindAgent, "web-1"}, Labels: map[string]string{"tier": "web", "zone": "eu"}})
	got, err := LabelsFromCert(iss.Cert)
	if err != nil || len(got) != 2 || got["tier"] != "web" || got["zone"] != "eu" {
		t.Fatalf("LabelsFromCert = %v, %v", got, err)
	}
	plain := mustIssue(t, ca, CertRequest{Identity: Identity{KindAgent, "web-2"}})
	if got, err := LabelsFromCert(plain.Cert); err != nil || got != nil {
		t.Errorf("LabelsFromCert(no labels) = %v, %v", got, err)
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{KindAdmin, "alice"}, Labels: map[string]string{"tier": "web"}}); err == nil {
		t.Error("admin certificate with labels accepted")
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{KindAgent, "a"}, Labels: map[string]string{"tier": "a\nb"}}); !errors.Is(err, ErrBadLabel) {
		t.Errorf("bad label: %v", err)
	}

	// A CSR's own label extension is ignored: only the signer's labels count.
	csr, _, err := CreateAgentCSR("web-3")
	if err != nil {
		t.Fatal(err)
	}
	pemCert, err := SignAgentCSRLabels(ca.Cert, ca.Key, csr, "web-3", map[string]string{"tier": "web"})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(pemCert)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := LabelsFromCert(certs[0]); err != nil || got["tier"] != "web" || len(got) != 1 {
		t.Errorf("labels of a signed CSR = %v, %v", got, err)
	}
}

func TestLabelsFromCertMalformed(t *testing.T) {
	ca := mustCA(t)
	bad := func(pairs []labelPair) []byte {
		der, err := asn1.Marshal(pairs)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for name, val := range map[string][]byte{
		"garbage":   {0x01, 0x02},
		"bad value": bad([]labelPair{{"tier", "a\nb"}}),
		"duplicate": bad([]labelPair{{"tier", "a"}, {"tier", "b"}}),
		"trailing":  append(bad([]labelPair{{"tier", "a"}}), 0),
	} {
		iss := mustIssue(t, ca, CertRequest{Identity: Identity{KindAgent, "x"}})
		c := *iss.Cert
		c.Extensions = append(append([]pkix.Extension(nil), c.Extensions...), pkix.Extension{Id: OIDLabels, Value: val})
		if _, err := LabelsFromCert(&c); !errors.Is(err, ErrBadLabel) {
			t.Errorf("%s: LabelsFromCert = %v, want ErrBadLabel", name, err)
		}
	}
}

// FuzzLabelsFromCert: any label extension either is refused or yields
// labels that validate (so nothing unchecked reaches a selector).
func FuzzLabelsFromCert(f *testing.F) {
	ca, err := NewCA(CAOptions{})
	if err != nil {
		f.Fatal(err)
	}
	iss, err := ca.Issue(CertRequest{Identity: Identity{KindAgent, "n1"}, Labels: map[string]string{"tier": "web"}})
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range iss.Cert.Extensions {
		if e.Id.Equal(OIDLabels) {
			f.Add(e.Value)
		}
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		c := *iss.Cert
		c.Extensions = []pkix.Extension{{Id: OIDLabels, Value: data}}
		labels, err := LabelsFromCert(&c)
		if err != nil {
			return
		}
		if err := ValidateLabels(labels); err != nil {
			t.Fatalf("accepted labels %q do not validate: %v", labels, err)
		}
	})
}
