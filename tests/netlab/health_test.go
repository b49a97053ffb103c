package netlabtests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The test binary doubles as a small web service inside an agent's
// namespace: NETLAB_HELPER=healthsrv serves NETLAB_LISTEN, answering 200
// "ok" while the file NETLAB_FAIL_FILE does not exist and 500 once it does.
func init() {
	if os.Getenv("NETLAB_HELPER") == "healthsrv" {
		os.Exit(healthServer())
	}
}

func healthServer() int {
	fail := os.Getenv("NETLAB_FAIL_FILE")
	err := http.ListenAndServe(os.Getenv("NETLAB_LISTEN"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := os.Stat(fail); err == nil {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	fmt.Fprintln(os.Stderr, err)
	return 1
}

// healthSite is a site whose role web has a managed file (content v) and
// an http check of the agent's service at addr, every second, failing
// after two failures.
func healthSite(v, addr string) string {
	return fmt.Sprintf(`site: netlab
selectors:
  - match: {tier: web}
    roles: [web]
roles:
  web:
    files:
      - path: /etc/netlab/app.conf
        content: "version %s\n"
    checks:
      - name: home
        http: {url: "http://%s/", status: 200, body: "^ok"}
        interval: 1s
        timeout: 500ms
        failures: 2
`, v, addr)
}

// healthNode is the part of `hivectl status NODE -o json` these
// scenarios read.
type healthNode struct {
	Health      string     `json:"health"`
	HealthSince *time.Time `json:"health_since"`
	Checks      []struct {
		Name     string     `json:"name"`
		Passing  bool       `json:"passing"`
		Failures int        `json:"failures"`
		Message  string     `json:"message"`
		Time     *time.Time `json:"time"`
	} `json:"checks"`
	Results []struct {
		Key     string `json:"key"`
		Outcome string `json:"outcome"`
		Cause   string `json:"cause"`
	} `json:"results"`
}

func (c *cluster) healthOf(name string) (*healthNode, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.ctl(ctx, "status", name, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("status: %w: %s", err, out)
	}
	var s struct {
		Nodes []healthNode `json:"nodes"`
	}
	if err := json.Unmarshal(out, &s); err != nil || len(s.Nodes) != 1 {
		return nil, fmt.Errorf("decode status: %v: %s", err, out)
	}
	return &s.Nodes[0], nil
}

type driftOut struct {
	Repairs []struct {
		Node       string `json:"node"`
		Key        string `json:"key"`
		Generation uint64 `json:"generation"`
	} `json:"repairs"`
}

func (c *cluster) drift(args ...string) driftOut {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.ctl(ctx, append([]string{"drift", "-o", "json"}, args...)...)
	var d driftOut
	if err != nil || json.Unmarshal(out, &d) != nil {
		c.t.Fatalf("hivectl drift: %v: %s", err, out)
	}
	return d
}

// An agent runs its role's http check against a service in its own
// namespace: passing, and once the service answers 500 the coordinators'
// status shows the node FAILING within seconds (the agent reports the
// change at once, not with its next run). A file changed by hand and put
// back is listed by `hivectl drift`; a change a push makes is not.
func TestHealthCheckAndDrift(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 1, interval: 2 * time.Second})
	a := c.agents[0]
	addr := a.host.Addr + ":8080"
	failFile := filepath.Join(c.dir, "service-broken")
	a.host.StartEnv("healthsrv", []string{"NETLAB_HELPER=healthsrv", "NETLAB_LISTEN=" + addr, "NETLAB_FAIL_FILE=" + failFile}, os.Args[0])

	g1 := c.push(healthSite("1", addr), true)
	c.waitConverged(g1, 30*time.Second, a)
	var last *healthNode
	var lastErr error
	if !poll(15*time.Second, func() bool {
		last, lastErr = c.healthOf(a.name)
		return lastErr == nil && last.Health == "passing" && len(last.Checks) == 1 && last.Checks[0].Name == "web/home"
	}) {
		t.Fatalf("check never passing: %s %v", dump(last), lastErr)
	}
	passingSince := *last.HealthSince

	// The service breaks. With a 1s interval and 2 failures the check
	// counts as failing 1-2s later; the status must follow within ~2s.
	broke := time.Now()
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if !poll(10*time.Second, func() bool {
		last, lastErr = c.healthOf(a.name)
		return lastErr == nil && last.Health == "failing"
	}) {
		t.Fatalf("status never failing: %s %v", dump(last), lastErr)
	}
	seen := time.Now()
	ch := last.Checks[0]
	if ch.Passing || ch.Failures < 2 || ch.Message == "" || !last.HealthSince.After(passingSince) {
		t.Fatalf("failing check: %s", dump(last))
	}
	// ch.Time is when the agent ran the check that made it count.
	t.Logf("service broke → status FAILING: %v; check counted failing → status: %v (message %q)",
		seen.Sub(broke).Round(time.Millisecond), seen.Sub(*ch.Time).Round(time.Millisecond), ch.Message)
	if d := seen.Sub(broke); d > 6*time.Second {
		t.Errorf("status showed the failure %v after the service broke; want within ~4s (2 × 1s interval + report)", d)
	}
	if d := seen.Sub(*ch.Time); d > 3*time.Second {
		t.Errorf("status showed the failing check %v after it counted; want within ~2s", d)
	}
	// Healed: passing again.
	if err := os.Remove(failFile); err != nil {
		t.Fatal(err)
	}
	if !poll(10*time.Second, func() bool {
		last, lastErr = c.healthOf(a.name)
		return lastErr == nil && last.Health == "passing"
	}) {
		t.Fatalf("status never passing again: %s %v", dump(last), lastErr)
	}

	// Drift: the managed file edited by hand is put back by the next
	// interval run, and recorded as drift.
	conf := filepath.Join(a.root, "/etc/netlab/app.conf")
	if err := os.WriteFile(conf, []byte("edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var d driftOut
	if !poll(15*time.Second, func() bool {
		d = c.drift("--node", a.name)
		return len(d.Repairs) == 1
	}) {
		t.Fatalf("drift repair not listed: %s (file now %q)", dump(d), a.readFile("/etc/netlab/app.conf"))
	}
	if r := d.Repairs[0]; r.Key != "file:/etc/netlab/app.conf" || r.Node != a.name || r.Generation != g1 {
		t.Fatalf("drift repair = %s", dump(r))
	}
	if got := a.readFile("/etc/netlab/app.conf"); got != "version 1\n" {
		t.Fatalf("file not put back: %q", got)
	}

	// A site change is a change, not drift.
	g2 := c.push(healthSite("2", addr), true)
	c.waitConverged(g2, 30*time.Second, a)
	n, err := c.healthOf(a.name)
	if err != nil {
		t.Fatal(err)
	}
	// (A drift-check run may already have replaced the push's results
	// with "ok" ones.)
	for _, r := range n.Results {
		if r.Key == "file:/etc/netlab/app.conf" && r.Outcome == "changed" && r.Cause != "change" {
			t.Fatalf("pushed change reported with cause %q", r.Cause)
		}
	}
	time.Sleep(3 * time.Second) // a drift-check run or two
	if d := c.drift(); len(d.Repairs) != 1 {
		t.Fatalf("after a push, drift lists %s; want only the hand edit", dump(d))
	}
}
