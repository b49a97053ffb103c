// Package pkitest gives tests a throw-away hive CA in a temporary directory
// and certificates for any identity, written by the real pki functions.
// Imported by tests only.
package pkitest

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/pki"
)

// Dir is a temporary directory holding ca.pem, ca-key.pem and the
// certificates issued so far.
type Dir struct {
	t   testing.TB
	Dir string
	CA  *pki.CA
}

// New creates a CA in t.TempDir().
func New(t testing.TB) *Dir {
	t.Helper()
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dir{t: t, Dir: t.TempDir(), CA: ca}
	if _, _, err := pki.WriteCA(d.Dir, ca, false); err != nil {
		t.Fatal(err)
	}
	return d
}

// CAFile is the path of ca.pem.
func (d *Dir) CAFile() string { return filepath.Join(d.Dir, pki.CAFile) }

// Files are the paths a party needs for mutual TLS.
type Files struct {
	CA, Cert, Key string
}

// Issue writes NAME.pem and NAME-key.pem for kind/name (replacing earlier
// ones) and returns the three paths. Coordinator certificates carry the
// default loopback SANs plus ips.
func (d *Dir) Issue(kind pki.Kind, name string, ips ...net.IP) Files {
	d.t.Helper()
	return d.IssueRequest(pki.CertRequest{Identity: pki.Identity{Kind: kind, Name: name}, IPs: ips})
}

// IssueRequest is Issue for a full request (e.g. an agent with labels).
func (d *Dir) IssueRequest(req pki.CertRequest) Files {
	d.t.Helper()
	name := req.Identity.Name
	iss, err := d.CA.Issue(req)
	if err != nil {
		d.t.Fatal(err)
	}
	c, k, err := pki.WriteCert(d.Dir, name, iss, true)
	if err != nil {
		d.t.Fatal(err)
	}
	return Files{CA: d.CAFile(), Cert: c, Key: k}
}
