package load

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

// TestLoadSmall runs hive-load's engine for a few seconds against three
// real hive-coordinator processes (TLS, raft on disk, gossip) on
// 127.0.0.1: 50 simulated agents, each with its own certificate and
// connection, three pushes, two plans every agent answers, and ten
// reports each over its ReportStream, four in flight. The figures must be sane
// and there must be no error, so that the tool does not rot.
func TestLoadSmall(t *testing.T) {
	testenv.SkipShort(t)
	bin := netlab.Build(t, "hive-coordinator")["hive-coordinator"]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := StartCluster(ctx, ClusterOptions{Bin: bin, Dir: t.TempDir(), N: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	var log bytes.Buffer
	cfg := Config{
		Addrs: c.Addrs, CA: c.CA, Agents: 50, LB: 5, Prefix: "t",
		Pushes: 3, PushTimeout: 30 * time.Second,
		Plans: 2, PlanTimeout: 20 * time.Second,
		ReportsPerAgent: 10, ReportDuration: 30 * time.Second, Results: 5, ReportInflight: 4,
		Log: &log,
	}
	for i, p := range c.PIDs() {
		cfg.Coordinators = append(cfg.Coordinators, Target{PID: p})
		if i == 0 {
			cfg.Coordinators = append(cfg.Coordinators, Target{Metrics: c.HTTP[i]})
		}
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	var out strings.Builder
	res.Print(&out)
	t.Logf("\n%s%s", log.String(), out.String())
	if n := res.Errors(); n != 0 {
		t.Fatalf("%d errors", n)
	}
	if len(res.PerPush) != 3 || res.Delivery.N != 3*50 {
		t.Errorf("deliveries: %d pushes, %d deliveries; want 3 and 150", len(res.PerPush), res.Delivery.N)
	}
	if d := res.Delivery; d.P50 <= 0 || d.P50 > d.P99 || d.P99 > d.Max || d.Max > 30*time.Second {
		t.Errorf("delivery percentiles not sane: %s", d)
	}
	if res.PushAck.N != 3 || res.PushAck.P50 <= 0 {
		t.Errorf("push acknowledgements: %s", res.PushAck)
	}
	if p := res.PlanRTT; p.N != 2 || p.P50 <= 0 || p.Max > 20*time.Second {
		t.Errorf("plan round trips: %s", p)
	}
	if res.Reports != 500 || res.ReportsPerSec <= 0 || res.ReportLatency.N != 500 {
		t.Errorf("reports: %d committed at %.0f/s (latency n=%d); want 500", res.Reports, res.ReportsPerSec, res.ReportLatency.N)
	}
	if res.Client.CPU <= 0 || res.Client.RSS <= 0 {
		t.Errorf("client usage not measured: %+v", res.Client)
	}
	if len(res.Coordinators) != 4 {
		t.Fatalf("%d coordinator usages, want 4 (3 pids, 1 /metrics)", len(res.Coordinators))
	}
	for _, u := range res.Coordinators {
		if u.Err != nil || u.RSS < 1<<20 {
			t.Errorf("coordinator %s: RSS %d, %v", u.Name, u.RSS, u.Err)
		}
	}
	for _, want := range []string{"push → watchers:", "reports/s with 50 streams open (stream, 4 in flight per agent)", "report CPU each:   ", "errors:            none", "per 1,000 nodes", "plan round trip:   "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	m, err := parseMetrics(strings.NewReader("# HELP x\nprocess_resident_memory_bytes 1.2345e+07\nfoo{a=\"b\"} 3\nprocess_cpu_seconds_total 1.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m["process_resident_memory_bytes"] != 12345000 || m["process_cpu_seconds_total"] != 1.5 || len(m) != 2 {
		t.Errorf("parsed %v", m)
	}
}
