package file_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/file"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestSnapshotRestore: whatever was at the path before a change (nothing,
// a file with its mode, a directory, a symlink) is what Restore puts back
// after the change, and a second Restore changes nothing; what cannot be
// restored (a non-empty directory to remove) cannot be snapshotted.
func TestSnapshotRestore(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name   string
		before func(t *testing.T, p string)
		want   *hivev1.File
		check  func(t *testing.T, p string)
	}{
		{"absent", func(*testing.T, string) {}, &hivev1.File{Content: "new\n"}, func(t *testing.T, p string) {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Fatalf("created file not removed: %v", err)
			}
		}},
		{"file", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("old\n"), 0o600)) }, &hivev1.File{Content: "new\n", Mode: 0o644}, func(t *testing.T, p string) {
			b, err := os.ReadFile(p)
			must(t, err)
			if m, _, _ := stat(t, p); string(b) != "old\n" || m.Perm() != 0o600 {
				t.Fatalf("restored %q mode %v, want old 0600", b, m)
			}
		}},
		{"file-removed", func(t *testing.T, p string) { must(t, os.WriteFile(p, []byte("old\n"), 0o640)) },
			&hivev1.File{State: hivev1.FileState_FILE_STATE_ABSENT}, func(t *testing.T, p string) {
				if b, _ := os.ReadFile(p); string(b) != "old\n" {
					t.Fatalf("removed file not restored: %q", b)
				}
			}},
		{"directory", func(t *testing.T, p string) { must(t, os.Mkdir(p, 0o750)) }, &hivev1.File{State: hivev1.FileState_FILE_STATE_DIRECTORY, Mode: 0o700}, func(t *testing.T, p string) {
			if m, _, _ := stat(t, p); !m.IsDir() || m.Perm() != 0o750 {
				t.Fatalf("restored %v, want a 0750 directory", m)
			}
		}},
		{"directory-created", func(*testing.T, string) {}, &hivev1.File{State: hivev1.FileState_FILE_STATE_DIRECTORY}, func(t *testing.T, p string) {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Fatalf("created directory not removed: %v", err)
			}
		}},
		{"symlink", func(t *testing.T, p string) { must(t, os.Symlink("/etc/elsewhere", p)) }, &hivev1.File{Content: "x\n"}, func(t *testing.T, p string) {
			if l, err := os.Readlink(p); err != nil || l != "/etc/elsewhere" {
				t.Fatalf("restored link %q %v", l, err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := newEnv(t)
			env.Runner = converge.ExecRunner{}
			p := filepath.Join(env.Root, "etc", "app.conf")
			c.before(t, p)
			c.want.Path = "/etc/app.conf"
			r := res(c.want)
			prov := file.New()
			snap, err := prov.Snapshot(ctx, env, r)
			must(t, err)
			b := &converge.Batch{Items: []converge.Item{{Key: r.Key, Resource: r}}}
			chs, err := prov.Plan(ctx, env, b)
			must(t, err)
			if !chs[0].Needed || chs[0].Err != nil {
				t.Fatalf("nothing to change: %+v", chs[0])
			}
			chs[0].Key, chs[0].Resource = r.Key, r
			must(t, prov.Apply(ctx, env, chs))
			must(t, chs[0].Err)
			must(t, prov.Restore(ctx, env, r, snap))
			c.check(t, p)
			must(t, prov.Restore(ctx, env, r, snap))
			c.check(t, p)
		})
	}
	env := newEnv(t)
	must(t, os.MkdirAll(filepath.Join(env.Root, "srv/data/sub"), 0o755))
	_, err := file.New().Snapshot(ctx, env, res(&hivev1.File{Path: "/srv/data", State: hivev1.FileState_FILE_STATE_ABSENT}))
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("snapshot of a non-empty directory to remove: %v", err)
	}
}
