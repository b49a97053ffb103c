package netlabtests

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
)

const certsSite = `site: netlab-certs
selectors:
  - match: {tier: web}
    roles: [web]
roles:
  web:
    certificates:
      - name: svc
        cert: /etc/svc/tls/cert.pem
        key: /etc/svc/tls/key.pem
        ca: /etc/svc/tls/ca.pem
        dns_names: ["{node}.svc.example"]
        validity: 15s
`

// Service certificates on real agents: each node gets a certificate of
// the site CA for its name, its trusted address (its host's) and the
// site's DNS names, with a key made on the node; the agent renews it at
// about two thirds of its 15-second lifetime by itself although its drift
// interval is 5 minutes; a revoked node's certificate is not renewed.
func TestServiceCertificates(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 2, interval: 5 * time.Minute,
		coordinatorArgs: []string{"--tls-ca-key", "PKI/ca-key.pem"}})
	a1, a2 := c.agents[0], c.agents[1]
	g1 := c.push(certsSite, false)
	c.waitConverged(g1, 30*time.Second, a1, a2)

	roots, err := pki.LoadCertPool(filepath.Join(c.pki, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	certOf := func(a *node) *x509.Certificate {
		t.Helper()
		return readCert(t, filepath.Join(a.root, "etc/svc/tls/cert.pem"))
	}
	first := map[string]*x509.Certificate{}
	for _, a := range []*node{a1, a2} {
		crt := certOf(a)
		first[a.name] = crt
		if want := []string{a.name, a.name + ".svc.example"}; !slices.Equal(crt.DNSNames, want) {
			t.Errorf("%s: DNS names %v, want %v", a.name, crt.DNSNames, want)
		}
		if len(crt.IPAddresses) != 1 || !crt.IPAddresses[0].Equal(net.ParseIP(a.host.Addr)) {
			t.Errorf("%s: IP addresses %v, want its host's %s", a.name, crt.IPAddresses, a.host.Addr)
		}
		if _, err := crt.Verify(x509.VerifyOptions{Roots: roots, DNSName: a.name + ".svc.example", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: certificate does not verify for %s.svc.example: %v", a.name, a.name, err)
		}
		fi, err := os.Stat(filepath.Join(a.root, "etc/svc/tls/key.pem"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file %v %v", a.name, fi, err)
		}
		if ca, _ := os.ReadFile(filepath.Join(c.pki, "ca.pem")); a.readFile("/etc/svc/tls/ca.pem") != string(ca) {
			t.Errorf("%s: ca file does not hold the site CA", a.name)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := c.ctl(ctx, "node", "revoke", "a2", "--reason", "netlab: certs"); err != nil {
		t.Fatalf("node revoke: %v\n%s", err, out)
	}

	// a1 renews at about two thirds of the lifetime, by itself.
	f1 := first["a1"]
	var renewed *x509.Certificate
	if !poll(25*time.Second, func() bool {
		c.mustRun(a1)
		b, err := os.ReadFile(filepath.Join(a1.root, "etc/svc/tls/cert.pem"))
		if err != nil {
			return false
		}
		cs, err := pki.ParseCerts(b)
		if err != nil || len(cs) == 0 || cs[0].SerialNumber.Cmp(f1.SerialNumber) == 0 {
			return false
		}
		renewed = cs[0]
		return true
	}) {
		t.Fatalf("a1's certificate (renewal due %s) not renewed; a1's log:\n%s", pki.RenewAt(f1).Format(time.RFC3339), a1.proc.Log())
	}
	life := f1.NotAfter.Sub(f1.NotBefore)
	at := renewed.NotBefore.Sub(f1.NotBefore)
	t.Logf("FIGURE service certificate renewal: new certificate (NotBefore, backdated a tenth of its lifetime) %v into a %v lifetime (%.0f%%; due at 2/3), drift interval 5m",
		at.Round(100*time.Millisecond), life, 100*float64(at)/float64(life))
	if at > life*5/6 {
		t.Errorf("renewed %v into a %v lifetime; want about two thirds", at, life)
	}

	// Revoked a2 gets none: its certificate stays the first one past its
	// renewal time, and its agent says why.
	f2 := first["a2"]
	time.Sleep(time.Until(pki.RenewAt(f2).Add(3 * time.Second)))
	if got := certOf(a2); got.SerialNumber.Cmp(f2.SerialNumber) != 0 {
		t.Fatalf("revoked a2 got a new certificate %s", got.SerialNumber.Text(16))
	}
	if l := a2.proc.Log(); !strings.Contains(l, "PermissionDenied") || !strings.Contains(l, "issue certificate svc") {
		t.Errorf("a2's log does not show the refused certificate:\n%s", l)
	}
}
