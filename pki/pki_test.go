package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, req CertRequest) *Issued {
	t.Helper()
	iss, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func TestIssueKinds(t *testing.T) {
	ca := mustCA(t)
	coord := mustIssue(t, ca, CertRequest{
		Identity: Identity{KindCoordinator, "c1"},
		IPs:      []net.IP{net.ParseIP("10.0.0.5"), net.ParseIP("127.0.0.1")},
		DNS:      []string{"c1.example.net"},
	})
	c := coord.Cert
	if c.Subject.CommonName != "coordinator:c1" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "hive://coordinator/c1" {
		t.Errorf("URIs = %v", c.URIs)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.5", "127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IPs = %v, want %v", ips, want)
	}
	if want := []string{"c1.example.net", "localhost"}; !slices.Equal(c.DNSNames, want) {
		t.Errorf("DNS = %v, want %v", c.DNSNames, want)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("coordinator EKU = %v", c.ExtKeyUsage)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("not signed by ca: %v", err)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}

	for _, k := range []Kind{KindAgent, KindAdmin} {
		iss := mustIssue(t, ca, CertRequest{Identity: Identity{k, "n1"}})
		if !slices.Equal(iss.Cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("%s EKU = %v", k, iss.Cert.ExtKeyUsage)
		}
		if len(iss.Cert.IPAddresses)+len(iss.Cert.DNSNames) != 0 {
			t.Errorf("%s has IP/DNS SANs", k)
		}
		id, err := IdentityFromCert(iss.Cert)
		if err != nil || id != (Identity{k, "n1"}) {
			t.Errorf("IdentityFromCert = %v, %v", id, err)
		}
	}

	if _, err := ca.Issue(CertRequest{Identity: Identity{KindAgent, "a"}, DNS: []string{"a.example"}}); err == nil {
		t.Error("agent certificate with --dns accepted")
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{KindAdmin, "a"}, IPs: []net.IP{net.ParseIP("10.0.0.1")}}); err == nil {
		t.Error("admin certificate with --ip accepted")
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{KindAgent, "a"}, IPs: []net.IP{net.IPv4zero}}); err == nil {
		t.Error("agent certificate for 0.0.0.0 accepted")
	}
	for _, bad := range []string{"", "a b", "-x.example", "x..y", "x_y.example", strings.Repeat("a", 64) + ".example"} {
		if _, err := ca.Issue(CertRequest{Identity: Identity{KindCoordinator, "c"}, DNS: []string{bad}}); err == nil {
			t.Errorf("dns name %q accepted", bad)
		}
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{KindCoordinator, "c"}, DNS: []string{"*.c.example.net", "C1.example."}}); err != nil {
		t.Errorf("valid dns names refused: %v", err)
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{"robot", "a"}}); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("unknown kind: err = %v, want ErrBadIdentity", err)
	}
	if _, err := ca.Issue(CertRequest{Identity: Identity{KindAdmin, "../etc"}}); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: err = %v, want ErrBadName", err)
	}
}

func TestCA(t *testing.T) {
	ca := mustCA(t)
	if !ca.Cert.IsCA || !ca.Cert.MaxPathLenZero || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA constraints wrong: IsCA=%v MaxPathLenZero=%v KeyUsage=%v", ca.Cert.IsCA, ca.Cert.MaxPathLenZero, ca.Cert.KeyUsage)
	}
	if ca.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("algorithm %v", ca.Cert.PublicKeyAlgorithm)
	}
	// A leaf never outlives its CA.
	short, err := NewCA(CAOptions{Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	iss := mustIssue(t, short, CertRequest{Identity: Identity{KindAdmin, "a"}})
	if iss.Cert.NotAfter.After(short.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %v after CA NotAfter %v", iss.Cert.NotAfter, short.Cert.NotAfter)
	}
}

func certWith(t *testing.T, cn string, uris ...string) *x509.Certificate {
	t.Helper()
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

func TestIdentityFromCert(t *testing.T) {
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    Identity
		wantErr error
	}{
		{"agent", certWith(t, "agent:web-1", "hive://agent/web-1"), Identity{KindAgent, "web-1"}, nil},
		{"admin with at", certWith(t, "admin:alice@example.net", "hive://admin/alice@example.net"), Identity{KindAdmin, "alice@example.net"}, nil},
		{"coordinator", certWith(t, "coordinator:c1", "hive://coordinator/c1"), Identity{KindCoordinator, "c1"}, nil},
		{"other uri ignored", certWith(t, "agent:a", "spiffe://x/y", "hive://agent/a"), Identity{KindAgent, "a"}, nil},
		{"nil", nil, Identity{}, ErrNoCertificate},
		{"no uri", certWith(t, "agent:a"), Identity{}, ErrNoIdentity},
		{"only foreign uri", certWith(t, "agent:a", "https://example.net/"), Identity{}, ErrNoIdentity},
		{"two identities", certWith(t, "agent:a", "hive://agent/a", "hive://agent/b"), Identity{}, ErrBadIdentity},
		{"cn mismatch", certWith(t, "admin:a", "hive://agent/a"), Identity{}, ErrBadIdentity},
		{"unknown kind", certWith(t, "root:a", "hive://root/a"), Identity{}, ErrBadIdentity},
		{"empty name", certWith(t, "agent:", "hive://agent/"), Identity{}, ErrBadIdentity},
		{"nested path", certWith(t, "agent:a/b", "hive://agent/a/b"), Identity{}, ErrBadIdentity},
		{"query", certWith(t, "agent:a", "hive://agent/a?x=1"), Identity{}, ErrBadIdentity},
		{"user", certWith(t, "agent:a", "hive://u@agent/a"), Identity{}, ErrBadIdentity},
		{"bad char", certWith(t, "agent:a b", "hive://agent/a%20b"), Identity{}, ErrBadIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := IdentityFromCert(tt.cert)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"a", "web-01.dc1", "alice@example.net", "n_1", "A"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	long := make([]byte, MaxNameLen+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, bad := range []string{"", ".hidden", "-x", "a/b", "a b", "ü", string(long), "a:b"} {
		if err := ValidateName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidateName(%q) = %v, want ErrBadName", bad, err)
		}
	}
}

func TestWriteLoadFiles(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t)
	certPath, keyPath, err := WriteCA(dir, ca, false)
	if err != nil {
		t.Fatal(err)
	}
	if certPath != filepath.Join(dir, "ca.pem") || keyPath != filepath.Join(dir, "ca-key.pem") {
		t.Errorf("paths %s %s", certPath, keyPath)
	}
	checkMode(t, keyPath, 0o600)
	checkMode(t, certPath, 0o644)
	before, _ := os.ReadFile(certPath)

	// A second CA is refused, and nothing changes.
	other := mustCA(t)
	if _, _, err := WriteCA(dir, other, false); !errors.Is(err, ErrExists) {
		t.Fatalf("overwrite without force: err = %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(certPath)
	if string(before) != string(after) {
		t.Fatal("ca.pem changed after a refused write")
	}
	loaded, err := LoadCAFromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("loaded CA differs")
	}
	// With force it is replaced.
	if _, _, err := WriteCA(dir, other, true); err != nil {
		t.Fatal(err)
	}
	loaded, err = LoadCAFromDir(dir)
	if err != nil || !loaded.Cert.Equal(other.Cert) {
		t.Fatalf("forced CA not written: %v", err)
	}

	iss := mustIssue(t, loaded, CertRequest{Identity: Identity{KindAgent, "web1"}})
	cp, kp, err := WriteCert(dir, "web1", iss, false)
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, kp, 0o600)
	if filepath.Base(cp) != "web1.pem" || filepath.Base(kp) != "web1-key.pem" {
		t.Errorf("cert files %s %s", cp, kp)
	}
	if _, _, err := WriteCert(dir, "web1", iss, false); !errors.Is(err, ErrExists) {
		t.Errorf("cert overwrite: err = %v, want ErrExists", err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 4 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("dir has %v", names)
	}

	// A key that does not belong to the certificate is refused.
	if err := os.WriteFile(filepath.Join(dir, "ca-key.pem"), iss.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAFromDir(dir); err == nil {
		t.Error("mismatched CA key accepted")
	}
	// A leaf is not a CA.
	if _, err := LoadCA(cp, kp); err == nil {
		t.Error("leaf certificate loaded as CA")
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func TestSignAgentCSR(t *testing.T) {
	ca := mustCA(t)
	csr, key, err := CreateAgentCSR("web-7")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := SignAgentCSR(ca.Cert, ca.Key, csr, "web-7")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityFromCert(certs[0])
	if err != nil || id != (Identity{KindAgent, "web-7"}) {
		t.Fatalf("identity %v, %v", id, err)
	}
	k, err := ParseKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(certs[0].PublicKey, k.Public()) {
		t.Fatal("certificate does not certify the CSR's key")
	}
	if !slices.Equal(certs[0].ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("EKU = %v", certs[0].ExtKeyUsage)
	}

	// A token for another node cannot be redeemed with this CSR.
	if _, err := SignAgentCSR(ca.Cert, ca.Key, csr, "web-8"); !errors.Is(err, ErrBadCSR) {
		t.Errorf("other node: err = %v, want ErrBadCSR", err)
	}
	for name, bad := range map[string][]byte{
		"empty":    nil,
		"garbage":  []byte("hello"),
		"cert pem": certPEM,
		"corrupt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}),
		"trailing": append(append([]byte{}, csr...), "junk"...),
	} {
		if _, err := SignAgentCSR(ca.Cert, ca.Key, bad, "web-7"); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: err = %v, want ErrBadCSR", name, err)
		}
	}
	if _, err := SignAgentCSR(ca.Cert, ca.Key, csr, "bad/name"); !errors.Is(err, ErrBadName) {
		t.Errorf("bad node name: err = %v", err)
	}
}

func FuzzParseIdentityURI(f *testing.F) {
	for _, s := range []string{"hive://agent/a", "hive://admin/alice@x", "hive://coordinator/c1", "hive://x/", "hive://agent/a/b", "hive:agent", "http://agent/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := ParseIdentityURI(u)
		if err != nil {
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted invalid identity %v: %v", id, err)
		}
		// Round trip.
		back, err := ParseIdentityURI(id.URI())
		if err != nil || back != id {
			t.Fatalf("round trip %q → %v → %v, %v", s, id, back, err)
		}
	})
}

func FuzzSignAgentCSR(f *testing.F) {
	csr, _, err := CreateAgentCSR("n1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	ca, err := NewCA(CAOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := SignAgentCSR(ca.Cert, ca.Key, data, "n1")
		if err != nil {
			return
		}
		certs, err := ParseCerts(out)
		if err != nil {
			t.Fatal(err)
		}
		if id, err := IdentityFromCert(certs[0]); err != nil || id != (Identity{KindAgent, "n1"}) {
			t.Fatalf("signed %v, %v", id, err)
		}
	})
}
