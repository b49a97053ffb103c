package sysbase_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/sysbase"
	"github.com/hivefleet/hive/internal/debroot"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func chroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %v: %v: %s", args, err, out)
	}
	return string(out)
}

func debEnv(t *testing.T) *converge.Env {
	root := debroot.Copy(t)
	return &converge.Env{Root: root, Family: converge.FamilyDebian, Runner: converge.ExecRunner{},
		Facts: &hivev1.NodeFacts{Name: "web1"}}
}

func tz(name string) *hivev1.Resource {
	return &hivev1.Resource{Key: "timezone:system", Kind: &hivev1.Resource_Timezone{Timezone: &hivev1.Timezone{Name: name}}}
}

// TestTimezoneTimeline: date(1) in the root reports the zone; drift of
// the link and of /etc/timezone is put back.
func TestTimezoneTimeline(t *testing.T) {
	env := debEnv(t)
	root := env.Root
	convergetest.Run(t, convergetest.Timeline{
		Provider: sysbase.Timezone(),
		Env:      env,
		Desired:  []*hivev1.Resource{tz("Europe/Paris")},
		Check: func(t *testing.T) {
			if got := chroot(t, root, "date", "-d", "2026-07-01 12:00", "+%Z"); got != "CEST\n" {
				t.Errorf("date +%%Z = %q", got)
			}
			if b, _ := os.ReadFile(filepath.Join(root, "etc/timezone")); string(b) != "Europe/Paris\n" {
				t.Errorf("/etc/timezone = %q", b)
			}
		},
		Drift: func(t *testing.T) {
			lt := filepath.Join(root, "etc/localtime")
			os.Remove(lt)
			if err := os.Symlink("/usr/share/zoneinfo/Asia/Tokyo", lt); err != nil {
				t.Fatal(err)
			}
		},
	})
}

func TestHostnameAndLocaleTimeline(t *testing.T) {
	env := debEnv(t)
	root := env.Root
	convergetest.Run(t, convergetest.Timeline{
		Provider: sysbase.Hostname(),
		Env:      env,
		Desired:  []*hivev1.Resource{{Key: "hostname:node", Kind: &hivev1.Resource_Hostname{Hostname: &hivev1.Hostname{}}}},
		Check: func(t *testing.T) {
			if b, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(b) != "web1\n" {
				t.Errorf("/etc/hostname = %q", b)
			}
		},
		Drift: func(t *testing.T) { os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("other\n"), 0o644) },
	})
	loc := &hivev1.Resource{Key: "locale:system", Kind: &hivev1.Resource_Locale{Locale: &hivev1.Locale{Lang: "C.UTF-8", Variables: map[string]string{"LC_TIME": "C.UTF-8"}}}}
	convergetest.Run(t, convergetest.Timeline{
		Provider: sysbase.Locale(),
		Env:      env,
		Desired:  []*hivev1.Resource{loc},
		Check: func(t *testing.T) {
			if got := chroot(t, root, "sh", "-c", ". /etc/default/locale && echo $LANG $LC_TIME"); got != "C.UTF-8 C.UTF-8\n" {
				t.Errorf("locale file gives %q", got)
			}
		},
		Drift: func(t *testing.T) {
			os.WriteFile(filepath.Join(root, "etc/default/locale"), []byte("LANG=fr_FR.UTF-8\n"), 0o644)
		},
	})
}

// TestRHELLocalePath: the RHEL family gets /etc/locale.conf and no
// /etc/timezone.
func TestRHELLocalePath(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/share/zoneinfo"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/share/zoneinfo/UTC"), []byte("TZif2"), 0o644)
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	env := &converge.Env{Root: root, Family: converge.FamilyRHEL}
	loc := &hivev1.Resource{Key: "locale:system", Kind: &hivev1.Resource_Locale{Locale: &hivev1.Locale{Lang: "en_US.UTF-8"}}}
	convergetest.Converge(t, sysbase.Locale(), env, []*hivev1.Resource{loc}, nil, 1)
	convergetest.Converge(t, sysbase.Timezone(), env, []*hivev1.Resource{tz("UTC")}, nil, 1)
	if b, _ := os.ReadFile(filepath.Join(root, "etc/locale.conf")); !strings.Contains(string(b), "\nLANG=en_US.UTF-8\n") {
		t.Errorf("locale.conf = %q", b)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/timezone")); !os.IsNotExist(err) {
		t.Errorf("/etc/timezone written on RHEL: %v", err)
	}
	if l, _ := os.Readlink(filepath.Join(root, "etc/localtime")); l != "/usr/share/zoneinfo/UTC" {
		t.Errorf("localtime → %q", l)
	}
}

// TestBadInput: precise errors, nothing written.
func TestBadInput(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	for _, c := range []struct {
		name string
		p    converge.Provider
		env  *converge.Env
		r    *hivev1.Resource
		want string
	}{
		{"unknown zone", sysbase.Timezone(), &converge.Env{Root: root, Family: converge.FamilyDebian}, tz("Mars/Olympus"), `unknown time zone "Mars/Olympus": no /usr/share/zoneinfo/Mars/Olympus in the root`},
		{"node name not a host name", sysbase.Hostname(), &converge.Env{Root: root, Facts: &hivev1.NodeFacts{Name: "web_1"}},
			&hivev1.Resource{Key: "hostname:node", Kind: &hivev1.Resource_Hostname{Hostname: &hivev1.Hostname{}}}, "the node's name cannot be the host name"},
		{"locale without family", sysbase.Locale(), &converge.Env{Root: root},
			&hivev1.Resource{Key: "locale:system", Kind: &hivev1.Resource_Locale{Locale: &hivev1.Locale{Lang: "C.UTF-8"}}}, `unknown os family ""`},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := convergetest.Tree(t, root)
			chs, err := c.p.Plan(context.Background(), c.env, &converge.Batch{Items: []converge.Item{{Key: c.r.GetKey(), Resource: c.r}}})
			if err != nil {
				t.Fatal(err)
			}
			if chs[0].Err == nil || !strings.Contains(chs[0].Err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", chs[0].Err, c.want)
			}
			if after := convergetest.Tree(t, root); after != before {
				t.Fatal("plan changed the root")
			}
		})
	}
	if err := sysbase.Timezone().(converge.Validator).Validate(tz("../etc/passwd")); err == nil {
		t.Error("zone with .. accepted")
	}
}
