package certs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/certs"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

var trustRes = &hivev1.Resource{Key: "ca_trust:site", Kind: &hivev1.Resource_CaTrust{CaTrust: &hivev1.CaTrust{}}}

// TestCaTrustDebianRoot puts the site CA into the trust store of a real
// Debian root (ca-certificates installed) with update-ca-certificates run
// in it: from empty, no-op, a bundle rebuilt without it (drift) repaired,
// then removed by Prune when the resource leaves the state.
func TestCaTrustDebianRoot(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "chroot")
	root := debroot.CopyWith(t, "ca-certificates")
	d := pkitest.New(t)
	p := certs.NewTrust(certs.TrustConfig{CAFile: d.CAFile()})
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian}
	anchor := filepath.Join(root, "usr/local/share/ca-certificates/hive-site.crt")
	bundle := filepath.Join(root, "etc/ssl/certs/ca-certificates.crt")
	caPEM := d.CA.CertPEM()
	fingerprint := func(t *testing.T) string {
		a, _ := os.ReadFile(anchor)
		b, _ := os.ReadFile(bundle)
		return convergetest.Hash(string(a)) + " " + convergetest.Hash(string(b))
	}
	inBundle := func() bool {
		b, _ := os.ReadFile(bundle)
		return bytes.Contains(b, bytes.TrimSpace(caPEM))
	}
	convergetest.Run(t, convergetest.Timeline{
		Provider: p, Env: env, Desired: []*hivev1.Resource{trustRes}, Fingerprint: fingerprint,
		Check: func(t *testing.T) {
			if a, _ := os.ReadFile(anchor); !bytes.Equal(a, caPEM) {
				t.Fatal("anchor does not hold the site CA")
			}
			if !inBundle() {
				t.Fatal("the site CA is not in " + bundle)
			}
		},
		Drift: func(t *testing.T) {
			// The bundle rebuilt by someone without hive's anchor.
			b, _ := os.ReadFile(bundle)
			if err := os.WriteFile(bundle, bytes.ReplaceAll(b, bytes.TrimSpace(caPEM), nil), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
	// Removal: Prune removes the anchor and rebuilds the bundle.
	chs, err := p.Prune(context.Background(), env, nil)
	if err != nil || len(chs) != 1 {
		t.Fatalf("prune: %v %v", chs, err)
	}
	if err := p.Apply(context.Background(), env, chs); err != nil || chs[0].Err != nil {
		t.Fatalf("apply prune: %v %v", err, chs[0].Err)
	}
	if _, err := os.Stat(anchor); err == nil || inBundle() {
		t.Fatal("the site CA is still trusted after removal")
	}
	if chs, _ := p.Prune(context.Background(), env, nil); len(chs) != 0 {
		t.Fatalf("second prune: %v", chs)
	}
}

// TestCaTrustRHELCommands: on an RPM-family root the anchor goes to
// /etc/pki/ca-trust/source/anchors and update-ca-trust extract runs in
// the root; a failing tool fails the resource with its output.
func TestCaTrustRHELCommands(t *testing.T) {
	root := t.TempDir()
	d := pkitest.New(t)
	rec := &convergetest.Recorder{}
	p := certs.NewTrust(certs.TrustConfig{CAFile: d.CAFile()})
	env := &converge.Env{Root: root, Runner: rec, Family: converge.FamilyRHEL}
	_, needed := convergetest.PlanOnly(t, p, env, []*hivev1.Resource{trustRes}, nil)
	if len(needed) != 1 {
		t.Fatal("nothing planned on an empty root")
	}
	if err := p.Apply(context.Background(), env, needed); err != nil || needed[0].Err != nil {
		t.Fatal(err, needed[0].Err)
	}
	if got := strings.Join(rec.Lines(), "\n"); got != "chroot "+root+" update-ca-trust extract" {
		t.Fatalf("commands: %q", got)
	}
	if a, _ := os.ReadFile(filepath.Join(root, "etc/pki/ca-trust/source/anchors/hive-site.pem")); !bytes.Equal(a, d.CA.CertPEM()) {
		t.Fatal("anchor not written")
	}
	// No CA file: a precise failure.
	env.Family = converge.FamilyDebian
	chs, err := certs.NewTrust(certs.TrustConfig{}).Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{{Key: trustRes.Key, Resource: trustRes}}})
	if err != nil || chs[0].Err == nil || !strings.Contains(chs[0].Err.Error(), "--tls-ca") {
		t.Fatalf("no CA file: %v %v", chs, err)
	}
}
