package netlabtests

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkPushToAllConverged pushes a new generation to a site of
// NETLAB_BENCH_AGENTS (default 50) real agent processes, each on its own
// namespace, served by NETLAB_BENCH_COORDINATORS (default 3) coordinators,
// all with mutual TLS and encrypted gossip. One op is one push, timed from
// the start of `hivectl push --wait` (process start and TLS handshake
// included). Figures:
//
//   - file-p50-ms / file-p99-ms: until an agent's file holds the new
//     content (polled every 5ms, every N/10 ms for N > 50 agents), over
//     every agent and push;
//   - conv-p50-ms / conv-p99-ms: until an agent's run finished (its report's
//     finish time, as `hivectl status` shows it), over every agent and push;
//   - all-p50-ms / all-p99-ms: push-to-all-converged, until the last agent's
//     run finished, over the pushes;
//   - wait-p50-ms: until `hivectl push --wait` returned (it polls status, so
//     this is the operator's view, coarser).
//
// Run: make bench, or alone (root):
//
//	go test -run '^$' -bench PushToAllConverged -benchtime 10x ./tests/netlab/
func BenchmarkPushToAllConverged(b *testing.B) {
	if b.N == 1 && benchCount() > 1 {
		// The testing package runs every benchmark once with N=1 before
		// the requested -benchtime Nx: skip that run, which would build
		// and tear down a whole fleet for nothing.
		return
	}
	nAgents := envInt("NETLAB_BENCH_AGENTS", 50)
	if d := envDuration("NETLAB_BENCH_SAMPLE", 0); d > 0 {
		stop := sampleCPU(b, d)
		defer stop()
	}
	setup := time.Now()
	c := newCluster(b, clusterConfig{
		coordinators: envInt("NETLAB_BENCH_COORDINATORS", 3), agents: nAgents, interval: 5 * time.Minute,
		agentsCPU: envInt("NETLAB_BENCH_AGENTS_CPU", 2), startRate: envInt("NETLAB_BENCH_START_RATE", 25),
		coordsCPU:       envInt("NETLAB_BENCH_COORDINATORS_CPU", 8),
		harnessCPU:      envInt("NETLAB_BENCH_HARNESS_CPU", 8),
		agentsIdle:      os.Getenv("NETLAB_BENCH_AGENTS_IDLE") == "1",
		agentFlags:      strings.Fields(os.Getenv("NETLAB_BENCH_AGENT_FLAGS")),
		coordinatorArgs: strings.Fields(os.Getenv("NETLAB_BENCH_COORDINATOR_FLAGS")),
	})
	c.keepCoordLogs(b)
	b.Logf("%d agents started in %v (load %s); %s", nAgents, time.Since(setup).Round(time.Millisecond), loadAvg(), c.raftEvents())
	// No --wait: agents still joining may take longer than its timeout;
	// waitConverged allows five minutes.
	g := c.push(siteFiles("warm", 1), false)
	c.waitConverged(g, 300*time.Second, c.agents...)
	b.Logf("all converged on the first push %v after setup began (load %s)", time.Since(setup).Round(time.Millisecond), loadAvg())
	pushes0 := c.coordUsage(b)
	ev0 := c.raftEvents()

	// The file poll reads every agent's file not yet updated: 5 ms
	// between rounds for a few agents, longer for hundreds, whose rounds
	// would otherwise take a core from the agents being measured ("all
	// converged" comes from the agents' reports, not from this poll).
	poll := max(5*time.Millisecond, time.Duration(nAgents/10)*time.Millisecond)
	var file, conv, all, wait []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := fmt.Sprintf("b%d", i)
		want := fileContent(v, 0)
		start := time.Now()
		type result struct {
			gen uint64
			err error
		}
		done := make(chan result, 1)
		go func() {
			gen, err := c.pushE(siteFiles(v, 1), true)
			done <- result{gen, err}
		}()
		seen := make([]bool, nAgents)
		left := nAgents
		for left > 0 {
			for j, a := range c.agents {
				if !seen[j] && a.readFile(filePath(0)) == want {
					seen[j] = true
					left--
					file = append(file, ms(time.Since(start)))
				}
			}
			if time.Since(start) > 120*time.Second {
				b.Fatalf("push %d: %d of %d agents never got the file", i, left, nAgents)
			}
			time.Sleep(poll)
		}
		r := <-done
		if r.err != nil {
			b.Fatalf("push %d: %v", i, r.err)
		}
		wait = append(wait, ms(time.Since(start)))
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := c.status(ctx)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		last := 0.0
		for _, a := range c.agents {
			n := s.node(a.name)
			if n == nil || n.AppliedGeneration != r.gen || n.Phase != "converged" || n.LastReport == nil {
				b.Fatalf("push %d: after push --wait, %s is not converged on %d: %s", i, a.name, r.gen, dump(n))
			}
			d := ms(n.LastReport.Sub(start))
			conv = append(conv, d)
			last = max(last, d)
		}
		all = append(all, last)
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(pct(file, 50), "file-p50-ms")
	b.ReportMetric(pct(file, 99), "file-p99-ms")
	b.ReportMetric(pct(conv, 50), "conv-p50-ms")
	b.ReportMetric(pct(conv, 99), "conv-p99-ms")
	b.ReportMetric(pct(all, 50), "all-p50-ms")
	b.ReportMetric(pct(all, 99), "all-p99-ms")
	b.ReportMetric(pct(wait, 50), "wait-p50-ms")
	b.Logf("%d agents, %d coordinators, %d pushes: file on agent p50 %.0f ms p99 %.0f ms; run finished p50 %.0f ms p99 %.0f ms; all converged p50 %.0f ms p99 %.0f ms; push --wait returned p50 %.0f ms p99 %.0f ms (load %s)",
		nAgents, len(c.coords), len(all), pct(file, 50), pct(file, 99), pct(conv, 50), pct(conv, 99), pct(all, 50), pct(all, 99), pct(wait, 50), pct(wait, 99), loadAvg())
	lost := c.countAgentLog("watch stream lost")
	b.ReportMetric(float64(lost), "streams-lost")
	b.Logf("watch streams lost during the run: %d (over %d agents)", lost, nAgents)
	b.Logf("coordinators during the pushes: %s; raft during the pushes: %s", c.coordUsage(b).since(pushes0), c.raftEvents().minus(ev0))

	if d := envDuration("NETLAB_BENCH_IDLE", 20*time.Second); d > 0 {
		c.measureIdle(b, d)
	}
	if os.Getenv("NETLAB_BENCH_RESTART") != "0" {
		c.measureRestartAll(b)
	}
}

// benchCount is N of -test.benchtime Nx (0 when it is a duration).
func benchCount() int {
	f := flag.Lookup("test.benchtime")
	if f == nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSuffix(f.Value.String(), "x"))
	if err != nil || !strings.HasSuffix(f.Value.String(), "x") {
		return 0
	}
	return n
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// loadAvg is the machine's load average (1, 5, 15 minutes).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// countAgentLog counts the agents' log lines holding s, over all lives.
func (c *cluster) countAgentLog(s string) int {
	n := 0
	for _, a := range c.agents {
		n += strings.Count(a.proc.Log(), s)
	}
	return n
}

// procUsage is a process's CPU time so far and memory now.
type procUsage struct {
	cpu            time.Duration // user + system
	rss, pss, anon int64         // kB
	hwm            int64         // peak RSS, kB
}

func readUsage(pid int) (procUsage, error) {
	var u procUsage
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.cpu = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	kb := func(file, key string) int64 {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, key); ok {
				v, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				return v
			}
		}
		return 0
	}
	u.rss, u.pss, u.anon = kb("smaps_rollup", "Rss:"), kb("smaps_rollup", "Pss:"), kb("smaps_rollup", "Anonymous:")
	u.hwm = kb("status", "VmHWM:")
	return u, nil
}

// gossipCounters installs (once) counting rules for gossip traffic in the
// switch namespace's FORWARD chain, through which every packet between two
// hosts passes exactly once, and returns packets and bytes so far: UDP
// (probes, acks, gossip) and TCP (push/pull, joins) to or from the gossip
// port.
func (c *cluster) gossipCounters(tb testing.TB) (pkts, bytes int64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rules := [][]string{
		{"-p", "udp", "--dport", gossipPort},
		{"-p", "tcp", "--dport", gossipPort},
		{"-p", "tcp", "--sport", gossipPort},
	}
	out, err := c.lab.SwitchRun(ctx, "iptables", "-w", "-L", "FORWARD", "-v", "-x", "-n")
	if err != nil {
		tb.Fatal(err)
	}
	if !strings.Contains(string(out), "dpt:"+gossipPort) {
		for _, r := range rules {
			if _, err := c.lab.SwitchRun(ctx, append([]string{"iptables", "-w", "-A", "FORWARD"}, r...)...); err != nil {
				tb.Fatal(err)
			}
		}
		return 0, 0
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(line, "pt:"+gossipPort) {
			continue
		}
		p, _ := strconv.ParseInt(f[0], 10, 64)
		n, _ := strconv.ParseInt(f[1], 10, 64)
		pkts += p
		bytes += n
	}
	return pkts, bytes
}

// measureIdle reports, over an idle window d (no push, agents converged,
// drift checks every 5 minutes): each agent's CPU (mean and p99, % of one
// core), its memory (RSS, PSS: the binary's text is shared by every
// agent, so PSS is what one more agent costs), the coordinators' CPU, and
// gossip traffic per member (packets and bytes per second, both
// directions counted once per packet, divided by the members).
func (c *cluster) measureIdle(b *testing.B, d time.Duration) {
	b.Helper()
	c.gossipCounters(b) // install the rules
	time.Sleep(2 * time.Second)
	read := func(ns []*node) []procUsage {
		out := make([]procUsage, len(ns))
		for i, n := range ns {
			u, err := readUsage(n.proc.Pid())
			if err != nil {
				b.Fatalf("%s: %v", n.name, err)
			}
			out[i] = u
		}
		return out
	}
	g0 := c.coordGoroutines()
	p0, by0 := c.gossipCounters(b)
	a0, c0, t0 := read(c.agents), read(c.coords), time.Now()
	time.Sleep(d)
	p1, by1 := c.gossipCounters(b)
	a1, c1, t1 := read(c.agents), read(c.coords), time.Now()
	b.Logf("coordinators' goroutines at the start of the idle window: %s; at its end: %s", g0, c.coordGoroutines())
	win := t1.Sub(t0).Seconds()
	var cpu, rss, pss, anon []float64
	for i := range a1 {
		cpu = append(cpu, (a1[i].cpu-a0[i].cpu).Seconds()/win*100)
		rss = append(rss, float64(a1[i].rss)/1024)
		pss = append(pss, float64(a1[i].pss)/1024)
		anon = append(anon, float64(a1[i].anon)/1024)
	}
	var ccpu []float64
	for i := range c1 {
		ccpu = append(ccpu, (c1[i].cpu-c0[i].cpu).Seconds()/win*100)
	}
	members := float64(len(c.agents) + len(c.coords))
	pps, bps := float64(p1-p0)/win/members, float64(by1-by0)/win/members
	b.ReportMetric(mean(cpu), "idle-cpu-%-per-agent")
	b.ReportMetric(pct(cpu, 99), "idle-cpu-%-p99")
	b.ReportMetric(mean(rss), "agent-rss-MB")
	b.ReportMetric(mean(pss), "agent-pss-MB")
	b.ReportMetric(pps, "gossip-pkt/s-per-member")
	b.ReportMetric(bps, "gossip-B/s-per-member")
	b.Logf("idle %v at %d members (load %s): agent CPU mean %.3f%% p99 %.3f%% of a core (all agents: %.2f cores); agent RSS mean %.1f MB, PSS %.1f MB, anonymous %.1f MB (all agents PSS: %.0f MB); coordinators CPU %s; gossip per member %.2f packets/s, %.0f bytes/s",
		d, int(members), loadAvg(), mean(cpu), pct(cpu, 99), sum(cpu)/100, mean(rss), mean(pss), mean(anon), sum(pss), fmtPcts(ccpu), pps, bps)
}

// coordGoroutines reads go_goroutines from each coordinator's /metrics
// ("c1 4012, c2 ..."): an idle agent's cost on its coordinator.
func (c *cluster) coordGoroutines() string {
	var parts []string
	for _, co := range c.coords {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := c.admin.Run(ctx, "curl", "-sf", fmt.Sprintf("http://%s:%s/metrics", co.host.Addr, httpPort))
		cancel()
		v := "?"
		if err != nil {
			out = nil
		}
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "go_goroutines" {
				v = f[1]
			}
		}
		parts = append(parts, co.name+" "+v)
	}
	return strings.Join(parts, ", ")
}

// measureRestartAll kills every agent (-9, a power cut), pushes a new
// generation while they are down, starts them all again at once and
// reports how long until every agent reported it converged on it, and
// how many raft elections the coordinators held meanwhile (goal: none).
func (c *cluster) measureRestartAll(b *testing.B) {
	b.Helper()
	elections := func() int {
		n := 0
		for _, co := range c.coords {
			n += strings.Count(co.proc.Log(), "became raft leader")
		}
		return n
	}
	e0 := elections()
	ev0 := c.raftEvents()
	for _, a := range c.agents {
		a.proc.Signal(syscall.SIGKILL)
	}
	for _, a := range c.agents {
		<-a.proc.Done()
	}
	gen := c.push(siteFiles("restart", 1), false)
	profiled := c.profileCoords(b, "restart", 30*time.Second)
	defer profiled()
	start := time.Now()
	for _, a := range c.agents {
		a.proc.Restart()
	}
	started := time.Since(start)
	u0 := c.coordUsage(b)
	defer func() {
		b.Logf("coordinators from the restart on: %s; raft: %s (load %s)", c.coordUsage(b).since(u0), c.raftEvents().minus(ev0), loadAvg())
	}()
	var s *siteStatus
	var last time.Duration
	ok := poll(180*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if s, err = c.status(ctx); err != nil {
			return false
		}
		last = 0
		for _, a := range c.agents {
			n := s.node(a.name)
			if n == nil || n.AppliedGeneration != gen || n.Phase != "converged" || n.LastReport == nil || n.LastReport.Before(start) {
				return false
			}
			last = max(last, n.LastReport.Sub(start))
		}
		return true
	})
	if !ok {
		missing := 0
		if s != nil {
			for _, a := range c.agents {
				if n := s.node(a.name); n == nil || n.AppliedGeneration != gen || n.Phase != "converged" || n.LastReport == nil || n.LastReport.Before(start) {
					missing++
				}
			}
		}
		b.Fatalf("after restarting all %d agents, %d had not converged on generation %d within 180s (load %s)", len(c.agents), missing, gen, loadAvg())
	}
	e := elections() - e0
	var cpu, hwm []float64
	for _, a := range c.agents {
		if u, err := readUsage(a.proc.Pid()); err == nil {
			cpu = append(cpu, float64(u.cpu)/float64(time.Millisecond))
			hwm = append(hwm, float64(u.hwm)/1024)
		}
	}
	b.ReportMetric(mean(cpu), "restart-cpu-ms-per-agent")
	b.Logf("CPU per agent from its start to now (converged, idle): mean %.0f ms, p99 %.0f ms; peak RSS mean %.1f MB, max %.1f MB", mean(cpu), pct(cpu, 99), mean(hwm), pct(hwm, 100))
	b.ReportMetric(last.Seconds(), "restart-all-converged-s")
	b.ReportMetric(float64(e), "restart-elections")
	b.Logf("all %d agents killed and restarted at once (processes started within %v): every agent converged on the new generation %.1f s after the first start; raft elections meanwhile: %d (load %s)",
		len(c.agents), started.Round(time.Millisecond), last.Seconds(), e, loadAvg())
	if e > 0 {
		b.Errorf("the coordinators held %d raft election(s) while %d agents restarted", e, len(c.agents))
	}
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return sum(xs) / float64(len(xs))
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}

func fmtPcts(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.1f%%", x))
	}
	return strings.Join(s, ", ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct is the p-th percentile (nearest rank) of xs.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// coordsUsage is every coordinator's procUsage at one moment.
type coordsUsage struct {
	at time.Time
	u  []procUsage
}

func (c *cluster) coordUsage(b *testing.B) coordsUsage {
	b.Helper()
	cu := coordsUsage{at: time.Now()}
	for _, n := range c.coords {
		u, err := readUsage(n.proc.Pid())
		if err != nil {
			b.Logf("%s: %v", n.name, err)
		}
		cu.u = append(cu.u, u)
	}
	return cu
}

// since formats the coordinators' CPU between then and cu (seconds, and
// the share of one core over the wall time) and each one's peak RSS so far.
func (cu coordsUsage) since(then coordsUsage) string {
	win := cu.at.Sub(then.at).Seconds()
	var parts []string
	total := 0.0
	for i := range cu.u {
		cpu := (cu.u[i].cpu - then.u[i].cpu).Seconds()
		total += cpu
		parts = append(parts, fmt.Sprintf("c%d %.1f s CPU (%.0f%% of a core), peak RSS %.0f MB", i+1, cpu, cpu/win*100, float64(cu.u[i].hwm)/1024))
	}
	return fmt.Sprintf("%.1f s wall, %.1f s CPU in all (%.2f cores): %s", win, total, total/win, strings.Join(parts, "; "))
}

// raftCounts are raft's own log lines, counted over every coordinator's
// log: an election begun (a follower's heartbeat timeout or a lost
// election), a leader stepping down for want of a quorum within its lease,
// and a leader elected.
type raftCounts struct{ candidate, stepDown, leader int }

func (c *cluster) raftEvents() raftCounts {
	var r raftCounts
	for _, co := range c.coords {
		l := co.proc.Log()
		r.candidate += strings.Count(l, "entering candidate state")
		r.stepDown += strings.Count(l, "failed to contact quorum of nodes")
		r.leader += strings.Count(l, "entering leader state")
	}
	return r
}

func (r raftCounts) minus(o raftCounts) raftCounts {
	return raftCounts{r.candidate - o.candidate, r.stepDown - o.stepDown, r.leader - o.leader}
}

func (r raftCounts) String() string {
	return fmt.Sprintf("%d candidate states entered, %d leader step-downs (no quorum), %d leaders elected", r.candidate, r.stepDown, r.leader)
}

// keepCoordLogs copies the coordinators' logs to NETLAB_BENCH_LOGDIR (if
// set) when the benchmark ends, pass or fail: the lab's own directory is
// removed with it.
func (c *cluster) keepCoordLogs(b *testing.B) {
	dir := os.Getenv("NETLAB_BENCH_LOGDIR")
	if dir == "" {
		return
	}
	b.Cleanup(func() {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Log(err)
			return
		}
		for _, co := range c.coords {
			if err := os.WriteFile(filepath.Join(dir, co.name+".log"), []byte(co.proc.Log()), 0o644); err != nil {
				b.Log(err)
			}
		}
	})
}

// sampleCPU logs, every d until the returned stop is called, the CPU
// used over the last d by every hive-agent process together, by each
// hive-coordinator process (by pid; with the time its threads waited for
// a CPU, in threads waiting on average) and by everything else on the
// machine, in cores, with the load average: where the machine's time goes
// while the fleet starts, pushes and restarts. It scans /proc, so it sees
// the set-up too; a process that ended within a window is not counted.
func sampleCPU(b *testing.B, d time.Duration) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	type snap struct {
		at    time.Time
		procs map[int]time.Duration // pid → CPU so far
		delay map[int]time.Duration // coordinators: pid → time its threads waited for a CPU so far
		comm  map[int]string
		total time.Duration // the machine's busy time (/proc/stat)
	}
	take := func() snap {
		s := snap{at: time.Now(), procs: map[int]time.Duration{}, delay: map[int]time.Duration{}, comm: map[int]string{}}
		if data, err := os.ReadFile("/proc/stat"); err == nil {
			f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
			for i, v := range f[1:] {
				if i == 3 || i == 4 { // idle, iowait
					continue
				}
				n, _ := strconv.ParseInt(v, 10, 64)
				s.total += time.Duration(n) * 10 * time.Millisecond
			}
		}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if err != nil {
				continue
			}
			name := strings.TrimSpace(string(comm))
			if name != "hive-agent" && !strings.HasPrefix(name, "hive-coordinat") { // comm: 15 bytes
				continue
			}
			if u, err := readUsage(pid); err == nil {
				s.procs[pid], s.comm[pid] = u.cpu, name
			}
			if name != "hive-agent" {
				s.delay[pid] = runDelay(pid)
			}
		}
		return s
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(d)
		defer t.Stop()
		prev := take()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			cur := take()
			win := cur.at.Sub(prev.at).Seconds()
			var agents, coords time.Duration
			var cs []string
			var pids []int
			for pid := range cur.procs {
				pids = append(pids, pid)
			}
			slices.Sort(pids)
			nAgents := 0
			for _, pid := range pids {
				delta := cur.procs[pid] - prev.procs[pid] // a new process: all of it
				if cur.comm[pid] == "hive-agent" {
					agents += delta
					nAgents++
					continue
				}
				coords += delta
				cs = append(cs, fmt.Sprintf("%.2f (waited %.2f)", delta.Seconds()/win, (cur.delay[pid]-prev.delay[pid]).Seconds()/win))
			}
			other := (cur.total - prev.total) - agents - coords
			b.Logf("sample: %d agents %.2f cores, coordinators %s cores, rest %.2f cores (load %s)", nAgents, agents.Seconds()/win, strings.Join(cs, " "), max(0, other.Seconds()/win), loadAvg())
			prev = cur
		}
	}()
	return func() { close(done); <-finished }
}

// runDelay is the time pid's threads spent runnable but waiting for a CPU
// (the second field of /proc/PID/task/TID/schedstat), summed: the kernel's
// own measure of how long the scheduler kept a process from running.
func runDelay(pid int) time.Duration {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var sum time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) >= 2 {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			sum += time.Duration(n)
		}
	}
	return sum
}

// profileCoords fetches a CPU profile of length d from every coordinator
// (started with --pprof) into NETLAB_BENCH_PROFILE_DIR/NAME-what.pprof, in
// the background; wait returns once they are written. Without the
// variable it does nothing.
func (c *cluster) profileCoords(b *testing.B, what string, d time.Duration) (wait func()) {
	dir := os.Getenv("NETLAB_BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Log(err)
		return func() {}
	}
	done := make(chan struct{}, len(c.coords))
	for _, co := range c.coords {
		go func() {
			defer func() { done <- struct{}{} }()
			ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
			defer cancel()
			out := filepath.Join(dir, co.name+"-"+what+".pprof")
			url := fmt.Sprintf("http://%s:%s/debug/pprof/profile?seconds=%d", co.host.Addr, httpPort, int(d.Seconds()))
			if _, err := c.admin.Run(ctx, "curl", "-sf", "-o", out, url); err != nil {
				b.Logf("profile of %s: %v", co.name, err)
			}
		}()
	}
	return func() {
		for range c.coords {
			<-done
		}
	}
}
