package certs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/certs"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The RHEL trust layout on a Debian root. No RPM mirror is reachable
// here, so this root is Debian bookworm with p11-kit and its trust module
// (the same upstream p11-kit RHEL uses, 0.24) given RHEL's layout:
//
//   - real: p11-kit's `trust extract` (Debian's build) reading anchors
//     from /etc/pki/ca-trust/source/anchors, and hive's provider writing
//     the anchor and running `update-ca-trust extract` chrooted;
//   - configured to match RHEL: the trust module's source paths, which
//     RHEL's p11-kit has compiled in (--with-trust-paths=
//     /etc/pki/ca-trust/source:/usr/share/pki/ca-trust-source) and Debian's
//     points elsewhere, set through x-init-reserved in
//     /etc/pkcs11/modules/p11-kit-trust.module;
//   - a stand-in: update-ca-trust itself (on RHEL a shell script of the
//     ca-certificates package over `trust extract`): rhelUpdateCATrust
//     below writes the bundle RHEL's script writes for TLS
//     (extracted/pem/tls-ca-bundle.pem, which /etc/pki/tls/certs/
//     ca-bundle.crt links to) with the same trust extract options; RHEL's
//     other outputs (java, edk2, openssl trust bundle) are left out.
const rhelUpdateCATrust = `#!/bin/sh
# Stand-in for RHEL's update-ca-trust (hive test, see trust_rhel_test.go).
set -e
[ "$1" = extract ] || { echo "usage: update-ca-trust extract" >&2; exit 2; }
d=/etc/pki/ca-trust/extracted
trust extract --overwrite --format=pem-bundle --filter=ca-anchors --purpose=server-auth $d/pem/tls-ca-bundle.pem
trust extract --overwrite --format=pem-bundle --filter=ca-anchors --purpose=email $d/pem/email-ca-bundle.pem
`

const rhelTrustModule = `module: p11-kit-trust.so
trust-policy: yes
disable-in: p11-kit-proxy
x-init-reserved: paths=/etc/pki/ca-trust/source:/usr/share/pki/ca-trust-source
`

// TestCaTrustRHELLayoutRoot: the provider's timeline (from empty, no-op,
// drift repaired, removed by Prune) on the RHEL layout described above;
// the CA must be in the bundle through the /etc/pki/tls/certs/ca-bundle.crt
// link that RHEL's TLS clients read.
func TestCaTrustRHELLayoutRoot(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "chroot")
	root := debroot.CopyWith(t, "p11-kit", "p11-kit-modules")
	for p, c := range map[string]string{
		"etc/pkcs11/modules/p11-kit-trust.module": rhelTrustModule,
		"usr/bin/update-ca-trust":                 rhelUpdateCATrust,
	} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"etc/pki/ca-trust/source/anchors", "usr/share/pki/ca-trust-source", "etc/pki/ca-trust/extracted/pem", "etc/pki/tls/certs"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt")); err != nil {
		t.Fatal(err)
	}
	d := pkitest.New(t)
	p := certs.NewTrust(certs.TrustConfig{CAFile: d.CAFile()})
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyRHEL}
	anchor := filepath.Join(root, "etc/pki/ca-trust/source/anchors/hive-site.pem")
	bundle := filepath.Join(root, "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem")
	link := filepath.Join(root, "etc/pki/tls/certs/ca-bundle.crt")
	caPEM := bytes.TrimSpace(d.CA.CertPEM())
	fingerprint := func(t *testing.T) string {
		a, _ := os.ReadFile(anchor)
		b, _ := os.ReadFile(bundle)
		return convergetest.Hash(string(a)) + " " + convergetest.Hash(string(b))
	}
	inBundle := func() bool {
		// Through the link, as a TLS client on RHEL reads it (the link is
		// absolute: resolve it inside the root).
		target, err := os.Readlink(link)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(root, target))
		return bytes.Contains(b, caPEM)
	}
	convergetest.Run(t, convergetest.Timeline{
		Provider: p, Env: env, Desired: []*hivev1.Resource{trustRes}, Fingerprint: fingerprint,
		Check: func(t *testing.T) {
			if a, _ := os.ReadFile(anchor); !bytes.Equal(bytes.TrimSpace(a), caPEM) {
				t.Fatal("anchor does not hold the site CA")
			}
			if !inBundle() {
				t.Fatal("the site CA is not in " + bundle)
			}
		},
		Drift: func(t *testing.T) {
			b, _ := os.ReadFile(bundle)
			if err := os.WriteFile(bundle, bytes.ReplaceAll(b, caPEM, nil), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
	chs, err := p.Prune(t.Context(), env, nil)
	if err != nil || len(chs) != 1 {
		t.Fatalf("prune: %v %v", chs, err)
	}
	if err := p.Apply(t.Context(), env, chs); err != nil || chs[0].Err != nil {
		t.Fatalf("apply prune: %v %v", err, chs[0].Err)
	}
	if _, err := os.Stat(anchor); err == nil || inBundle() {
		t.Fatal("the site CA is still trusted after removal")
	}
}
