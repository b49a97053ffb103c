package users_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/users"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestKeysNeverThroughASymlink: a user who replaced ~/.ssh by a link to
// /etc does not get hive to write authorized_keys there.
func TestKeysNeverThroughASymlink(t *testing.T) {
	root := t.TempDir()
	for p, c := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nmallory:x:1500:1500::/home/mallory:/bin/sh\n",
		"etc/group":  "root:x:0:\nmallory:x:1500:\n",
	} {
		must(t, os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755))
		must(t, os.WriteFile(filepath.Join(root, p), []byte(c), 0o644))
	}
	must(t, os.MkdirAll(filepath.Join(root, "home/mallory"), 0o755))
	must(t, os.Symlink("/etc", filepath.Join(root, "home/mallory/.ssh")))
	env := &converge.Env{Root: root, Runner: &convergetest.Recorder{}}
	p := users.NewUsers()
	r := user(&hivev1.User{Name: "mallory", ManageAuthorizedKeys: true, AuthorizedKeys: []string{key1}})
	_, needed := convergetest.PlanOnly(t, p, env, []*hivev1.Resource{r}, nil)
	if len(needed) != 1 {
		t.Fatalf("plan: %s", convergetest.Describe(needed))
	}
	if err := p.Apply(context.Background(), env, needed); err != nil {
		t.Fatal(err)
	}
	if needed[0].Err == nil || !strings.Contains(needed[0].Err.Error(), "refusing to write authorized_keys") {
		t.Fatalf("apply err = %v", needed[0].Err)
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/authorized_keys")); !os.IsNotExist(err) {
		t.Fatalf("written through the link: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
