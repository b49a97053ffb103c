package swarm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

// TestSwarmThroughAgentAndCoordinator forms a swarm of one manager and two
// workers through the real path: hivectl pushes a site to a hive-coordinator
// (--dev), three hive-agent processes converge it on their own hosts
// (network namespaces of internal/netlab), each talking to its own dockerd;
// the manager's join tokens travel agent → report → coordinator secret →
// workers' node states. Then a worker's role is removed and it leaves.
//
// Each agent runs in the private mount namespace `ip netns exec` gives it,
// with a tmpfs on /run holding a bind mount of its own engine's socket at
// /run/docker.sock and a tmpfs on /var/lib: the machine's docker socket and
// /var/lib/hive are never used.
//
// Run alone with: go test -run ThroughAgent ./converge/swarm/
func TestSwarmThroughAgentAndCoordinator(t *testing.T) {
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "dockerd", "containerd", "nsenter", "mount")
	bin := netlab.Build(t, "hive-coordinator", "hive-agent", "hivectl")
	lab := netlab.New(t)
	admin := lab.AddHost("admin")
	c1 := lab.AddHost("c1")
	c1.Start("hive-coordinator", bin["hive-coordinator"], "--dev", "--name", "c1",
		"--data-dir", filepath.Join(t.TempDir(), "c1"),
		"--grpc-addr", c1.Addr+":7400", "--raft-addr", c1.Addr+":7401",
		"--gossip-addr", c1.Addr+":7402", "--http-addr", "")

	ctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := admin.Run(ctx, append([]string{bin["hivectl"], "--dev", "--addr", c1.Addr + ":7400"}, args...)...)
		return string(out), err
	}
	eventually(t, "coordinator answering", 60*time.Second, func() bool {
		_, err := ctl("members")
		return err == nil
	})

	// Engines and agents.
	members := map[string]*member{}
	for _, name := range []string{"m1", "w1", "w2"} {
		h := lab.AddHost(name)
		n := &node{t: t, name: name, ns: h.NS, addr: h.Addr}
		dir, err := os.MkdirTemp("/tmp", "hsw")
		if err != nil {
			t.Fatal(err)
		}
		n.dir, n.sock = dir, filepath.Join(dir, "d.sock")
		if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			n.stop()
			unmountBelow(n.dir)
			_ = os.RemoveAll(n.dir)
		})
		if err := n.start(); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(t.TempDir(), "data")
		script := strings.Join([]string{
			"set -e",
			"mount -t tmpfs hive-run /run",
			"touch /run/docker.sock",
			"mount --bind " + n.sock + " /run/docker.sock",
			"mount -t tmpfs hive-varlib /var/lib",
			fmt.Sprintf("exec %s --dev --no-gossip --name %s --coordinator %s:7400 --address %s --data-dir %s --interval 1s --retry-min 1s",
				bin["hive-agent"], name, c1.Addr, h.Addr, data),
		}, "\n")
		h.Start("hive-agent", "sh", "-c", script)
		m := &member{n: n}
		cli, err := client.New(client.WithHost("unix://" + n.sock))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		m.cli = cli
		members[name] = m
	}

	site := func(workers string) string {
		return `site: swarm
selectors:
  - names: ["m1"]
    roles: [swarm-manager]
  - names: [` + workers + `]
    roles: [swarm-worker]
roles:
  swarm-manager:
    swarm:
      role: manager
      init: true
      labels: {tier: front}
      networks:
        - name: app
          subnet: 10.210.0.0/24
          attachable: true
  swarm-worker:
    swarm:
      role: worker
      labels: {tier: back}
`
	}
	push := func(s string) {
		f := filepath.Join(t.TempDir(), "site.yaml")
		if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := ctl("push", f, "-m", "swarm"); err != nil {
			t.Fatalf("push: %v\n%s", err, out)
		}
	}
	push(site(`"w1", "w2"`))

	m1, w1, w2 := members["m1"], members["w1"], members["w2"]
	active := func(m *member) bool {
		info, err := m.cli.Info(context.Background(), client.InfoOptions{})
		return err == nil && info.Info.Swarm.LocalNodeState == dswarm.LocalNodeStateActive
	}
	eventually(t, "m1 to initialise the swarm", 90*time.Second, func() bool { return active(m1) })
	eventually(t, "w1 and w2 to join with the published token", 120*time.Second, func() bool { return active(w1) && active(w2) })
	if st := m1.state(t); !st.ControlAvailable {
		t.Errorf("m1 is not a manager: %+v", st)
	}
	for _, w := range []*member{w1, w2} {
		if st := w.state(t); st.ControlAvailable || st.Cluster != nil && st.Cluster.ID != m1.state(t).Cluster.ID {
			t.Errorf("%s: %+v", w.n.name, st)
		}
	}
	eventually(t, "three nodes ready on the manager", 60*time.Second, func() bool {
		ready := 0
		for _, n := range mustNodes(t, m1) {
			if n.Status.State == dswarm.NodeStateReady {
				ready++
			}
		}
		return ready == 3
	})
	if _, err := m1.cli.NetworkInspect(context.Background(), "app", client.NetworkInspectOptions{}); err != nil {
		t.Errorf("network app: %v", err)
	}
	eventually(t, "m1's label", 30*time.Second, func() bool {
		return m1.nodes(t)[m1.n.addr].Spec.Labels["tier"] == "front"
	})
	if n := m1.nodes(t)[w1.n.addr]; n.Spec.Labels["tier"] != "back" {
		t.Logf("w1's labels %v: worker labels need the coordinator to render Swarm.members for the initializer", n.Spec.Labels)
	}
	if out, err := ctl("status"); err == nil {
		t.Logf("hivectl status:\n%s", out)
	}

	// w2 loses its swarm role: its agent prunes, w2 leaves.
	push(site(`"w1"`))
	eventually(t, "w2 to leave the swarm", 90*time.Second, func() bool { return !active(w2) })
	if !active(w1) || !active(m1) {
		t.Error("others left too")
	}
	// The manager sees w2 down, or has already removed it: the
	// initializer's provider removes down workers that are no longer
	// members, and under load that can happen before this check runs.
	eventually(t, "w2 down on the manager or removed", 60*time.Second, func() bool {
		n, ok := m1.nodes(t)[w2.n.addr]
		return !ok || n.Status.State == dswarm.NodeStateDown
	})
}
