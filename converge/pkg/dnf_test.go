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
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// rpmRoot is an empty RPM root (an os-release saying Rocky) with a local
// yum repository of hive-a 1.0-1 and 1.1-1 (epoch 1) and hive-b 2.0-1, and
// the dnf arguments that keep dnf inside it.
func rpmRoot(t *testing.T) (root string, dnfArgs []string, repoDir string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "rpm", "dnf", "createrepo_c")
	root = t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc", "yum.repos.d"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc", "os-release"), []byte("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n"), 0o644))
	repoDir = filepath.Join(t.TempDir(), "repo")
	for _, r := range []convergetest.RPM{
		{Name: "hive-a", Version: "1.0", Release: "1", Files: map[string]string{"/usr/share/hive-a/v": "1.0\n"}},
		{Name: "hive-a", Version: "1.1", Release: "1", Epoch: 1, Files: map[string]string{"/usr/share/hive-a/v": "1.1\n"}},
		{Name: "hive-b", Version: "2.0", Release: "1", Files: map[string]string{"/etc/hive-b/b.conf": "b=1\n"}},
		// Cannot be removed: its pre-uninstall scriptlet fails.
		{Name: "hive-stuck", Version: "1.0", Release: "1", Preun: "exit 1", Files: map[string]string{"/usr/share/hive-stuck/x": "x\n"}},
	} {
		convergetest.BuildRPM(t, repoDir, r)
	}
	convergetest.YumRepo(t, repoDir)
	must(t, os.WriteFile(filepath.Join(root, "etc", "yum.repos.d", "hive-test.repo"), []byte(
		"[hive-test]\nname=hive test\nbaseurl=file://"+repoDir+"\nenabled=1\ngpgcheck=0\n"), 0o644))
	return root, convergetest.DnfConfig(t, root), repoDir
}

// rpmVersion asks rpm itself; "" when not installed.
func rpmVersion(t *testing.T, root, name string) string {
	t.Helper()
	out, err := exec.Command("rpm", "--root", root, "-q", "--qf", "%{EPOCHNUM}:%{VERSION}-%{RELEASE}", name).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func TestDnfTimeline(t *testing.T) {
	t.Parallel()
	root, args, _ := rpmRoot(t)
	fam, err := converge.DetectFamily(root)
	if err != nil || fam != converge.FamilyRHEL {
		t.Fatalf("family %q %v", fam, err)
	}
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: fam}
	convergetest.Run(t, convergetest.Timeline{
		Provider: newProvider(t, pkg.Config{DnfArgs: args}),
		Env:      env,
		Desired:  []*hivev1.Resource{pkgRes("hive-a", "1.0", false), pkgRes("hive-b", "", false)},
		Check: func(t *testing.T) {
			if v := rpmVersion(t, root, "hive-a"); v != "0:1.0-1" {
				t.Errorf("hive-a version %q", v)
			}
			if v := rpmVersion(t, root, "hive-b"); v != "0:2.0-1" {
				t.Errorf("hive-b version %q", v)
			}
		},
		Drift: func(t *testing.T) {
			convergetest.RunCmd(t, "rpm", "--root", root, "-e", "hive-b")
		},
		Removed: []*hivev1.Resource{pkgRes("hive-a", "", true), pkgRes("hive-b", "", true)},
		CheckRemoved: func(t *testing.T) {
			for _, n := range []string{"hive-a", "hive-b"} {
				if v := rpmVersion(t, root, n); v != "" {
					t.Errorf("%s still installed: %s", n, v)
				}
			}
		},
	})
}

func TestDnfPinsAndBadInput(t *testing.T) {
	t.Parallel()
	root, args, _ := rpmRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyRHEL}
	p := newProvider(t, pkg.Config{DnfArgs: args, LockTimeout: time.Second, PollInterval: 100 * time.Millisecond})
	ctx := context.Background()

	chs := plan(t, p, env, pkgRes("hive-a", "1:1.1", false), pkgRes("no-such-pkg", "", false), pkgRes("hive-b", "9.9", false))
	must(t, p.Apply(ctx, env, chs))
	if chs[0].Err != nil || rpmVersion(t, root, "hive-a") != "1:1.1-1" {
		t.Fatalf("hive-a with epoch: %v (%s)", chs[0].Err, rpmVersion(t, root, "hive-a"))
	}
	if !errors.Is(chs[1].Err, pkg.ErrNotFound) {
		t.Errorf("nonexistent: %v", chs[1].Err)
	}
	if !errors.Is(chs[2].Err, pkg.ErrNotFound) || !strings.Contains(chs[2].Err.Error(), "available: 0:2.0-1") {
		t.Errorf("missing version: %v", chs[2].Err)
	}
	if rpmVersion(t, root, "hive-b") != "" {
		t.Error("hive-b installed despite the pin")
	}
	// Locked database.
	dbpath := strings.TrimSpace(convergetest.RunCmd(t, "rpm", "--eval", "%{_dbpath}"))
	holdLock(t, filepath.Join(root, dbpath, ".rpm.lock"))
	chs = plan(t, p, env, pkgRes("hive-b", "", false))
	if err := p.Apply(ctx, env, chs); !errors.Is(err, pkg.ErrLocked) {
		t.Fatalf("locked: %v", err)
	}
	if rpmVersion(t, root, "hive-b") != "" {
		t.Error("installed while locked")
	}
}

func TestDnfRepoDown(t *testing.T) {
	t.Parallel()
	root, args, repoDir := rpmRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyRHEL}
	p := newProvider(t, pkg.Config{DnfArgs: args})
	must(t, os.RemoveAll(repoDir))
	chs := plan(t, p, env, pkgRes("hive-b", "", false))
	err := p.Apply(context.Background(), env, chs)
	if err == nil || !strings.Contains(err.Error(), "refresh package metadata") {
		t.Fatalf("repo down: %v", err)
	}
	if rpmVersion(t, root, "hive-b") != "" {
		t.Error("installed from a broken repo")
	}
}

// TestDnfPartialFailure: an install and a removal in one dnf transaction
// (dnf shell); when the removal's scriptlet fails, rpm still installs the
// other package, and only the removal fails, with dnf's message.
func TestDnfPartialFailure(t *testing.T) {
	t.Parallel()
	root, args, _ := rpmRoot(t)
	env := &converge.Env{Root: root, Runner: converge.ExecRunner{}, Family: converge.FamilyRHEL}
	p := newProvider(t, pkg.Config{DnfArgs: args})
	ctx := context.Background()
	chs := plan(t, p, env, pkgRes("hive-stuck", "", false))
	must(t, p.Apply(ctx, env, chs))
	if chs[0].Err != nil {
		t.Fatal(chs[0].Err)
	}
	chs = plan(t, p, env, pkgRes("hive-b", "", false), pkgRes("hive-stuck", "", true))
	must(t, p.Apply(ctx, env, chs))
	if chs[0].Err != nil || rpmVersion(t, root, "hive-b") != "0:2.0-1" {
		t.Errorf("hive-b: %v", chs[0].Err)
	}
	if chs[1].Err == nil || !strings.Contains(chs[1].Err.Error(), "PREUN") || rpmVersion(t, root, "hive-stuck") == "" {
		t.Errorf("hive-stuck: err %v, version %q", chs[1].Err, rpmVersion(t, root, "hive-stuck"))
	}
	t.Logf("removal failure: %v", chs[1].Err)
}
