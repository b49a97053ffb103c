package netlabtests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// rebootSite gives role db (tier=db) a DRBD resource replicated by every
// db node and a check standing for builtin/drbd's "UpToDate": the agents
// run under a --root sandbox, where DRBD is only planned (no kernel module
// here), so each agent's check passes while the file its environment names
// (NETLAB_UPTODATE) exists. The test removes that file when the node goes
// down and puts it back a while after it came back, as a resync would.
const rebootSite = `site: netlab
selectors:
  - match: {tier: db}
    roles: [db]
roles:
  db:
    drbd:
      - name: r0
        minor: 0
        disk: /dev/vdb
        port: 7789
        peers: db
    checks:
      - name: drbd-r0
        command: ["sh", "-c", "test -f \"$NETLAB_UPTODATE\" || { echo r0 not UpToDate; exit 1; }"]
        interval: 1s
        timeout: 500ms
        failures: 1
`

// rebootQueue is what the test reads of `hivectl node reboot --status -o
// json`.
type rebootQueue struct {
	MaxParallel int    `json:"max_parallel"`
	Halted      string `json:"halted"`
	Nodes       []struct {
		Name        string `json:"name"`
		State       string `json:"state"`
		RequestedBy string `json:"requested_by"`
		Message     string `json:"message"`
	} `json:"nodes"`
}

// TestRebootDRBDRoleOneAtATime (issue 17, done-when): `hivectl node reboot
// --role db --max-parallel 3` on three DRBD peers reboots them one at a
// time — only the DRBD rule holds them back — and never takes two replicas
// down at once, while the raft leader is killed -9 (and restarted) in the
// middle: the lock and the queue are raft state, the next leader carries
// on. The reboot is the agents' --reboot-command hook (documented), which
// here drops a marker; the test then does what a reboot does to the node:
// stops its agent, starts it again, and makes its replica UpToDate again a
// moment later. A node counts as down from its reboot until its replica is
// UpToDate again.
func TestRebootDRBDRoleOneAtATime(t *testing.T) {
	start := time.Now()
	c := newCluster(t, clusterConfig{coordinators: 3})
	dir := filepath.Join(c.dir, "reboot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := func(n *node) string { return filepath.Join(dir, n.name+".rebooted") }
	uptodate := func(n *node) string { return filepath.Join(dir, n.name+".uptodate") }
	touch := func(p string) {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Error(err)
		}
	}
	names := []string{"d1", "d2", "d3"}
	hosts := c.lab.AddHosts(names...)
	var dbs []*node
	for i, name := range names {
		dbs = append(dbs, &node{name: name, host: hosts[i], labels: []string{"tier=db"}})
	}
	c.agentCerts(dbs)
	for i, n := range dbs {
		n.data = filepath.Join(c.dir, n.name, "data")
		n.root = filepath.Join(c.dir, n.name, "root")
		if err := os.MkdirAll(n.root, 0o755); err != nil {
			t.Fatal(err)
		}
		touch(uptodate(n))
		args := append(c.agentArgs(n, n.name, c.coords[i%len(c.coords)]), "--reboot-command", "touch "+marker(n))
		n.proc = n.host.StartEnv("hive-agent", []string{"NETLAB_UPTODATE=" + uptodate(n)}, args...)
		c.agents = append(c.agents, n)
	}
	gen := c.push(rebootSite, false)
	c.waitConverged(gen, 60*time.Second, dbs...)
	t.Logf("cluster up, generation %d converged on %v after %v", gen, names, time.Since(start).Round(time.Millisecond))

	// The nodes' reboots, as the hook asks for them.
	var mu sync.Mutex
	down := map[string]time.Time{}
	var order, overlaps []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			for _, n := range dbs {
				if _, err := os.Stat(marker(n)); err != nil {
					continue
				}
				os.Remove(marker(n))
				os.Remove(uptodate(n))
				mu.Lock()
				for o := range down {
					overlaps = append(overlaps, fmt.Sprintf("%s rebooted while %s was down", n.name, o))
				}
				down[n.name] = time.Now()
				order = append(order, n.name)
				mu.Unlock()
				wg.Add(1)
				go func(n *node) {
					defer wg.Done()
					if err := n.proc.Stop(10 * time.Second); err != nil {
						t.Logf("stop %s: %v", n.name, err)
					}
					time.Sleep(700 * time.Millisecond) // the machine boots
					n.proc.Restart()
					time.Sleep(1500 * time.Millisecond) // its replica resyncs
					mu.Lock()
					t.Logf("%s down for %v", n.name, time.Since(down[n.name]).Round(time.Millisecond))
					delete(down, n.name)
					mu.Unlock()
					touch(uptodate(n))
				}(n)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := c.ctl(ctx, "node", "reboot", "--role", "db", "--max-parallel", "3", "--reason", "kernel 6.1.0-30"); err != nil {
		t.Fatalf("node reboot: %v\n%s", err, out)
	}
	rebootStart := time.Now()

	// Kill the leader once the second node is rebooting.
	if !poll(30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(order) >= 2 }) {
		t.Fatalf("the second reboot did not start: order %v", order)
	}
	l := c.stableLeader()
	l.proc.Kill()
	t.Logf("killed leader %s during %v's reboot", l.name, order[1])
	time.Sleep(time.Second)
	l.proc.Restart()

	var q rebootQueue
	var last string
	if !poll(60*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := c.ctl(ctx, "node", "reboot", "--status", "-o", "json")
		if err != nil {
			last = fmt.Sprintf("%v: %s", err, out)
			return false
		}
		last = string(out)
		if err := json.Unmarshal(out, &q); err != nil {
			return false
		}
		if q.Halted != "" {
			t.Fatalf("reboot queue halted: %s", out)
		}
		done := 0
		for _, n := range q.Nodes {
			if n.State == "done" {
				done++
			}
		}
		return done == len(names)
	}) {
		t.Fatalf("reboots not done after 60s: %s", last)
	}
	t.Logf("three reboots done %v after the request", time.Since(rebootStart).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	stop = make(chan struct{})

	mu.Lock()
	defer mu.Unlock()
	if len(overlaps) > 0 {
		t.Errorf("two DRBD replicas down at once: %s", strings.Join(overlaps, "; "))
	}
	sorted := append([]string(nil), order...)
	sort.Strings(sorted)
	if strings.Join(sorted, ",") != "d1,d2,d3" {
		t.Errorf("reboots %v, want each of d1, d2, d3 once", order)
	}
	for _, n := range q.Nodes {
		if !strings.HasPrefix(n.RequestedBy, "admin") {
			t.Errorf("%s requested by %q, want the admin's certificate identity", n.Name, n.RequestedBy)
		}
	}
	// Status shows the finished reboot; every agent is back and converged.
	c.waitConverged(gen, 30*time.Second, dbs...)
	hs, err := c.healthOf("d2")
	if err != nil {
		t.Fatal(err)
	}
	if hs.Health != "passing" {
		t.Errorf("d2 health after its reboot: %s", dump(hs))
	}
	t.Logf("test took %v", time.Since(start).Round(time.Millisecond))
}
