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

// TestOwnerCreatedInThisRun: in a dry run, a file owned by a user or group
// that the run plans to create (its key is in the batch's Changed set, as
// the engine orders files after their accounts) is planned with the owner
// named, not failed; outside a dry run, or when the account is not
// planned, the missing owner still fails the file.
func TestOwnerCreatedInThisRun(t *testing.T) {
	planWith := func(env *converge.Env, changed map[string]bool, f *hivev1.File) *converge.Change {
		t.Helper()
		r := res(f)
		b := &converge.Batch{Items: []converge.Item{{Key: r.Key, Resource: r}}, Changed: changed}
		chs, err := file.New().Plan(context.Background(), env, b)
		must(t, err)
		return chs[0]
	}
	env := newEnv(t)
	env.DryRun = true
	must(t, os.WriteFile(filepath.Join(env.Root, "etc", "old"), []byte("x"), 0o644))
	planned := map[string]bool{"user:ops": true, "group:admins": true}
	for _, tc := range []struct {
		f    *hivev1.File
		want string
	}{
		{&hivev1.File{Path: "/etc/new", Content: "x", Owner: "ops", Group: "admins"}, "owner ops (created in this run):admins (created in this run)"},
		{&hivev1.File{Path: "/etc/ownd", State: hivev1.FileState_FILE_STATE_DIRECTORY, Owner: "ops", Group: "ops"}, "owner ops (created in this run):ops (created in this run)"},
		{&hivev1.File{Path: "/etc/old", Content: "x", Owner: "www", Group: "admins"}, "owner 0:0 → 33:admins (created in this run)"},
	} {
		c := planWith(env, planned, tc.f)
		if c.Err != nil || !c.Needed || !strings.Contains(c.Summary, tc.want) {
			t.Errorf("%s: err %v needed %v summary %q, want %q", tc.f.GetPath(), c.Err, c.Needed, c.Summary, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(env.Root, "etc", "new")); !os.IsNotExist(err) {
		t.Error("the dry run wrote a file")
	}
	// Not planned: the lookup error stands.
	c := planWith(env, map[string]bool{"user:other": true}, &hivev1.File{Path: "/etc/new", Content: "x", Owner: "ops"})
	if c.Err == nil || !strings.Contains(c.Err.Error(), `user "ops" not found`) {
		t.Errorf("owner not planned: err %v", c.Err)
	}
	// A real run: the account must exist by the time the file is planned.
	env.DryRun = false
	c = planWith(env, planned, &hivev1.File{Path: "/etc/new", Content: "x", Group: "admins"})
	if c.Err == nil || !strings.Contains(c.Err.Error(), `group "admins" not found`) {
		t.Errorf("real run with a missing group: err %v", c.Err)
	}
}
