package hosts_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/hosts"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

const base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# operator's line\n10.9.9.9\tlegacy\n"

func res(entries ...*hivev1.Hosts_Entry) *hivev1.Resource {
	return &hivev1.Resource{Key: "hosts:block", Kind: &hivev1.Resource_Hosts{Hosts: &hivev1.Hosts{Entries: entries}}}
}

func entry(addr string, names ...string) *hivev1.Hosts_Entry {
	return &hivev1.Hosts_Entry{Address: addr, Names: names}
}

// TestTimeline: the block is appended, kept, put back after drift (lines
// outside it untouched, even when edited meanwhile) and pruned.
func TestTimeline(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc/hosts")
	if err := os.MkdirAll(filepath.Dir(etc), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etc, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	env := &converge.Env{Root: root, Family: converge.FamilyDebian}
	p := hosts.New()
	want := base + hosts.Begin + "\n10.0.0.1\tdb1 db1.internal\n10.0.0.2\tdb2\n" + hosts.End + "\n"
	convergetest.Run(t, convergetest.Timeline{
		Provider: p,
		Env:      env,
		Desired:  []*hivev1.Resource{res(entry("10.0.0.1", "db1"), entry("10.0.0.2", "db2"), entry("10.0.0.1", "db1.internal", "db1"))},
		Check: func(t *testing.T) {
			b, _ := os.ReadFile(etc)
			if !strings.HasSuffix(string(b), want[len(base):]) {
				t.Errorf("/etc/hosts:\n%s\nwant suffix:\n%s", b, want[len(base):])
			}
		},
		Drift: func(t *testing.T) {
			b, _ := os.ReadFile(etc)
			s := strings.Replace(string(b), "10.0.0.2\tdb2", "10.6.6.6\tdb2", 1)
			s = strings.Replace(s, "legacy", "legacy2", 1) // outside the block: kept
			if err := os.WriteFile(etc, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		},
	})
	b, _ := os.ReadFile(etc)
	if !strings.Contains(string(b), "10.9.9.9\tlegacy2\n") || !strings.HasPrefix(string(b), "127.0.0.1\tlocalhost\n") {
		t.Fatalf("lines outside the block changed:\n%s", b)
	}
	chs, err := p.Prune(context.Background(), env, nil)
	if err != nil || len(chs) != 1 {
		t.Fatalf("prune: %v %s", err, convergetest.Describe(chs))
	}
	if err := p.Apply(context.Background(), env, chs); err != nil || chs[0].Err != nil {
		t.Fatalf("apply prune: %v %v", err, chs[0].Err)
	}
	b, _ = os.ReadFile(etc)
	if string(b) != strings.Replace(base, "legacy", "legacy2", 1) {
		t.Fatalf("after prune:\n%s", b)
	}
	if chs, _ := p.Prune(context.Background(), env, nil); len(chs) != 0 {
		t.Fatalf("second prune: %s", convergetest.Describe(chs))
	}
}

// TestBrokenMarkers: a lone marker is an error and nothing is written.
func TestBrokenMarkers(t *testing.T) {
	for name, content := range map[string]string{
		"begin only": base + hosts.Begin + "\n10.0.0.1\tx\n",
		"end only":   base + hosts.End + "\n",
		"reversed":   hosts.End + "\n" + hosts.Begin + "\n",
		"two begins": hosts.Begin + "\n" + hosts.Begin + "\n" + hosts.End + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			etc := filepath.Join(root, "etc/hosts")
			os.MkdirAll(filepath.Dir(etc), 0o755)
			os.WriteFile(etc, []byte(content), 0o644)
			env := &converge.Env{Root: root}
			chs, err := hosts.New().Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{{Key: "hosts:block", Resource: res(entry("10.0.0.1", "a"))}}})
			if err != nil {
				t.Fatal(err)
			}
			if chs[0].Err == nil || !strings.Contains(chs[0].Err.Error(), "fix it by hand") {
				t.Fatalf("err = %v", chs[0].Err)
			}
			b, _ := os.ReadFile(etc)
			if string(b) != content {
				t.Fatal("file changed")
			}
		})
	}
}

func TestValidate(t *testing.T) {
	p := hosts.New()
	for _, r := range []*hivev1.Resource{
		res(entry("10.0.0.300", "a")),
		res(entry("10.0.0.1")),
		res(entry("10.0.0.1", "-bad")),
		{Key: "hosts:block", Kind: &hivev1.Resource_Hosts{Hosts: &hivev1.Hosts{FromRoles: []string{"db"}}}},
	} {
		if err := p.Validate(r); err == nil {
			t.Errorf("Validate(%v) = nil", r)
		}
	}
}

// TestConfirmRestore: the snapshot taken before a change with a confirm
// window is the block alone; Restore puts the old block back (or removes
// a block that was not there), keeps lines edited outside it meanwhile,
// and restoring twice changes nothing more.
func TestConfirmRestore(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc/hosts")
	if err := os.MkdirAll(filepath.Dir(etc), 0o755); err != nil {
		t.Fatal(err)
	}
	env := &converge.Env{Root: root, Family: converge.FamilyDebian}
	p := hosts.New()
	ctx := context.Background()
	apply := func(r *hivev1.Resource) {
		t.Helper()
		chs, err := p.Plan(ctx, env, &converge.Batch{Items: []converge.Item{{Key: r.GetKey(), Resource: r}}, Changed: map[string]bool{}})
		if err != nil || chs[0].Err != nil {
			t.Fatalf("plan: %v %v", err, chs[0].Err)
		}
		if err := p.Apply(ctx, env, chs); err != nil || chs[0].Err != nil {
			t.Fatalf("apply: %v %v", err, chs[0].Err)
		}
	}
	read := func() string {
		b, err := os.ReadFile(etc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	write := func(s string) {
		if err := os.WriteFile(etc, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// No block before: the rollback removes the one the change added.
	write(base)
	old := res(entry("10.0.0.1", "db1"))
	snap, err := p.Snapshot(ctx, env, old)
	if err != nil {
		t.Fatal(err)
	}
	apply(old)
	if !strings.Contains(read(), "10.0.0.1\tdb1") {
		t.Fatalf("block not written:\n%s", read())
	}
	write(strings.Replace(read(), "legacy", "legacy-edited", 1)) // outside the block, during the window
	if err := p.Restore(ctx, env, old, snap); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), strings.Replace(base, "legacy", "legacy-edited", 1); got != want {
		t.Fatalf("after restoring a snapshot without a block:\n%s\nwant:\n%s", got, want)
	}

	// A block before: the rollback puts it back, in place.
	apply(old)
	before := read()
	snap, err = p.Snapshot(ctx, env, old)
	if err != nil {
		t.Fatal(err)
	}
	changed := res(entry("10.0.0.9", "db1"), entry("10.0.0.2", "db2"))
	apply(changed)
	if read() == before {
		t.Fatal("the change did not change the file")
	}
	for range 2 {
		if err := p.Restore(ctx, env, changed, snap); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != before {
			t.Fatalf("after restore:\n%s\nwant:\n%s", got, before)
		}
	}

	// A broken file is not guessed at, neither to snapshot nor to restore.
	write(base + hosts.Begin + "\n")
	if _, err := p.Snapshot(ctx, env, old); err == nil || !strings.Contains(err.Error(), "fix it by hand") {
		t.Errorf("snapshot of a file with a lone marker: %v", err)
	}
	if err := p.Restore(ctx, env, old, snap); err == nil || !strings.Contains(err.Error(), "fix it by hand") {
		t.Errorf("restore into a file with a lone marker: %v", err)
	}
	if err := p.Restore(ctx, env, old, []byte("{")); err == nil || !strings.Contains(err.Error(), "bad snapshot") {
		t.Errorf("restore of a bad snapshot: %v", err)
	}
}
