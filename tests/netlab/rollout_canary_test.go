package netlabtests

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as a web service inside an agent's namespace:
// NETLAB_HELPER=httpstatus answers every request on NETLAB_LISTEN with
// status NETLAB_STATUS.
func init() {
	if os.Getenv("NETLAB_HELPER") == "httpstatus" {
		code, _ := strconv.Atoi(os.Getenv("NETLAB_STATUS"))
		err := http.ListenAndServe(os.Getenv("NETLAB_LISTEN"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			fmt.Fprintf(w, "status %d\n", code)
		}))
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

// checkedSite is siteFiles with an http check on every web node: its
// service on 127.0.0.1:8099 must answer 200.
func checkedSite(v string, n int) string {
	return strings.Replace(siteFiles(v, n), "  web:\n", "  web:\n    checks:\n      - name: home\n        http: {url: \"http://127.0.0.1:8099/\", status: 200}\n        interval: 1s\n        timeout: 1s\n        failures: 1\n", 1)
}

// TestRolloutCanaryHealthCheck (issue 14): a push with canary: 1 whose http
// check fails on the canary (its service answers 500) never reaches the
// other nodes: the rollout pauses. With on_failure: rollback the canary is
// back on the previous generation within seconds.
func TestRolloutCanaryHealthCheck(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 3})
	const files = 1
	for i, a := range c.agents {
		status := "200"
		if i == 0 {
			status = "500" // a1, the first by name: the canary
		}
		a.host.StartEnv("web", []string{"NETLAB_HELPER=httpstatus", "NETLAB_LISTEN=127.0.0.1:8099", "NETLAB_STATUS=" + status}, os.Args[0])
	}
	g1 := c.push(siteFiles("1", files), true)
	c.waitConverged(g1, 60*time.Second, c.agents...)

	out, err := c.pushFlags(checkedSite("2", files), "--canary", "1", "--wait", "--timeout", "60s")
	// hivectl's progress and verdict are in err (its stderr).
	if err == nil || !strings.Contains(err.Error(), "rollout of generation") || !strings.Contains(err.Error(), "paused") || !strings.Contains(err.Error(), "health failing") {
		t.Fatalf("push with a failing canary: %v\n%s", err, out)
	}
	r := c.waitRollout(10*time.Second, "paused", func(r *rolloutState) bool { return r.State == "paused" })
	if !strings.HasPrefix(r.Reason, c.agents[0].name+": health failing") {
		t.Fatalf("reason %q", r.Reason)
	}
	for _, a := range c.agents[1:] {
		if !a.hasVersion("1", files) {
			t.Errorf("%s left generation %d's files although the canary failed", a.name, g1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := c.ctl(ctx, "rollout", "abort", "--reason", "canary answers 500"); err != nil {
		t.Fatalf("abort: %v\n%s", err, out)
	}
	c.waitFiles(c.agents[0], "1", files, 20*time.Second)

	// on_failure: rollback: the canary goes back by itself.
	pushed := time.Now()
	out, err = c.pushFlags(checkedSite("3", files), "--canary", "1", "--on-failure", "rollback", "--wait", "--timeout", "60s")
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "health failing on generation") {
		t.Fatalf("push with on_failure rollback: %v\n%s", err, out)
	}
	c.waitFiles(c.agents[0], "1", files, 20*time.Second)
	t.Logf("canary back on the previous generation's files %v after the push", time.Since(pushed).Round(time.Millisecond))
	for _, a := range c.agents[1:] {
		if !a.hasVersion("1", files) {
			t.Errorf("%s got generation 3's files", a.name)
		}
	}
}
