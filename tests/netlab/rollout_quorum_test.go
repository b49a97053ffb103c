package netlabtests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator"
)

// quorumSite is a site of three roles, each with files of version v:
// storage (tier=storage) replicates the DRBD resource r0 among all its
// nodes, manager (tier=manager) makes its nodes swarm managers, web is
// plain. The agents run under --root, where drbd and swarm are planned,
// never applied: what the planner keys its quorum rules on is exactly what
// a real fleet would render (the DRBD peers from membership, the swarm
// role), and the nodes converge and report like any other.
func quorumSite(v string) string {
	var b strings.Builder
	b.WriteString("site: netlab\nselectors:\n")
	for _, r := range []string{"storage", "manager", "web"} {
		fmt.Fprintf(&b, "  - match: {tier: %s}\n    roles: [%s]\n", r, r)
	}
	b.WriteString("roles:\n")
	for _, r := range []string{"storage", "manager", "web"} {
		fmt.Fprintf(&b, "  %s:\n    files:\n      - path: %s\n        mode: \"0644\"\n        content: %q\n", r, filePath(0), fileContent(v, 0))
		switch r {
		case "storage":
			b.WriteString("    drbd:\n      - name: r0\n        minor: 0\n        disk: /dev/vdb\n        port: 7789\n        peers: storage\n")
		case "manager":
			b.WriteString("    swarm:\n      role: manager\n      init: true\n")
		}
	}
	return b.String()
}

// phaseEvent is one line of `hivectl events -o json`.
type phaseEvent struct {
	Time   time.Time         `json:"time"`
	Kind   string            `json:"kind"`
	Node   string            `json:"node"`
	Fields map[string]string `json:"fields"`
}

// TestRolloutQuorumRules (issue 14): two DRBD peers are never in the same
// wave and the swarm managers never lose their majority, with real
// coordinators and agents. Three storage nodes share DRBD resource r0,
// five nodes are swarm managers, two are plain; max_parallel 10 would let
// a naive planner take all ten at once. The test checks the plan
// (GetRollout's waves), then the timeline the agents' reports make: each
// node is "in flight" from the opening of its wave until the coordinator
// applied its report converged on the new generation, and the new file
// under its root was written inside that window (never before its wave
// opened). No two DRBD peers are ever in flight together, and never more
// than ManagerWaveLimit(5) = 2 managers are.
func TestRolloutQuorumRules(t *testing.T) {
	start := time.Now()
	tiers := map[int]string{1: "storage", 2: "storage", 3: "storage", 4: "manager", 5: "manager", 6: "manager", 7: "manager", 8: "manager", 9: "web", 10: "web"}
	c := newCluster(t, clusterConfig{coordinators: 3, agents: len(tiers), labels: func(i int) []string { return []string{"tier=" + tiers[i]} }})
	tierOf := map[string]string{}
	byName := map[string]*node{}
	for i, a := range c.agents {
		tierOf[a.name] = tiers[i+1]
		byName[a.name] = a
	}
	// Without --wait: a storage node rendered before its peers registered
	// fails r0 (a DRBD resource needs two peers) until they do.
	g1 := c.push(quorumSite("1"), false)
	c.waitConverged(g1, 60*time.Second, c.agents...)

	const minHealthy = time.Second
	out, err := c.pushFlags(quorumSite("2"), "--max-parallel", "10", "--min-healthy-time", minHealthy.String())
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	g2, err := pushGeneration(out)
	if err != nil {
		t.Fatal(err)
	}
	r := c.waitRollout(60*time.Second, "completed", func(r *rolloutState) bool { return r.Generation == g2 && r.State == "completed" })
	t.Logf("waves: %s", dump(r.Waves))

	// The plan: at most one storage node and ManagerWaveLimit managers a
	// wave, so at least three waves although max_parallel takes all.
	mgrLimit := coordinator.ManagerWaveLimit(5, 0)
	waveOf := map[string]int{}
	for i, w := range r.Waves {
		count := map[string]int{}
		for _, n := range w.Nodes {
			count[tierOf[n]]++
			waveOf[n] = i
		}
		if count["storage"] > 1 || count["manager"] > mgrLimit {
			t.Errorf("wave %d holds %d DRBD peers of r0 and %d of 5 managers: %v", i+1, count["storage"], count["manager"], w.Nodes)
		}
		if w.Opened == nil {
			t.Fatalf("wave %d never opened: %s", i+1, dump(r.Waves))
		}
	}
	if len(r.Waves) < 3 || len(waveOf) != len(c.agents) {
		t.Fatalf("want every node in at least 3 waves: %s", dump(r.Waves))
	}

	// The timeline from the agents' reports, as the coordinators applied
	// them (node.phase events carry the report batch's raft time).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evOut, err := c.ctl(ctx, "events", "--kind", "node.phase", "-o", "json")
	if err != nil {
		t.Fatalf("events: %v\n%s", err, evOut)
	}
	converged := map[string]time.Time{}
	sc := bufio.NewScanner(bytes.NewReader(evOut))
	for sc.Scan() {
		var e phaseEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("event %q: %v", sc.Text(), err)
		}
		if e.Fields["generation"] == fmt.Sprint(g2) && e.Fields["phase"] == "converged" {
			if _, ok := converged[e.Node]; !ok {
				converged[e.Node] = e.Time
			}
		}
	}
	type window struct {
		node     string
		from, to time.Time
	}
	var windows []window
	for _, a := range c.agents {
		conv, ok := converged[a.name]
		if !ok {
			t.Fatalf("no node.phase event of %s converged on generation %d:\n%s", a.name, g2, evOut)
		}
		w := window{node: a.name, from: *r.Waves[waveOf[a.name]].Opened, to: conv}
		fi, err := os.Stat(filepath.Join(a.root, filePath(0)))
		if err != nil || !a.hasVersion("2", 1) {
			t.Fatalf("%s: %s not at version 2: %v", a.name, filePath(0), err)
		}
		// Timestamps of the wave (leader's clock) and of the file (the
		// agent's) come from the same machine, but a file's mtime is the
		// kernel's coarse clock, up to a tick (1–10 ms) behind the clock
		// the wave's time was read from: a file written 1 ms after the
		// wave opened showed an mtime 1 ms before it.
		const tick = 10 * time.Millisecond
		if fi.ModTime().Before(w.from.Add(-tick)) || fi.ModTime().After(w.to.Add(tick)) {
			t.Errorf("%s wrote generation %d's file at %s, outside its window %s .. %s (wave %d)", a.name, g2,
				fi.ModTime().Format(time.StampMilli), w.from.Format(time.StampMilli), w.to.Format(time.StampMilli), waveOf[a.name]+1)
		}
		windows = append(windows, w)
	}
	sort.Slice(windows, func(i, j int) bool { return windows[i].from.Before(windows[j].from) })
	for _, w := range windows {
		t.Logf("%-3s %-7s wave %d in flight %s .. %s", w.node, tierOf[w.node], waveOf[w.node]+1, w.from.Format("15:04:05.000"), w.to.Format("15:04:05.000"))
	}
	// At each window's start, who else is in flight?
	for _, w := range windows {
		peers, managers := []string{}, []string{}
		for _, o := range windows {
			if o.from.After(w.from) || o.to.Before(w.from) {
				continue
			}
			switch tierOf[o.node] {
			case "storage":
				peers = append(peers, o.node)
			case "manager":
				managers = append(managers, o.node)
			}
		}
		if tierOf[w.node] == "storage" && len(peers) > 1 {
			t.Errorf("DRBD peers %v of r0 in flight together when %s started", peers, w.node)
		}
		if len(managers) > mgrLimit {
			t.Errorf("%d of 5 swarm managers %v in flight together when %s started: the majority is lost", len(managers), managers, w.node)
		}
	}
	// The gate held each wave for min_healthy_time after its last node
	// converged.
	for i := 1; i < len(r.Waves); i++ {
		var last time.Time
		for _, n := range r.Waves[i-1].Nodes {
			if converged[n].After(last) {
				last = converged[n]
			}
		}
		if gap := r.Waves[i].Opened.Sub(last); gap < minHealthy {
			t.Errorf("wave %d opened %v after wave %d's last node converged (< min_healthy_time %v)", i+1, gap, i, minHealthy)
		}
	}
	t.Logf("%d waves; test took %v", len(r.Waves), time.Since(start).Round(time.Millisecond))
}
