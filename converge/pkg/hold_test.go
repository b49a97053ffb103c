package pkg_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/pkg"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func held(r *hivev1.Resource) *hivev1.Resource {
	r.GetPackage().Hold = true
	return r
}

// dpkgWant returns dpkg's selection of a package ("install", "hold").
func dpkgWant(t *testing.T, root, name string) string {
	t.Helper()
	out, err := exec.Command("chroot", root, "dpkg-query", "-W", "-f", "${db:Status-Want}", name).Output()
	if err != nil {
		t.Fatalf("dpkg-query %s: %v", name, err)
	}
	return string(out)
}

// TestAptHold holds packages with the real apt-mark in a Debian root:
// hold, no-op, an operator's own hold left alone, a pinned upgrade of a
// held package (released for the transaction, held again), drift, hold
// released by hold: false, and by pruning when the package leaves the
// state.
func TestAptHold(t *testing.T) {
	t.Parallel()
	root := debianRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian}
	p := newProvider(t, pkg.Config{})
	ledger := filepath.Join(root, pkg.HoldLedger)

	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.0", false)), pkgRes("hive-b", "", false)}, map[string]bool{"repo:x": true}, 2)
	if w := dpkgWant(t, root, "hive-a"); w != "hold" {
		t.Fatalf("hive-a selection %q, want hold", w)
	}
	if b, _ := os.ReadFile(ledger); !strings.HasSuffix(string(b), "\nhive-a\n") {
		t.Fatalf("ledger:\n%s", b)
	}
	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.0", false)), pkgRes("hive-b", "", false)}, nil, 0)

	// An operator's own hold is not hive's to release.
	convergetest.RunCmd(t, "chroot", root, "apt-mark", "hold", "hive-b")
	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.0", false)), pkgRes("hive-b", "", false)}, nil, 0)

	// A new pin on a held package: upgraded, held again.
	n := convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.1-1", false)), pkgRes("hive-b", "", false)}, nil, 1)
	_ = n
	if v, w := dpkgVersion(t, root, "hive-a"), dpkgWant(t, root, "hive-a"); v != "1.1-1" || w != "hold" {
		t.Fatalf("after the pinned upgrade hive-a is %s, %s", v, w)
	}

	// Drift: released by hand, held again.
	convergetest.RunCmd(t, "chroot", root, "apt-mark", "unhold", "hive-a")
	all, needed := convergetest.PlanOnly(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.1-1", false))}, nil)
	if len(needed) != 1 || all[0].Summary != "hold hive-a" {
		t.Fatalf("drift plan: %+v", all)
	}
	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.1-1", false))}, nil, 1)

	// hold: false releases hive's hold; the ledger goes.
	convergetest.Converge(t, p, env, []*hivev1.Resource{pkgRes("hive-a", "1.1-1", false), pkgRes("hive-b", "", false)}, nil, 1)
	if w := dpkgWant(t, root, "hive-a"); w != "install" {
		t.Fatalf("hive-a selection %q after hold: false", w)
	}
	if _, err := os.Stat(ledger); !os.IsNotExist(err) {
		t.Fatalf("ledger left: %v", err)
	}
	if w := dpkgWant(t, root, "hive-b"); w != "hold" {
		t.Fatalf("the operator's hold on hive-b was released: %q", w)
	}

	// Pruning: held, then the resource leaves the state.
	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.1-1", false))}, nil, 1)
	chs, err := p.Prune(context.Background(), env, nil)
	must(t, err)
	if len(chs) != 1 || chs[0].Key != "package:hive-a" || chs[0].Summary != "no longer managed: release hive's hold on hive-a" {
		t.Fatalf("prune: %+v", chs)
	}
	must(t, p.Apply(context.Background(), env, chs))
	if chs[0].Err != nil || dpkgWant(t, root, "hive-a") != "install" {
		t.Fatalf("prune: %v, selection %q", chs[0].Err, dpkgWant(t, root, "hive-a"))
	}
	if chs, err := p.Prune(context.Background(), env, nil); err != nil || len(chs) != 0 {
		t.Fatalf("second prune: %v %+v", err, chs)
	}
}

// TestDnfHoldCommands checks the RHEL side with recorded commands: dnf
// versionlock add, observed from the lock list; a package locked already
// stays the operator's (TestDnfHold drives the real plugin).
func TestDnfHoldCommands(t *testing.T) {
	root := t.TempDir()
	list := filepath.Join(root, pkg.VersionlockList)
	must(t, os.MkdirAll(filepath.Dir(list), 0o755))
	must(t, os.WriteFile(list, []byte("# locked by an operator\nkernel-0:5.14.0-362.el9.*\n"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "var/lib/rpm"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "var/lib/rpm/rpmdb.sqlite"), []byte("x"), 0o644))
	rec := &convergetest.Recorder{Reply: func(c converge.Cmd) (converge.Output, error) {
		switch {
		case c.Name == "rpm" && len(c.Args) > 0 && c.Args[0] == "--eval":
			return converge.Output{Stdout: []byte("/var/lib/rpm\n")}, nil
		case c.Name == "rpm":
			return converge.Output{Stdout: []byte("hive-a\t0:1.0-1\tx86_64\nkernel\t0:5.14.0-362.el9\tx86_64\n")}, nil
		case c.Name == "dnf" && strings.Contains(strings.Join(c.Args, " "), "versionlock add hive-a"):
			f, _ := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("hive-a-0:1.0-1.*\n")
			f.Close()
		}
		return converge.Output{}, nil
	}}
	env := &converge.Env{Root: root, Runner: rec, Family: converge.FamilyRHEL}
	p := newProvider(t, pkg.Config{})
	b := &converge.Batch{Items: []converge.Item{
		{Key: "package:hive-a", Resource: held(pkgRes("hive-a", "", false))},
		{Key: "package:kernel", Resource: held(pkgRes("kernel", "", false))},
	}}
	chs, err := p.Plan(context.Background(), env, b)
	must(t, err)
	for i, c := range chs {
		c.Key, c.Resource = b.Items[i].Key, b.Items[i].Resource
	}
	// Both installed; kernel is locked already (by an operator): nothing
	// to do, and it stays the operator's.
	if len(chs) != 2 || !chs[0].Needed || chs[0].Summary != "hold hive-a" || chs[1].Needed {
		t.Fatalf("plan: %q, %q", chs[0].Summary, chs[1].Summary)
	}
	chs = chs[:1]
	must(t, p.Apply(context.Background(), env, chs))
	for _, c := range chs {
		if c.Err != nil {
			t.Fatalf("%s: %v", c.Key, c.Err)
		}
	}
	var lock []string
	for _, l := range rec.Lines() {
		if strings.Contains(l, "versionlock") {
			lock = append(lock, l)
		}
	}
	if len(lock) != 1 || !strings.HasSuffix(lock[0], "versionlock add hive-a") {
		t.Fatalf("versionlock commands: %q", lock)
	}
	if b, _ := os.ReadFile(filepath.Join(root, pkg.HoldLedger)); !strings.HasSuffix(string(b), "\nhive-a\n") {
		t.Fatalf("ledger:\n%s", b)
	}
}

// TestDnfHold holds a package with the real dnf versionlock plugin
// (Debian's dnf-plugins-core) in an RPM root whose dnf configuration
// keeps the plugin's configuration and lock list inside the root: hold,
// no-op, a pinned upgrade of the held package (released and held again at
// the new version), release by hold: false.
func TestDnfHold(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/lib/python3/dist-packages/dnf-plugins/versionlock.py"); err != nil {
		testenv.Missing(t, "the dnf versionlock plugin (apt-get install dnf-plugins-core)")
	}
	hostList, _ := os.ReadFile(pkg.VersionlockList)
	t.Cleanup(func() {
		if b, _ := os.ReadFile(pkg.VersionlockList); string(b) != string(hostList) {
			t.Errorf("the host's %s changed", pkg.VersionlockList)
		}
	})
	root, args, _ := rpmRoot(t)
	plugins := filepath.Join(root, "etc", "dnf", "plugins")
	must(t, os.MkdirAll(plugins, 0o755))
	list := filepath.Join(root, pkg.VersionlockList)
	must(t, os.WriteFile(filepath.Join(plugins, "versionlock.conf"), []byte("[main]\nenabled=1\nlocklist="+list+"\n"), 0o644))
	must(t, os.WriteFile(list, nil, 0o644))
	conf := filepath.Join(root, "etc", "dnf", "dnf.conf")
	b, err := os.ReadFile(conf)
	must(t, err)
	must(t, os.WriteFile(conf, append(b, []byte("pluginconfpath="+plugins+"\n")...), 0o644))
	var dargs []string
	for _, a := range args {
		if a != "--noplugins" {
			dargs = append(dargs, a)
		}
	}
	dargs = append(dargs, "--disableplugin=*", "--enableplugin=versionlock")
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyRHEL}
	p := newProvider(t, pkg.Config{DnfArgs: dargs})
	locked := func() string {
		b, _ := os.ReadFile(list)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		return strings.Join(out, " ")
	}

	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.0", false))}, map[string]bool{"repo:x": true}, 1)
	if got := locked(); got != "hive-a-0:1.0-1.*" {
		t.Fatalf("lock list %q", got)
	}
	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1.0", false))}, nil, 0)
	convergetest.Converge(t, p, env, []*hivev1.Resource{held(pkgRes("hive-a", "1:1.1", false))}, nil, 1)
	if v, got := rpmVersion(t, root, "hive-a"), locked(); v != "1:1.1-1" || got != "hive-a-1:1.1-1.*" {
		t.Fatalf("after the pinned upgrade: %s, lock list %q", v, got)
	}
	convergetest.Converge(t, p, env, []*hivev1.Resource{pkgRes("hive-a", "1:1.1", false)}, nil, 1)
	if got := locked(); got != "" {
		t.Fatalf("lock list after hold: false: %q", got)
	}
}
