package pkg_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/pkg"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func pkgRes(name, version string, absent bool) *hivev1.Resource {
	st := hivev1.PackageState_PACKAGE_STATE_PRESENT
	if absent {
		st = hivev1.PackageState_PACKAGE_STATE_ABSENT
	}
	return &hivev1.Resource{Key: "package:" + name, Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: name, Version: version, State: st}}}
}

// debianRoot is a private debootstrap root with a signed local APT
// repository at file:/srv/hive-repo holding hive-a 1.0-1 and 1.1-1 and
// hive-b 2.0-1, configured but not yet fetched (apt-get update not run).
func debianRoot(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "chroot", "dpkg-deb", "apt-ftparchive", "gpg")
	root := debroot.Copy(t)
	debs := t.TempDir()
	var files []string
	for _, d := range []convergetest.Deb{
		{Name: "hive-a", Version: "1.0-1", Files: map[string]string{"/usr/share/hive-a/v": "1.0\n"}},
		{Name: "hive-a", Version: "1.1-1", Files: map[string]string{"/usr/share/hive-a/v": "1.1\n"}},
		{Name: "hive-b", Version: "2.0-1", Files: map[string]string{"/etc/hive-b/b.conf": "b=1\n"}},
	} {
		files = append(files, convergetest.BuildDeb(t, debs, d))
	}
	key := convergetest.NewGPGKey(t)
	convergetest.AptRepo(t, filepath.Join(root, "srv", "hive-repo"), key, files...)
	must(t, os.Remove(filepath.Join(root, "etc", "apt", "sources.list")))
	must(t, os.MkdirAll(filepath.Join(root, "etc", "apt", "keyrings"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc", "apt", "keyrings", "hive-test.asc"), []byte(key.Public), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "apt", "sources.list.d", "hive-test.sources"), []byte(
		"Types: deb\nURIs: file:/srv/hive-repo\nSuites: stable\nComponents: main\nSigned-By: /etc/apt/keyrings/hive-test.asc\n"), 0o644))
	return root
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// dpkgVersion asks dpkg itself inside the root; "" when not installed.
func dpkgVersion(t *testing.T, root, name string) string {
	t.Helper()
	out, err := exec.Command("chroot", root, "dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", name).Output()
	if err != nil {
		return ""
	}
	st, v, _ := strings.Cut(string(out), " ")
	if st != "installed" {
		return ""
	}
	return v
}

func newProvider(t testing.TB, cfg pkg.Config) *pkg.Provider {
	t.Helper()
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = 10 * time.Second
	}
	p, err := pkg.New(cfg)
	must(t, err)
	return p
}

func TestAptTimeline(t *testing.T) {
	t.Parallel()
	root := debianRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian}
	convergetest.Run(t, convergetest.Timeline{
		Provider: newProvider(t, pkg.Config{}),
		Env:      env,
		Desired:  []*hivev1.Resource{pkgRes("hive-a", "1.0", false), pkgRes("hive-b", "", false)},
		Check: func(t *testing.T) {
			if v := dpkgVersion(t, root, "hive-a"); v != "1.0-1" {
				t.Errorf("hive-a version %q, want 1.0-1", v)
			}
			if v := dpkgVersion(t, root, "hive-b"); v != "2.0-1" {
				t.Errorf("hive-b version %q", v)
			}
		},
		Drift: func(t *testing.T) {
			convergetest.RunCmd(t, "chroot", root, "dpkg", "--remove", "hive-b")
		},
		Removed: []*hivev1.Resource{pkgRes("hive-a", "", true), pkgRes("hive-b", "", true)},
		CheckRemoved: func(t *testing.T) {
			for _, n := range []string{"hive-a", "hive-b"} {
				if v := dpkgVersion(t, root, n); v != "" {
					t.Errorf("%s still installed: %s", n, v)
				}
			}
		},
	})
}

func plan(t *testing.T, p *pkg.Provider, env *converge.Env, rs ...*hivev1.Resource) []*converge.Change {
	t.Helper()
	all, needed := convergetest.PlanOnly(t, p, env, rs, nil)
	_ = all
	return needed
}

func TestAptPinsAndBadInput(t *testing.T) {
	t.Parallel()
	root := debianRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian}
	p := newProvider(t, pkg.Config{LockTimeout: time.Second, PollInterval: 100 * time.Millisecond})
	ctx := context.Background()

	// A nonexistent package and a missing pinned version fail alone; the
	// rest of the batch installs in one transaction.
	chs := plan(t, p, env, pkgRes("hive-a", "1.0", false), pkgRes("no-such-pkg", "", false), pkgRes("hive-b", "9.9", false))
	must(t, p.Apply(ctx, env, chs))
	if chs[0].Err != nil || dpkgVersion(t, root, "hive-a") != "1.0-1" {
		t.Fatalf("hive-a: %v", chs[0].Err)
	}
	if !errors.Is(chs[1].Err, pkg.ErrNotFound) || !strings.Contains(chs[1].Err.Error(), "no-such-pkg") {
		t.Errorf("nonexistent: %v", chs[1].Err)
	}
	if !errors.Is(chs[2].Err, pkg.ErrNotFound) || !strings.Contains(chs[2].Err.Error(), "available: 2.0-1") {
		t.Errorf("missing version: %v", chs[2].Err)
	}
	if dpkgVersion(t, root, "hive-b") != "" {
		t.Error("hive-b installed despite the pin")
	}

	// Pin upgrade and the summary.
	chs = plan(t, p, env, pkgRes("hive-a", "1.1-1", false))
	if len(chs) != 1 || chs[0].Summary != "upgrade hive-a 1.0-1 → 1.1-1" {
		t.Fatalf("plan: %+v", chs)
	}
	must(t, p.Apply(ctx, env, chs))
	if chs[0].Err != nil || dpkgVersion(t, root, "hive-a") != "1.1-1" {
		t.Fatalf("upgrade: %v", chs[0].Err)
	}

	// Locked database: precise failure, nothing changed.
	holdLock(t, filepath.Join(root, "var", "lib", "dpkg", "lock-frontend"))
	chs = plan(t, p, env, pkgRes("hive-b", "", false))
	err := p.Apply(ctx, env, chs)
	if !errors.Is(err, pkg.ErrLocked) || !strings.Contains(err.Error(), "lock-frontend held by pid") {
		t.Fatalf("locked: %v", err)
	}
	if dpkgVersion(t, root, "hive-b") != "" {
		t.Error("installed while locked")
	}
}

func TestAptBrokenRepos(t *testing.T) {
	t.Parallel()
	root := debianRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian}
	p := newProvider(t, pkg.Config{})
	ctx := context.Background()
	before := convergetest.Tree(t, filepath.Join(root, "var", "lib", "dpkg"))

	// A key that did not sign the repository.
	other := convergetest.NewGPGKey(t)
	must(t, os.WriteFile(filepath.Join(root, "etc", "apt", "keyrings", "hive-test.asc"), []byte(other.Public), 0o644))
	chs := plan(t, p, env, pkgRes("hive-b", "", false))
	err := p.Apply(ctx, env, chs)
	if err == nil || !strings.Contains(err.Error(), "refresh package metadata") || !strings.Contains(err.Error(), "NO_PUBKEY") {
		t.Errorf("broken key: %v", err)
	}
	// A repository that is down.
	must(t, os.WriteFile(filepath.Join(root, "etc", "apt", "sources.list.d", "hive-test.sources"), []byte(
		"Types: deb\nURIs: file:/srv/nowhere\nSuites: stable\nComponents: main\nTrusted: yes\n"), 0o644))
	chs = plan(t, p, env, pkgRes("hive-b", "", false))
	err = p.Apply(ctx, env, chs)
	if err == nil || !strings.Contains(err.Error(), "refresh package metadata") {
		t.Errorf("repo down: %v", err)
	}
	if after := convergetest.Tree(t, filepath.Join(root, "var", "lib", "dpkg")); after != before {
		t.Errorf("dpkg database changed:\n%s", convergetest.FingerprintDiff(before, after))
	}
}

// holdLock holds an fcntl write lock on p from a child process (fcntl locks
// of this process would not conflict with its own queries) until the test
// ends.
func holdLock(t *testing.T, p string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=TestHelperHoldLock")
	cmd.Env = append(os.Environ(), "HIVE_HOLD_LOCK="+p)
	stdout, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck
	buf := make([]byte, 6)
	if _, err := stdout.Read(buf); err != nil || string(buf[:6]) != "locked" {
		t.Fatalf("lock helper: %q %v", buf, err)
	}
}
