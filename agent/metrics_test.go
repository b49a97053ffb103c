package agent_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	return string(b)
}

// TestAgentMetrics scrapes a running agent: a failed startup run and its
// successful retry are counted by trigger and result, with durations,
// resource outcomes, the applied generation; the watch gauge follows a
// real --dev coordinator's stream.
func TestAgentMetrics(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{failFirst: 1}
	cfg := testConfig(t, dir)
	coord := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	cfg.Coordinators = []string{coord.srv.GRPCAddr()}
	cfg.MetricsAddr = "127.0.0.1:0"
	a, stop := startAgent(t, cfg, eng, testState(3, "/etc/a", "/etc/b"))
	if a.MetricsAddr() == "" {
		t.Fatal("no metrics address")
	}
	wantLines := []string{
		`hive_agent_runs_total{result="failed",trigger="startup"} 1`,
		`hive_agent_runs_total{result="converged",trigger="retry"} 1`,
		`hive_agent_resources_total{outcome="failed"} 2`,
		`hive_agent_resources_total{outcome="ok"} 2`,
		`hive_agent_run_duration_seconds_count{result="converged"} 1`,
		`hive_agent_applied_generation 3`,
		`hive_agent_watch_connected 1`,
	}
	var body string
	waitFor(t, "metrics of two runs and a watch", 10*time.Second, func() bool {
		body = scrape(t, a.MetricsAddr())
		for _, l := range wantLines {
			if !strings.Contains(body, l+"\n") {
				return false
			}
		}
		return true
	})
	if !strings.Contains(body, "hive_agent_info{version=") || !strings.Contains(body, "hive_agent_last_run_timestamp_seconds{result=\"converged\"}") {
		t.Fatalf("metrics:\n%s", body)
	}
	coord.stop()
	waitFor(t, "watch gauge down", 10*time.Second, func() bool {
		return strings.Contains(scrape(t, a.MetricsAddr()), "hive_agent_watch_connected 0\n")
	})
	stop()
	if _, err := http.Get("http://" + a.MetricsAddr() + "/metrics"); err == nil {
		t.Fatal("metrics still served after stop")
	}
}

// TestMetricsAddrLoopbackOnly: a non-loopback or every-interface metrics
// address is refused unless remote access is allowed.
func TestMetricsAddrLoopbackOnly(t *testing.T) {
	for _, c := range []struct {
		addr   string
		remote bool
		want   string
	}{
		{"127.0.0.1:9464", false, ""},
		{"[::1]:9464", false, ""},
		{"localhost:9464", false, ""},
		{"0.0.0.0:9464", false, "not a loopback"},
		{":9464", false, "every interface"},
		{"10.0.0.5:9464", false, "not a loopback"},
		{"10.0.0.5:9464", true, ""},
		{"9464", false, "HOST:PORT"},
		{"example.com:9464", true, "IP address or localhost"},
	} {
		cfg := testConfig(t, t.TempDir())
		cfg.MetricsAddr, cfg.MetricsAllowRemote = c.addr, c.remote
		err := cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s (remote %v): %v, want %q", c.addr, c.remote, err, c.want)
		}
	}
}
