package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/internal/netlab"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// BenchmarkAgentIdle runs the real hive-agent binary with a 100-resource
// state (100 files under a sandbox root), converged, in a gossip pool with
// one other member and watching a --dev coordinator, then measures its
// resident memory and CPU over an idle window. Targets (issue 4): RSS under
// 30 MB, CPU under 0.5% of one core.
func BenchmarkAgentIdle(b *testing.B) {
	window := 10 * time.Second
	if s := os.Getenv("HIVE_IDLE_WINDOW"); s != "" {
		window, _ = time.ParseDuration(s)
	}
	bin := netlab.Build(b, "hive-agent")["hive-agent"]
	b.Cleanup(netlab.CleanupBuilds)
	co := startCoordinator(b, b.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	addr := co.srv.GRPCAddr()

	var sb strings.Builder
	sb.WriteString("site: idle\nselectors:\n  - roles: [base]\nroles:\n  base:\n    files:\n")
	for i := range 100 {
		fmt.Fprintf(&sb, "      - path: /etc/idle/f%03d.conf\n        content: \"value = %d\\n\"\n", i, i)
	}
	s, err := site.Parse("idle.yaml", []byte(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	resp, err := conn.Push(ctx, &hivev1.PushRequest{Site: s, Force: true})
	if err != nil {
		b.Fatal(err)
	}

	gc := gossip.DefaultConfig()
	gc.Name, gc.BindAddr = "peer", "127.0.0.1:0"
	peer, err := gossip.New(gc)
	if err != nil {
		b.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	go peer.Run(pctx)

	dir := b.TempDir()
	cmd := exec.Command(bin, "--name", "idle-1", "--dev", "--data-dir", filepath.Join(dir, "data"), "--root", filepath.Join(dir, "root"),
		"--gossip-addr", "127.0.0.1:0", "--join", peer.LocalAddr(), "--coordinator", addr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for {
		st := nodeStatus(b, addr, "idle-1")
		if st.GetAppliedGeneration() == resp.GetGeneration() && st.GetPhase() == hivev1.Phase_PHASE_CONVERGED && st.GetResources().GetTotal() == 100 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent did not converge: %v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // let start-up garbage be collected
	pid := cmd.Process.Pid
	cpu0, t0 := cpuTicks(b, pid), time.Now()
	b.ResetTimer()
	time.Sleep(window)
	cpu1, t1 := cpuTicks(b, pid), time.Now()
	b.StopTimer()
	rss, hwm := procKB(b, pid, "VmRSS:"), procKB(b, pid, "VmHWM:")
	cpuPct := float64(cpu1-cpu0) / 100 / t1.Sub(t0).Seconds() * 100 // 100 ticks per second
	b.ReportMetric(float64(rss)/1024, "rss-MB")
	b.ReportMetric(float64(hwm)/1024, "peak-rss-MB")
	b.ReportMetric(cpuPct, "cpu-%")
	fmt.Printf("hive-agent idle with 100 resources over %v: RSS %.1f MB (peak %.1f MB), CPU %.3f%% of one core\n",
		window, float64(rss)/1024, float64(hwm)/1024, cpuPct)
}

// cpuTicks returns utime+stime of pid in clock ticks.
func cpuTicks(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

func procKB(b *testing.B, pid int, key string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	b.Fatalf("%s not in /proc/%d/status", key, pid)
	return 0
}
