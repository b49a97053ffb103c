package ctl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/internal/netlab"
)

// TestDemo runs `hivectl demo --exit-after-status` with the real binaries
// (built once) and checks that all three agents converged and wrote their
// files under their own sandbox roots.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs seven processes")
	}
	bins := netlab.Build(t, "hive-coordinator", "hive-agent", "hive-repo")
	t.Cleanup(netlab.CleanupBuilds) // no other test of this package builds binaries
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := Main([]string{"demo", "--exit-after-status", "--timeout", "2m",
		"--bin-dir", filepath.Dir(bins["hive-agent"]),
		"--site", filepath.Join("..", "deploy", "examples", "site.yaml"),
		"--dir", dir}, nil, &out, &errOut)
	t.Logf("demo output:\n%s\n%s", out.String(), errOut.String())
	if code != 0 {
		for _, n := range []string{"c1", "web-1", "db-1"} {
			b, _ := os.ReadFile(filepath.Join(dir, "logs", n+".log"))
			t.Logf("%s.log:\n%s", n, b)
		}
		t.Fatalf("demo exited %d", code)
	}
	for _, want := range []string{"3/3 converged", "3 nodes, 3 converged", "stopped every agent and coordinator"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	for _, node := range []string{"web-1", "db-1", "db-2"} {
		motd, err := os.ReadFile(filepath.Join(dir, node, "root", "etc", "motd"))
		if err != nil || !strings.HasPrefix(string(motd), node+" is managed by hive") {
			t.Errorf("%s: /etc/motd under its root = %q, %v", node, motd, err)
		}
	}
	// Files of a role only the web node holds are under web-1's root only.
	if _, err := os.Stat(filepath.Join(dir, "web-1", "root", "etc", "nginx", "conf.d", "site.conf")); err != nil {
		t.Errorf("web-1 lacks its nginx site: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "db-1", "root", "etc", "nginx", "conf.d", "site.conf")); err == nil {
		t.Errorf("db-1 got the web role's file")
	}
}
