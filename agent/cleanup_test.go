package agent_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hivefleet/hive/agent"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestStartRemovesCrashLeftovers: writes cut short by a crash leave
// temporary files in the agent's data directory and next to the files hive
// manages. At start the agent removes exactly those, whatever wrote them
// (this version's internal/atomicfile or an older one), and nothing else.
func TestStartRemovesCrashLeftovers(t *testing.T) {
	data, root := t.TempDir(), t.TempDir()
	st := &hivev1.NodeState{Node: "n1", Generation: 3, Hash: "h", Resources: []*hivev1.Resource{
		{Key: "file:/etc/app/app.conf", Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/app/app.conf", Content: "x"}}},
		{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0"}}},
		{Key: "repo:local", Kind: &hivev1.Resource_Repo{Repo: &hivev1.Repo{Name: "local"}}},
	}}
	c, err := agent.OpenCache(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SaveState(st); err != nil {
		t.Fatal(err)
	}
	stale := []string{
		data + "/." + agent.StateFile + ".hive-tmp-123",
		data + "/." + agent.AppliedFile + ".tmp-77", // older cache writes
		data + "/." + agent.SecretFilesLedger + ".hive-tmp-5",
		data + "/firewall-window.json.tmp", // older firewall window writes
		data + "/reports/.00000000000000000001.pb.hive-tmp-5",
		data + "/tls/.agent-key.pem.hive-tmp-9",
		root + "/etc/app/.app.conf.hive-tmp-42",
		root + "/etc/app/.app.conf.hive-4242", // older file provider
		root + "/etc/drbd.d/.r0.res.hive-tmp-1",
		root + "/etc/drbd.d/.hive-99.tmp", // older drbd provider
		root + "/etc/yum.repos.d/.hive-local.repo.hive-tmp-8",
		root + "/etc/apt/keyrings/.hive-local.asc.hive-8", // older file provider
		root + "/var/lib/hive/swarm-node.json.tmp",
		root + "/var/lib/hive/.swarm-node.json.hive-tmp-3",
	}
	keep := []string{
		data + "/notes.txt",
		data + "/.hidden",
		data + "/.x.hive-tmp-12ab",
		root + "/etc/app/app.conf",
		root + "/etc/app/.other.conf.hive-tmp-42", // not a file hive manages
		root + "/etc/app/.app.conf.hive-tmp-",
		root + "/etc/app/app.conf.bak",
		root + "/etc/other/.app.conf.hive-tmp-42", // not a directory hive writes in
		root + "/etc/drbd.d/site.res",
		root + "/etc/yum.repos.d/.fedora.repo.hive-tmp-8",
	}
	for _, p := range append(append([]string(nil), stale...), keep...) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A directory with a matching name is not a leftover of a write.
	if err := os.Mkdir(root+"/etc/app/.app.conf.hive-tmp-7", 0o755); err != nil {
		t.Fatal(err)
	}
	keep = append(keep, root+"/etc/app/.app.conf.hive-tmp-7")

	cfg := testConfig(t, data)
	cfg.Root = root
	if _, err := agent.New(cfg, agent.Deps{Engine: &fakeEngine{}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("leftover kept: %s (%v)", p, err)
		}
	}
	for _, p := range keep {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("removed %s: %v", p, err)
		}
	}
	if got, err := c.LoadState(); err != nil || got.GetGeneration() != 3 {
		t.Errorf("cached state after cleanup: %v %v", got, err)
	}
}
