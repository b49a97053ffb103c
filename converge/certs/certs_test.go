package certs_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/certs"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// fakeIssuer signs as the coordinator does (names from the node's facts
// and the resource, never from the CSR), or fails with err.
type fakeIssuer struct {
	ca    *pki.CA
	facts *hivev1.NodeFacts
	res   map[string]*hivev1.Certificate

	mu    sync.Mutex
	calls int
	err   error
}

func (f *fakeIssuer) IssueServiceCertificate(ctx context.Context, name string, csrPEM []byte) ([]byte, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, nil, f.err
	}
	csr, err := pki.ParseServiceCSR(csrPEM)
	if err != nil {
		return nil, nil, err
	}
	c := f.res[name]
	var dns []string
	for _, d := range c.GetDnsNames() {
		dns = append(dns, strings.ReplaceAll(d, certs.NodePlaceholder, f.facts.GetName()))
	}
	var ips []net.IP
	for _, a := range f.facts.GetAddresses() {
		ips = append(ips, net.ParseIP(a))
	}
	iss, err := f.ca.IssueService(pki.ServiceRequest{Node: f.facts.GetName(), DNS: dns, IPs: ips, PublicKey: csr.PublicKey,
		Validity: time.Duration(c.GetValiditySeconds()) * time.Second})
	if err != nil {
		return nil, nil, err
	}
	return iss.CertPEM, f.ca.CertPEM(), nil
}

func certResource(c *hivev1.Certificate) *hivev1.Resource {
	return &hivev1.Resource{Key: "certificate:" + c.GetName(), Kind: &hivev1.Resource_Certificate{Certificate: c}}
}

// TestCertificateTimeline: issued from empty, a no-op next, owner/mode
// drift repaired without a new certificate, a deleted certificate issued
// again; then renewed once two thirds of its lifetime passed, issued
// again when the node's addresses change, and an issuer failure writes
// nothing.
func TestCertificateTimeline(t *testing.T) {
	d := pkitest.New(t)
	root := t.TempDir()
	facts := &hivev1.NodeFacts{Name: "web-1", Addresses: []string{"10.0.0.5"}}
	c := &hivev1.Certificate{Name: "docker", CertPath: "/etc/docker/tls/cert.pem", KeyPath: "/etc/docker/tls/key.pem",
		CaPath: "/etc/docker/tls/ca.pem", DnsNames: []string{"{node}.example.com"}, ValiditySeconds: 3600, Owner: "root", Group: "root", KeyMode: 0o640}
	iss := &fakeIssuer{ca: d.CA, facts: facts, res: map[string]*hivev1.Certificate{"docker": c}}
	var now time.Time
	var nowMu sync.Mutex
	clock := func() time.Time {
		nowMu.Lock()
		defer nowMu.Unlock()
		if now.IsZero() {
			return time.Now()
		}
		return now
	}
	p := certs.New(certs.Config{Issuer: iss, CAFile: d.CAFile(), Now: clock})
	env := &converge.Env{Root: root, Runner: &convergetest.Recorder{}, Facts: facts}
	desired := []*hivev1.Resource{certResource(c)}
	hostPath := func(p string) string { return filepath.Join(root, p) }
	leaf := func(t *testing.T) *pkiLeaf {
		data, err := os.ReadFile(hostPath(c.CertPath))
		if err != nil {
			t.Fatal(err)
		}
		cs, err := pki.ParseCerts(data)
		if err != nil || len(cs) != 1 {
			t.Fatalf("certificate file: %v", err)
		}
		return &pkiLeaf{serial: cs[0].SerialNumber.String(), dns: cs[0].DNSNames, ips: cs[0].IPAddresses, notAfter: cs[0].NotAfter, renewAt: pki.RenewAt(cs[0])}
	}
	convergetest.Run(t, convergetest.Timeline{
		Provider: p, Env: env, Desired: desired,
		Check: func(t *testing.T) {
			l := leaf(t)
			if !slices.Equal(l.dns, []string{"web-1", "web-1.example.com"}) || len(l.ips) != 1 || l.ips[0].String() != "10.0.0.5" {
				t.Fatalf("names: %v %v", l.dns, l.ips)
			}
			fi, err := os.Stat(hostPath(c.KeyPath))
			if err != nil || fi.Mode().Perm() != 0o640 {
				t.Fatalf("key mode: %v %v", fi.Mode(), err)
			}
			ca, _ := os.ReadFile(hostPath(c.CaPath))
			if string(ca) != string(d.CA.CertPEM()) {
				t.Fatal("ca_path does not hold the site CA")
			}
			if got := p.NextRenewal(); !got.Equal(l.renewAt) {
				t.Fatalf("NextRenewal %v, want %v", got, l.renewAt)
			}
		},
		Drift: func(t *testing.T) {
			if err := os.Chmod(hostPath(c.KeyPath), 0o666); err != nil {
				t.Fatal(err)
			}
		},
	})
	calls := iss.calls
	if calls != 1 {
		t.Fatalf("%d certificates issued for one from-empty run and a mode drift", calls)
	}

	before := leaf(t)
	// Renewal at two thirds of the lifetime.
	nowMu.Lock()
	now = before.renewAt.Add(time.Second)
	nowMu.Unlock()
	chs, _ := convergetest.PlanOnly(t, p, env, desired, nil)
	if !chs[0].Needed || !strings.Contains(chs[0].Summary, "renew the certificate") {
		t.Fatalf("due certificate planned as %q", chs[0].Summary)
	}
	convergetest.Converge(t, p, env, desired, nil, 1)
	if after := leaf(t); after.serial == before.serial {
		t.Fatal("renewal kept the old certificate")
	}
	nowMu.Lock()
	now = time.Time{}
	nowMu.Unlock()
	convergetest.Converge(t, p, env, desired, nil, 0)

	// The node's trusted addresses changed: a new certificate.
	facts.Addresses = []string{"10.0.0.6"}
	chs, _ = convergetest.PlanOnly(t, p, env, desired, nil)
	if !chs[0].Needed || !strings.Contains(chs[0].Summary, "addresses [10.0.0.5] → [10.0.0.6]") {
		t.Fatalf("address change planned as %q", chs[0].Summary)
	}
	convergetest.Converge(t, p, env, desired, nil, 1)

	// A failing issuer changes nothing.
	os.Remove(hostPath(c.CertPath))
	keyBefore, _ := os.ReadFile(hostPath(c.KeyPath))
	iss.err = errors.New("rpc error: code = PermissionDenied desc = certificate of agent:web-1 revoked")
	chs, _ = convergetest.PlanOnly(t, p, env, desired, nil)
	if err := p.Apply(context.Background(), env, chs); err != nil {
		t.Fatal(err)
	}
	if chs[0].Err == nil || !strings.Contains(chs[0].Err.Error(), "revoked") {
		t.Fatalf("issuer failure: %v", chs[0].Err)
	}
	if _, err := os.Stat(hostPath(c.CertPath)); err == nil {
		t.Fatal("a certificate appeared although the issuer failed")
	}
	if keyAfter, _ := os.ReadFile(hostPath(c.KeyPath)); string(keyAfter) != string(keyBefore) {
		t.Fatal("the key changed although the issuer failed")
	}
}

type pkiLeaf struct {
	serial   string
	dns      []string
	ips      []net.IP
	notAfter time.Time
	renewAt  time.Time
}

// TestCertificateForeignCA: a certificate not signed by the site CA is
// replaced.
func TestCertificateForeignCA(t *testing.T) {
	site, other := pkitest.New(t), pkitest.New(t)
	root := t.TempDir()
	facts := &hivev1.NodeFacts{Name: "web-1"}
	c := &hivev1.Certificate{Name: "x", CertPath: "/c.pem", KeyPath: "/k.pem", KeyMode: 0o600}
	foreign := &fakeIssuer{ca: other.CA, facts: facts, res: map[string]*hivev1.Certificate{"x": c}}
	env := &converge.Env{Root: root, Runner: &convergetest.Recorder{}, Facts: facts}
	convergetest.Converge(t, certs.New(certs.Config{Issuer: foreign}), env, []*hivev1.Resource{certResource(c)}, nil, 1)
	p := certs.New(certs.Config{Issuer: &fakeIssuer{ca: site.CA, facts: facts, res: foreign.res}, CAFile: site.CAFile()})
	chs, _ := convergetest.PlanOnly(t, p, env, []*hivev1.Resource{certResource(c)}, nil)
	if !chs[0].Needed || !strings.Contains(chs[0].Summary, "not signed by the site CA") {
		t.Fatalf("foreign certificate planned as %q", chs[0].Summary)
	}
}
