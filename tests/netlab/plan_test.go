package netlabtests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// planOut is what the scenario reads of `hivectl plan -o json`.
type planOut struct {
	ID             string `json:"id"`
	BaseGeneration uint64 `json:"base_generation"`
	ElapsedMS      int64  `json:"elapsed_ms"`
	Server         string `json:"server"`
	Nodes          []struct {
		Name    string `json:"name"`
		State   string `json:"state"`
		TookMS  int64  `json:"took_ms"`
		Changes []struct {
			Key     string `json:"key"`
			Outcome string `json:"outcome"`
			Cause   string `json:"cause"`
		} `json:"changes"`
	} `json:"nodes"`
	Totals struct {
		Nodes       int `json:"nodes"`
		WithChanges int `json:"with_changes"`
		Unchanged   int `json:"unchanged"`
	} `json:"totals"`
}

// writeSite writes a site file under the cluster's directory.
func (c *cluster) writeSite(name, text string) string {
	c.t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// plan runs hivectl plan -o json and returns the plan and hivectl's wall
// time (process start, TLS, the plan itself).
func (c *cluster) plan(file string) (planOut, time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := c.ctl(ctx, "plan", file, "-o", "json", "--timeout", "20s")
	took := time.Since(start)
	if err != nil {
		c.t.Fatalf("plan: %v\n%s", err, out)
	}
	var p planOut
	if err := json.Unmarshal(out, &p); err != nil {
		c.t.Fatalf("decode plan: %v\n%s", err, out)
	}
	return p, took
}

// TestPlanThenPush: 20 real agents on 3 coordinators, one drifted by hand.
// hivectl plan shows, per node, exactly the resources the next push then
// changes (compared with every node's report after push --plan): the
// planned file everywhere, plus the drifted file on the drifted node, and
// nothing is changed by the plan itself. push --plan of a plan whose base
// moved is refused; pull, edit, push after someone else pushed is refused
// with who pushed what, and --force pushes it. Plan round trips are
// logged (docs/performance.md).
func TestPlanThenPush(t *testing.T) {
	nAgents := envInt("NETLAB_PLAN_AGENTS", 20)
	start := time.Now()
	// A long drift interval: the hand-made drift stays until a push.
	c := newCluster(t, clusterConfig{coordinators: 3, agents: nAgents, interval: 10 * time.Minute, agentsCPU: 2})
	g1 := c.push(siteFiles("v1", 2), false)
	c.waitConverged(g1, 90*time.Second, c.agents...)
	t.Logf("%d agents converged on generation %d %v after start", nAgents, g1, time.Since(start).Round(time.Millisecond))

	drifted := c.agents[6]
	if err := os.WriteFile(filepath.Join(drifted.root, filePath(1)), []byte("edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Plan v2 of file 0 (a few times, for the round-trip figures).
	site2 := c.writeSite("site2.yaml", strings.Replace(siteFiles("v1", 2), "version v1 file 0", "version v2 file 0", 1))
	var p planOut
	var walls, servers []time.Duration
	for i := 0; i < 5; i++ {
		var wall time.Duration
		p, wall = c.plan(site2)
		walls = append(walls, wall)
		servers = append(servers, time.Duration(p.ElapsedMS)*time.Millisecond)
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	sort.Slice(servers, func(i, j int) bool { return servers[i] < servers[j] })
	t.Logf("plan round trip, %d agents, 5 plans: hivectl wall min %v median %v max %v; plan call min %v median %v max %v (load %s)",
		nAgents, walls[0].Round(time.Millisecond), walls[2].Round(time.Millisecond), walls[4].Round(time.Millisecond),
		servers[0], servers[2], servers[4], loadAvg())
	if p.BaseGeneration != g1 || p.Totals.Nodes != nAgents || p.Totals.WithChanges != nAgents || p.Totals.Unchanged != 0 {
		t.Fatalf("plan: %s", dump(p))
	}
	planned := map[string][]string{}
	for _, n := range p.Nodes {
		if n.State != "changes" {
			t.Errorf("%s: plan state %q", n.Name, n.State)
		}
		for _, ch := range n.Changes {
			planned[n.Name] = append(planned[n.Name], ch.Key)
			// The drifted file is drift, the file the site changes a change.
			if wantCause := map[string]string{"file:" + filePath(0): "change", "file:" + filePath(1): "drift"}[ch.Key]; ch.Cause != wantCause {
				t.Errorf("%s: %s cause %q, want %q", n.Name, ch.Key, ch.Cause, wantCause)
			}
		}
		sort.Strings(planned[n.Name])
	}
	want := []string{"file:" + filePath(0)}
	for _, a := range c.agents {
		w := want
		if a == drifted {
			w = []string{"file:" + filePath(0), "file:" + filePath(1)}
		}
		if !slices.Equal(planned[a.name], w) {
			t.Errorf("%s: planned %v, want %v", a.name, planned[a.name], w)
		}
	}
	// The plan changed nothing.
	if drifted.readFile(filePath(1)) != "edited by hand\n" || !c.agents[0].hasVersion("v1", 2) {
		t.Fatal("the plan changed a machine")
	}
	// A second plan, to be pushed after the base moved.
	site3Text := strings.Replace(siteFiles("v1", 2), "version v1 file 1", "version v3 file 1", 1)
	site3 := c.writeSite("site3.yaml", site3Text)
	stalePlan, _ := c.plan(site3)

	// push --plan: the reports show exactly the planned changes.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := c.ctl(ctx, "push", "--plan", p.ID, "-m", "planned v2", "-o", "json")
	if err != nil {
		t.Fatalf("push --plan: %v\n%s", err, out)
	}
	g2, err := pushGeneration(out)
	if err != nil || g2 != g1+1 {
		t.Fatalf("push --plan: generation %d, %v", g2, err)
	}
	c.waitConverged(g2, 90*time.Second, c.agents...)
	for _, a := range c.agents {
		out, err := c.ctl(ctx, "status", a.name, "-o", "json")
		if err != nil {
			t.Fatalf("status %s: %v", a.name, err)
		}
		var s struct {
			Nodes []struct {
				Results []struct {
					Key     string `json:"key"`
					Outcome string `json:"outcome"`
				} `json:"results"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal(out, &s); err != nil || len(s.Nodes) != 1 {
			t.Fatalf("status %s: %v %s", a.name, err, out)
		}
		var changed []string
		for _, r := range s.Nodes[0].Results {
			if r.Outcome == "changed" {
				changed = append(changed, r.Key)
			}
		}
		sort.Strings(changed)
		if !slices.Equal(changed, planned[a.name]) {
			t.Errorf("%s: push changed %v, plan showed %v", a.name, changed, planned[a.name])
		}
	}
	if drifted.readFile(filePath(1)) != fileContent("v1", 1) || !drifted.hasVersion("v2", 1) {
		t.Errorf("drifted node after the push: %q", drifted.readFile(filePath(1)))
	}

	// The second plan's base moved.
	out, err = c.ctl(ctx, "push", "--plan", stalePlan.ID)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("was made on generation %d, but generation %d is current", g1, g2)) ||
		!strings.Contains(err.Error(), fmt.Sprintf("generation %d pushed by admin at ", g2)) || !strings.Contains(err.Error(), `planned v2`) {
		t.Fatalf("push of a stale plan: %v\n%s", err, out)
	}

	// Lost update: pull, someone else pushes, push of the edited file.
	pulled := filepath.Join(c.dir, "pulled.yaml")
	if out, err := c.ctl(ctx, "pull", "--out", pulled); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	g3 := c.push(site3Text, false)
	text, err := os.ReadFile(pulled)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(text), "version v2 file 0", "version v4 file 0", 1)
	if edited == string(text) {
		t.Fatalf("pulled file lacks the content of generation %d:\n%s", g3, text)
	}
	if err := os.WriteFile(pulled, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.ctl(ctx, "push", pulled, "-m", "mine")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("was pulled from generation %d, but generation %d is current", g2, g3)) ||
		!strings.Contains(err.Error(), fmt.Sprintf("generation %d pushed by admin at ", g3)) || !strings.Contains(err.Error(), `"netlab"`) {
		t.Fatalf("push of a stale pulled file: %v", err)
	}
	out, err = c.ctl(ctx, "push", pulled, "-m", "mine", "--force", "-o", "json")
	if err != nil {
		t.Fatalf("forced push: %v\n%s", err, out)
	}
	if g4, err := pushGeneration(out); err != nil || g4 != g3+1 {
		t.Fatalf("forced push: generation %d, %v", g4, err)
	}
	t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
}
