package users_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/users"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

const (
	key1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
	key2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7ZJw0t8E3j7YGQkQW7OyX5vkbIJJ3lT2NFh0P1ZCKq alice@desk"
	hash = "$6$hivesalt$Xq0vPj3v1K5m6m0yZr1m1Zl0bq0m7lH0xJ1m2YH7u5B6oM9k3yC3E9p9pXvH2rj6w0y6l9QZ8c2a2f8k1u4r/."
)

func group(g *hivev1.Group) *hivev1.Resource {
	return &hivev1.Resource{Key: "group:" + g.GetName(), Kind: &hivev1.Resource_Group{Group: g}}
}

func user(u *hivev1.User) *hivev1.Resource {
	return &hivev1.Resource{Key: "user:" + u.GetName(), Kind: &hivev1.Resource_User{User: u}}
}

func u32(v uint32) *uint32 { return &v }

// chroot runs a command inside root and returns its output.
func chroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("chroot %v: %v: %s", args, err, out)
	}
	return string(out)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func rootEnv(t *testing.T) *converge.Env {
	testenv.RequireTool(t, "useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel", "chpasswd", "chroot")
	root := debroot.CopyWith(t, "sudo")
	return &converge.Env{Root: root, Family: converge.FamilyDebian, Runner: converge.ExecRunner{},
		Secrets: map[string][]byte{"alice-pw": []byte(hash + "\n")}}
}

// TestAccountsTimeline converges a group with sudo rules and a user with
// keys, password and sudo rules into a real Debian root with the real
// tools, checks them with getent and sudo -l inside the root, puts drift
// back, and removes them.
func TestAccountsTimeline(t *testing.T) {
	env := rootEnv(t)
	root := env.Root
	admins := group(&hivev1.Group{Name: "admins", Gid: u32(2001), Sudo: []string{"ALL=(ALL:ALL) NOPASSWD: ALL"}})
	convergetest.Run(t, convergetest.Timeline{
		Provider: users.NewGroups(),
		Env:      env,
		Desired:  []*hivev1.Resource{admins},
		Check: func(t *testing.T) {
			if got := chroot(t, root, "getent", "group", "admins"); got != "admins:x:2001:\n" {
				t.Errorf("getent group admins = %q", got)
			}
			if got := readFile(t, filepath.Join(root, "etc/sudoers.d/hive-group-admins")); !strings.Contains(got, "%admins ALL=(ALL:ALL) NOPASSWD: ALL\n") {
				t.Errorf("drop-in:\n%s", got)
			}
		},
		Drift: func(t *testing.T) {
			chroot(t, root, "groupmod", "-g", "2002", "admins")
			if err := os.Remove(filepath.Join(root, "etc/sudoers.d/hive-group-admins")); err != nil {
				t.Fatal(err)
			}
		},
	})
	alice := &hivev1.User{Name: "alice", Uid: u32(3001), Groups: []string{"admins", "adm"}, Shell: "/bin/bash",
		Comment: "Alice", PasswordSecret: "alice-pw", ManageAuthorizedKeys: true, AuthorizedKeys: []string{key1},
		Sudo: []string{"ALL=(root) NOPASSWD: /usr/bin/true"}}
	keys := filepath.Join(root, "home/alice/.ssh/authorized_keys")
	convergetest.Run(t, convergetest.Timeline{
		Provider: users.NewUsers(),
		Env:      env,
		Desired:  []*hivev1.Resource{user(alice)},
		Check: func(t *testing.T) {
			if got := chroot(t, root, "getent", "passwd", "alice"); got != "alice:x:3001:3001:Alice:/home/alice:/bin/bash\n" {
				t.Errorf("getent passwd alice = %q", got)
			}
			if got := chroot(t, root, "id", "-nG", "alice"); got != "alice adm admins\n" {
				t.Errorf("id -nG alice = %q", got)
			}
			if got := chroot(t, root, "getent", "shadow", "alice"); !strings.HasPrefix(got, "alice:"+hash+":") {
				t.Errorf("shadow entry %q", got)
			}
			if got := readFile(t, keys); !strings.HasSuffix(got, "\n"+key1+"\n") || strings.Contains(got, key2) {
				t.Errorf("authorized_keys:\n%s", got)
			}
			fi, err := os.Stat(keys)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("authorized_keys mode: %v %v", fi.Mode(), err)
			}
			if got := chroot(t, root, "sudo", "-l", "-U", "alice"); !strings.Contains(got, "(root) NOPASSWD: /usr/bin/true") || !strings.Contains(got, "(ALL : ALL) NOPASSWD: ALL") {
				t.Errorf("sudo -l -U alice:\n%s", got)
			}
		},
		Drift: func(t *testing.T) {
			chroot(t, root, "usermod", "-s", "/bin/sh", "-G", "admins", "alice")
			if err := os.WriteFile(keys, []byte(key1+"\n"+key2+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			chroot(t, root, "usermod", "-p", "$6$other$x", "alice")
		},
		Removed: []*hivev1.Resource{user(&hivev1.User{Name: "alice", Absent: true})},
		CheckRemoved: func(t *testing.T) {
			if out, err := exec.Command("chroot", root, "getent", "passwd", "alice").CombinedOutput(); err == nil {
				t.Errorf("alice still exists: %s", out)
			}
			if _, err := os.Stat(filepath.Join(root, "home/alice")); err != nil {
				t.Errorf("home not kept: %v", err)
			}
			if _, err := os.Stat(filepath.Join(root, "etc/sudoers.d/hive-user-alice")); !os.IsNotExist(err) {
				t.Errorf("drop-in left: %v", err)
			}
		},
	})
}

// TestAccountsBadInput: every bad resource fails in Plan with a precise
// message and the root is left as it was.
func TestAccountsBadInput(t *testing.T) {
	env := rootEnv(t)
	for _, c := range []struct {
		name string
		p    converge.Provider
		r    *hivev1.Resource
		want string
	}{
		{"unknown group", users.NewUsers(), user(&hivev1.User{Name: "bob", Groups: []string{"wheel2"}}), `unknown group "wheel2"`},
		{"unknown primary group", users.NewUsers(), user(&hivev1.User{Name: "bob", Group: "nosuch"}), `unknown group "nosuch"`},
		{"uid taken", users.NewUsers(), user(&hivev1.User{Name: "bob", Uid: u32(0)}), "uid 0 is already used by user root"},
		{"gid taken", users.NewGroups(), group(&hivev1.Group{Name: "ops", Gid: u32(0)}), "gid 0 is already used by group root"},
		{"sudo syntax", users.NewUsers(), user(&hivev1.User{Name: "bob", Sudo: []string{"ALL=(ALL) BOGUS: ALL"}}), "sudo rules rejected by visudo"},
		{"missing secret", users.NewUsers(), user(&hivev1.User{Name: "bob", PasswordSecret: "nope"}), `password secret "nope" is not available`},
		{"primary group in use", users.NewGroups(), group(&hivev1.Group{Name: "root", Absent: true}), "it is the primary group of root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := convergetest.Tree(t, env.Root)
			b := &converge.Batch{Items: []converge.Item{{Key: c.r.GetKey(), Resource: c.r}}, Changed: map[string]bool{}}
			chs, err := c.p.Plan(context.Background(), env, b)
			if err != nil {
				t.Fatal(err)
			}
			if chs[0].Err == nil || !strings.Contains(chs[0].Err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", chs[0].Err, c.want)
			}
			if after := convergetest.Tree(t, env.Root); after != before {
				t.Fatalf("plan changed the root:\n%s", convergetest.FingerprintDiff(before, after))
			}
		})
	}
	// A group created earlier in the same run is known.
	b := &converge.Batch{Items: []converge.Item{{Key: "user:bob", Resource: user(&hivev1.User{Name: "bob", Groups: []string{"wheel2"}})}},
		Changed: map[string]bool{"group:wheel2": true}}
	chs, err := users.NewUsers().Plan(context.Background(), env, b)
	if err != nil || chs[0].Err != nil || !chs[0].Needed {
		t.Fatalf("user with a group planned in the run: %v %v", err, chs[0].Err)
	}
}

// TestAccountsPrune: what hive created and the state no longer has is
// deleted (home kept); an account hive did not create is never touched.
func TestAccountsPrune(t *testing.T) {
	env := rootEnv(t)
	root := env.Root
	chroot(t, root, "useradd", "-m", "local")
	up, gp := users.NewUsers(), users.NewGroups()
	convergetest.Converge(t, gp, env, []*hivev1.Resource{group(&hivev1.Group{Name: "ops", Sudo: []string{"ALL=(ALL) ALL"}})}, nil, 1)
	convergetest.Converge(t, up, env, []*hivev1.Resource{user(&hivev1.User{Name: "carol", Groups: []string{"ops"}, Sudo: []string{"ALL=(ALL) ALL"}})}, nil, 1)
	before := convergetest.Tree(t, root)
	uchs, err := up.Prune(context.Background(), env, nil)
	if err != nil {
		t.Fatal(err)
	}
	if after := convergetest.Tree(t, root); after != before {
		t.Fatalf("prune changed the root:\n%s", convergetest.FingerprintDiff(before, after))
	}
	if len(uchs) != 1 || uchs[0].Key != "user:carol" {
		t.Fatalf("prune: %s", convergetest.Describe(uchs))
	}
	if err := up.Apply(context.Background(), env, uchs); err != nil || uchs[0].Err != nil {
		t.Fatalf("apply prune: %v %v", err, uchs[0].Err)
	}
	gchs, err := gp.Prune(context.Background(), env, nil)
	if err != nil || len(gchs) != 1 || gchs[0].Key != "group:ops" {
		t.Fatalf("group prune: %v %s", err, convergetest.Describe(gchs))
	}
	if err := gp.Apply(context.Background(), env, gchs); err != nil || gchs[0].Err != nil {
		t.Fatalf("apply group prune: %v %v", err, gchs[0].Err)
	}
	for _, q := range [][]string{{"passwd", "carol"}, {"group", "ops"}} {
		if out, err := exec.Command("chroot", append([]string{root, "getent"}, q...)...).CombinedOutput(); err == nil {
			t.Errorf("%v still there: %s", q, out)
		}
	}
	chroot(t, root, "getent", "passwd", "local")
	if _, err := os.Stat(filepath.Join(root, "home/carol")); err != nil {
		t.Errorf("home not kept: %v", err)
	}
	for _, f := range []string{"hive-user-carol", "hive-group-ops"} {
		if _, err := os.Stat(filepath.Join(root, "etc/sudoers.d", f)); !os.IsNotExist(err) {
			t.Errorf("%s left: %v", f, err)
		}
	}
	if chs, _ := up.Prune(context.Background(), env, nil); len(chs) != 0 {
		t.Errorf("second prune: %s", convergetest.Describe(chs))
	}
}
