package file_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/file"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func res(f *hivev1.File) *hivev1.Resource {
	return &hivev1.Resource{Key: "file:" + f.GetPath(), Kind: &hivev1.Resource_File{File: f}}
}

func newEnv(t testing.TB) *converge.Env {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\nwww:x:33:\nadm:x:4:\n"), 0o644))
	return &converge.Env{
		Root: root,
		Facts: &hivev1.NodeFacts{Name: "web1", Labels: map[string]string{"dc": "fra"}, Addresses: []string{"10.0.0.5"}, Roles: []string{"web"},
			Peers: map[string]*hivev1.PeerList{"web": {Peers: []*hivev1.Peer{{Name: "web1", Address: "10.0.0.5"}, {Name: "web2", Address: "10.0.0.6"}}}}},
		Secrets: map[string][]byte{"dbpass": []byte("s3cr3t-pw")},
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func stat(t *testing.T, p string) (os.FileMode, uint32, uint32) {
	t.Helper()
	fi, err := os.Lstat(p)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), st.Uid, st.Gid
}

func TestTimeline(t *testing.T) {
	env := newEnv(t)
	root := env.Root
	tmpl := "name={{.Name}} dc={{.Labels.dc}} peers={{range .Peers.web}}{{.Name}}@{{.Address}} {{end}}\npassword={{secret \"dbpass\"}}\n"
	desired := []*hivev1.Resource{
		res(&hivev1.File{Path: "/etc/app", State: hivev1.FileState_FILE_STATE_DIRECTORY, Mode: 0o750, Group: "www"}),
		res(&hivev1.File{Path: "/etc/app/app.conf", Content: tmpl, Template: true, Mode: 0o640, Owner: "www", Group: "adm"}),
		res(&hivev1.File{Path: "/etc/motd", Content: "hello\n"}),
	}
	wantConf := "name=web1 dc=fra peers=web1@10.0.0.5 web2@10.0.0.6 \npassword=s3cr3t-pw\n"
	convergetest.Run(t, convergetest.Timeline{
		Provider: file.New(),
		Env:      env,
		Desired:  desired,
		Check: func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, "etc/app/app.conf"))
			must(t, err)
			if string(b) != wantConf {
				t.Errorf("app.conf = %q", b)
			}
			if m, u, g := stat(t, filepath.Join(root, "etc/app/app.conf")); m.Perm() != 0o640 || u != 33 || g != 4 {
				t.Errorf("app.conf mode %v owner %d:%d", m, u, g)
			}
			if m, _, g := stat(t, filepath.Join(root, "etc/app")); !m.IsDir() || m.Perm() != 0o750 || g != 33 {
				t.Errorf("dir mode %v group %d", m, g)
			}
			if b, _ := os.ReadFile(filepath.Join(root, "etc/motd")); string(b) != "hello\n" {
				t.Errorf("motd %q", b)
			}
			ents, _ := os.ReadDir(filepath.Join(root, "etc/app"))
			if len(ents) != 1 {
				t.Errorf("stale files in dir: %v", ents)
			}
		},
		Drift: func(t *testing.T) {
			must(t, os.WriteFile(filepath.Join(root, "etc/app/app.conf"), []byte("edited\n"), 0o600))
			must(t, os.Chmod(filepath.Join(root, "etc/app"), 0o777))
			must(t, os.Remove(filepath.Join(root, "etc/motd")))
		},
		Removed: []*hivev1.Resource{
			res(&hivev1.File{Path: "/etc/app", State: hivev1.FileState_FILE_STATE_ABSENT}),
			res(&hivev1.File{Path: "/etc/motd", State: hivev1.FileState_FILE_STATE_ABSENT}),
		},
		CheckRemoved: func(t *testing.T) {
			for _, p := range []string{"etc/app", "etc/motd"} {
				if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
					t.Errorf("%s still there: %v", p, err)
				}
			}
		},
	})
}

func plan(t *testing.T, env *converge.Env, fs ...*hivev1.File) []*converge.Change {
	t.Helper()
	b := &converge.Batch{}
	for _, f := range fs {
		r := res(f)
		b.Items = append(b.Items, converge.Item{Key: r.Key, Resource: r})
	}
	chs, err := file.New().Plan(context.Background(), env, b)
	must(t, err)
	for i, c := range chs {
		c.Key, c.Resource = b.Items[i].Key, b.Items[i].Resource
	}
	return chs
}

func TestSecretsNeverInPlan(t *testing.T) {
	env := newEnv(t)
	p := filepath.Join(env.Root, "etc", "db.conf")
	must(t, os.WriteFile(p, []byte("user=app\npassword=old-secret-1\n"), 0o600))
	env.Secrets["old"] = []byte("old-secret-1")
	f := &hivev1.File{Path: "/etc/db.conf", Content: "user=app\npassword={{secret \"dbpass\"}}\n", Template: true, Mode: 0o600}
	c := plan(t, env, f)[0]
	if !c.Needed {
		t.Fatal("not needed")
	}
	for _, s := range []string{c.Summary, c.Diff} {
		if strings.Contains(s, "s3cr3t-pw") || strings.Contains(s, "old-secret-1") {
			t.Fatalf("secret leaked into plan: %q", s)
		}
	}
	if !strings.Contains(c.Diff, "+password=<secret:dbpass>") || !strings.Contains(c.Diff, "-password=<secret:old>") {
		t.Errorf("diff:\n%s", c.Diff)
	}
	// Only the secret value differs: still a change, described as masked.
	must(t, os.WriteFile(p, []byte("user=app\npassword=old-secret-1\n"), 0o600))
	env.Secrets["dbpass"] = []byte("old-secret-2")
	delete(env.Secrets, "old")
	env.Secrets["old"] = []byte("old-secret-1")
	c = plan(t, env, f)[0]
	if !c.Needed || strings.Contains(c.Diff, "old-secret") {
		t.Errorf("masked change: needed=%v diff=%q", c.Needed, c.Diff)
	}
	// Unknown secret: precise failure, no value.
	f2 := &hivev1.File{Path: "/etc/x", Content: `{{secret "nope"}}`, Template: true}
	if c := plan(t, env, f2)[0]; c.Err == nil || !strings.Contains(c.Err.Error(), `secret "nope"`) {
		t.Errorf("unknown secret: %v", c.Err)
	}
}

func TestUnifiedDiff(t *testing.T) {
	env := newEnv(t)
	must(t, os.WriteFile(filepath.Join(env.Root, "etc", "a.conf"), []byte("one\ntwo\nthree\n"), 0o644))
	c := plan(t, env, &hivev1.File{Path: "/etc/a.conf", Content: "one\nTWO\nthree\n"})[0]
	want := "--- /etc/a.conf\n+++ /etc/a.conf\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
	if c.Diff != want {
		t.Errorf("diff:\n%s\nwant:\n%s", c.Diff, want)
	}
	c = plan(t, env, &hivev1.File{Path: "/etc/new.conf", Content: "x\n"})[0]
	if !strings.HasPrefix(c.Diff, "--- /dev/null\n+++ /etc/new.conf\n") {
		t.Errorf("create diff:\n%s", c.Diff)
	}
	c = plan(t, env, &hivev1.File{Path: "/etc/bin", Content: "\x00\x01"})[0]
	if !strings.Contains(c.Diff, "binary") {
		t.Errorf("binary diff: %q", c.Diff)
	}
}

func TestConfinedToRoot(t *testing.T) {
	env := newEnv(t)
	outside := t.TempDir()
	// A symlinked directory pointing outside the root is resolved inside it.
	must(t, os.Symlink(outside, filepath.Join(env.Root, "etc", "evil")))
	// A relative link that climbs out is rejected.
	must(t, os.Symlink("../../../../../../..", filepath.Join(env.Root, "etc", "up")))
	chs := plan(t, env,
		&hivev1.File{Path: "/etc/up/x", Content: "x"},
		&hivev1.File{Path: "/etc/evil/x", Content: "x"},
	)
	if !errors.Is(chs[0].Err, converge.ErrPathEscape) {
		t.Errorf("climbing link: %v", chs[0].Err)
	}
	if chs[1].Err != nil {
		t.Fatalf("absolute link: %v", chs[1].Err)
	}
	must(t, file.New().Apply(context.Background(), env, chs[1:]))
	if _, err := os.Stat(filepath.Join(outside, "x")); !os.IsNotExist(err) {
		t.Fatal("wrote outside the root through a symlink")
	}
	if _, err := os.Stat(filepath.Join(env.Root, outside, "x")); err != nil {
		t.Fatalf("not written inside the root: %v", err)
	}
	// Validation rejects relative and dotted paths.
	for _, p := range []string{"etc/x", "/etc/../x", "/"} {
		if err := file.New().Validate(res(&hivev1.File{Path: p})); !errors.Is(err, converge.ErrInvalid) {
			t.Errorf("validate %q: %v", p, err)
		}
	}
}

func TestSymlinkAtTargetIsReplaced(t *testing.T) {
	env := newEnv(t)
	victim := filepath.Join(env.Root, "etc", "passwd")
	before, _ := os.ReadFile(victim)
	must(t, os.Symlink("/etc/passwd", filepath.Join(env.Root, "etc", "link")))
	chs := plan(t, env, &hivev1.File{Path: "/etc/link", Content: "mine\n"})
	must(t, file.New().Apply(context.Background(), env, chs))
	if after, _ := os.ReadFile(victim); string(after) != string(before) {
		t.Fatal("wrote through the symlink")
	}
	if m, _, _ := stat(t, filepath.Join(env.Root, "etc", "link")); !m.IsRegular() {
		t.Errorf("link not replaced: %v", m)
	}
}

func TestBadInput(t *testing.T) {
	env := newEnv(t)
	must(t, os.MkdirAll(filepath.Join(env.Root, "etc", "d"), 0o755))
	chs := plan(t, env,
		&hivev1.File{Path: "/etc/d", Content: "x"},
		&hivev1.File{Path: "/etc/y", Owner: "nobody-here"},
		&hivev1.File{Path: "/etc/z", Content: "{{.Nope}}", Template: true},
	)
	for i, want := range []string{"is a directory", `user "nobody-here" not found`, "render template"} {
		if chs[i].Err == nil || !strings.Contains(chs[i].Err.Error(), want) {
			t.Errorf("%d: err %v, want %q", i, chs[i].Err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(env.Root, "etc", "y")); !os.IsNotExist(err) {
		t.Error("failed plan created a file")
	}
}

func BenchmarkNoopFiles(b *testing.B) {
	env := newEnv(b)
	reg, _ := converge.NewRegistry(file.New())
	eng, err := converge.New(converge.Config{Root: env.Root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian,
		Logger: slog.New(slog.DiscardHandler)}, reg)
	must(b, err)
	st := &hivev1.NodeState{Facts: env.Facts, Secrets: env.Secrets}
	for i := range 100 {
		st.Resources = append(st.Resources, res(&hivev1.File{Path: fmt.Sprintf("/etc/bench/f%03d.conf", i),
			Content: strings.Repeat("line of config\n", 40), Mode: 0o644}))
	}
	ctx := context.Background()
	if _, err := eng.Run(ctx, st, converge.RunOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := eng.Run(ctx, st, converge.RunOptions{})
		if err != nil || rep.Count(hivev1.Outcome_OUTCOME_OK) != 100 {
			b.Fatalf("not a no-op: %v", err)
		}
	}
}

func TestShortSecretHidesDiff(t *testing.T) {
	env := newEnv(t)
	env.Secrets["pin"] = []byte("1234")
	c := plan(t, env, &hivev1.File{Path: "/etc/pin", Content: `pin={{ secret "pin" }}` + "\n", Template: true, Secrets: []string{"pin"}})[0]
	if strings.Contains(c.Diff, "1234") || !strings.Contains(c.Diff, "diff hidden") {
		t.Errorf("diff %q", c.Diff)
	}
}

func TestSandboxRootWithoutAccounts(t *testing.T) {
	env := &converge.Env{Root: t.TempDir()}
	c := plan(t, env, &hivev1.File{Path: "/etc/x", Content: "x", Owner: "nobody", Group: "root"})[0]
	if c.Err != nil || !c.Needed {
		t.Fatalf("owner from the host's accounts: %v", c.Err)
	}
}
