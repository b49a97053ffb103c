package repocli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRegistryFlags: bad registry flags are refused before anything starts,
// and the config file takes the registry keys.
func TestRegistryFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--registry-upstream", "ftp://mirror"}, `registry upstream "ftp://mirror": must be an http(s) URL`},
		{[]string{"--registry-cache-ttl", "-1h"}, "registry cache TTL must be >= 0"},
		{[]string{"--registry-upstream-password-file", filepath.Join(dir, "none")}, "--registry-upstream-password-file"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"--dev", "--data-dir", dir, "--addr", "127.0.0.1:0"}, c.args...)
		if code := Main(args, &out, &errb); code == 0 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: code %d, %s", c.args, code, errb.String())
		}
	}
	conf := filepath.Join(dir, "repo.yaml")
	os.WriteFile(conf, []byte("registry_upstream: nope\nregistry_anonymous_pull: false\n"), 0o644)
	var out, errb bytes.Buffer
	if code := Main([]string{"--config", conf, "--dev", "--data-dir", dir}, &out, &errb); code == 0 || !strings.Contains(errb.String(), `registry upstream "nope"`) {
		t.Errorf("config file: %s", errb.String())
	}
}
