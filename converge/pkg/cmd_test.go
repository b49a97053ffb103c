package pkg_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/pkg"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestAptCommandLines checks, with recorded commands, that one batch is one
// apt-get transaction (installs and removals together), that a changed
// repo triggers exactly one refresh, and that pins use the repository's
// exact version.
func TestAptCommandLines(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "var/lib/dpkg"), 0o755))
	status := "Package: old\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n\n" +
		"Package: conf-only\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
	must(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(status), 0o644))
	rec := &convergetest.Recorder{Reply: func(c converge.Cmd) (converge.Output, error) {
		if len(c.Args) > 1 && c.Args[1] == "apt-cache" {
			// After the refresh the repository offers both packages.
			return converge.Output{Stdout: []byte(" nginx | 1.22.1-9 | http://r stable/main amd64 Packages\n" +
				" conf-only | 2.0-1 | http://r stable/main amd64 Packages\n")}, nil
		}
		if len(c.Args) > 1 && c.Args[1] == "apt-get" && strings.Contains(strings.Join(c.Args, " "), " install ") {
			// Pretend dpkg did it.
			st := "Package: nginx\nStatus: install ok installed\nVersion: 1.22.1-9\n\nPackage: conf-only\nStatus: install ok installed\nVersion: 2.0-1\n\n"
			must(t, os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), []byte(st), 0o644))
		}
		return converge.Output{}, nil
	}}
	env := &converge.Env{Root: root, Runner: rec, Family: converge.FamilyDebian}
	p := newProvider(t, pkg.Config{AptArgs: []string{"-o", "Acquire::Retries=0"}})
	b := &converge.Batch{Changed: map[string]bool{"repo:hive": true}}
	for _, r := range []*hivev1.Resource{pkgRes("nginx", "1.22.1", false), pkgRes("conf-only", "", false), pkgRes("old", "", true)} {
		b.Items = append(b.Items, converge.Item{Key: r.Key, Resource: r})
	}
	chs, err := p.Plan(context.Background(), env, b)
	must(t, err)
	for i, c := range chs {
		c.Key, c.Resource = b.Items[i].Key, b.Items[i].Resource
	}
	if len(rec.Lines()) != 0 {
		t.Fatalf("plan ran commands: %v", rec.Lines())
	}
	must(t, p.Apply(context.Background(), env, chs))
	for _, c := range chs {
		if c.Err != nil {
			t.Errorf("%s: %v", c.Key, c.Err)
		}
	}
	want := []string{
		"chroot " + root + " apt-cache -o Acquire::Retries=0 madison nginx conf-only",
		"chroot " + root + " apt-get -o Acquire::Retries=0 -o DPkg::Lock::Timeout=10 update -q --error-on=any",
		"chroot " + root + " apt-cache -o Acquire::Retries=0 madison nginx conf-only",
		"chroot " + root + " apt-get -o Acquire::Retries=0 -o DPkg::Lock::Timeout=10 install -y -q --no-install-recommends --allow-downgrades " +
			"-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold nginx=1.22.1-9 conf-only old-",
	}
	if got := rec.Lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAptFreshRootHasNothingInstalled(t *testing.T) {
	env := &converge.Env{Root: t.TempDir(), Runner: &convergetest.Recorder{}, Family: converge.FamilyDebian}
	_, needed := convergetest.PlanOnly(t, newProvider(t, pkg.Config{}), env, []*hivev1.Resource{pkgRes("curl", "", false), pkgRes("telnet", "", true)}, nil)
	if len(needed) != 1 || needed[0].Summary != "install curl" {
		t.Fatalf("needed %+v", needed)
	}
}
