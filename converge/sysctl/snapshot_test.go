package sysctl

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/converge"
)

// TestSnapshotRestoreLive: in a fresh network namespace (the real
// kernel), a key set by hive with a confirm window is put back by Restore:
// the live value, and the persisted file as it was (here: a file that
// held another managed key, which stays, and no line for this one).
func TestSnapshotRestoreLive(t *testing.T) {
	root := t.TempDir()
	env := &converge.Env{Root: root}
	p := New(Config{ProcSys: "/proc/sys"})
	ctx := context.Background()
	conf := filepath.Join(root, ConfFile)
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		t.Fatal(err)
	}
	const other = "# Managed by hive (sysctl resources): edits are overwritten.\n# \"# before:\" lines keep each key's value from before hive set it.\nnet.ipv4.conf.all.forwarding = 0\n"
	if err := os.WriteFile(conf, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	inNetns(t, func() {
		b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if err != nil {
			t.Error(err)
			return
		}
		// A new namespace may start with 0 or 1 (kernel, host setting).
		before, want := Normalize(string(b)), "1"
		if before == "1" {
			want = "0"
		}
		r := res("net.ipv4.ip_forward", want)
		snap, err := p.Snapshot(ctx, env, r)
		if err != nil {
			t.Error(err)
			return
		}
		chs, err := p.Plan(ctx, env, &converge.Batch{Items: []converge.Item{{Key: r.Key, Resource: r}}})
		if err != nil || !chs[0].Needed {
			t.Errorf("plan: %v %+v", err, chs)
			return
		}
		if err := p.Apply(ctx, env, chs); err != nil || chs[0].Err != nil {
			t.Errorf("apply: %v %v", err, chs[0].Err)
			return
		}
		if v, _ := p.readLive(env, "net.ipv4.ip_forward"); v != want {
			t.Errorf("after apply: %q, want %q", v, want)
		}
		for range 2 { // a second restore changes nothing
			if err := p.Restore(ctx, env, r, snap); err != nil {
				t.Error(err)
				return
			}
			if v, _ := p.readLive(env, "net.ipv4.ip_forward"); v != before {
				t.Errorf("after restore: live %q, want %q", v, before)
			}
			if b, _ := os.ReadFile(conf); string(b) != other {
				t.Errorf("after restore: %s\n%s\nwant\n%s", ConfFile, b, other)
			}
		}
	})
}
