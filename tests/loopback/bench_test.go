package loopback

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/site"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkPushCost measures a push's own cost as an operator meets it:
// `hivectl push` and `hivectl history`, each a fresh process, alternately
// HIVE_BENCH_RUNS times (default 40) against 3 TLS coordinators on
// loopback, through the leader and through a follower (the first --addr).
// It prints the p50 of each and their difference: what the push adds to
// a command that reads (its consistent base read, validation on both
// ends, the raft commit, the answer after the local apply). Run it with
// -benchtime=1x.
func BenchmarkPushCost(b *testing.B) {
	runs := envInt("HIVE_BENCH_RUNS", 40)
	c := newLBCluster(b, 3)
	leader := c.waitHealthy(30 * time.Second)
	var follower *coord
	for _, co := range c.coords {
		if co != leader {
			follower = co
			break
		}
	}
	dir := b.TempDir()
	var ctlCPU time.Duration // hivectl runs' CPU time
	var ctlPeak int64        // and their largest peak RSS
	run := func(args []string) time.Duration {
		start := time.Now()
		cmd := exec.Command(c.bin["hivectl"], args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("hivectl %v: %v\n%s", args, err, out)
		}
		d := time.Since(start)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			ctlCPU += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			ctlPeak = max(ctlPeak, ru.Maxrss<<10)
		}
		return d
	}
	for i := 0; i < b.N; i++ {
		for _, via := range []struct {
			name string
			co   *coord
		}{{"leader", leader}, {"follower", follower}} {
			addrs := c.addrs(via.co)
			var push, hist []time.Duration
			ctlCPU, ctlPeak = 0, 0
			lcpu0 := procCPU(leader.cmd.Process.Pid)
			for r := 0; r < runs; r++ {
				f := filepath.Join(dir, fmt.Sprintf("site-%s-%d-%d.yaml", via.name, i, r))
				if err := os.WriteFile(f, []byte(siteYAML(fmt.Sprintf("%s-%d-%d", via.name, i, r))), 0o644); err != nil {
					b.Fatal(err)
				}
				hist = append(hist, run(c.ctlArgs(addrs, "history", "-n", "1")))
				push = append(push, run(c.ctlArgs(addrs, "push", f, "-m", "bench")))
			}
			lcpu1 := procCPU(leader.cmd.Process.Pid)
			p50p, p50h := pct(push, 0.5), pct(hist, 0.5)
			b.Logf("via %s, %d runs each: push p50 %.1f ms (p90 %.1f), history p50 %.1f ms (p90 %.1f): a push's own cost %.1f ms; hivectl CPU %.1f ms a run, peak RSS %.0f MiB; leader CPU %.1f ms a push+history; load average %s",
				via.name, runs, ms(p50p), ms(pct(push, 0.9)), ms(p50h), ms(pct(hist, 0.9)), ms(p50p-p50h),
				ms(ctlCPU/time.Duration(2*runs)), float64(ctlPeak)/(1<<20), ms((lcpu1-lcpu0)/time.Duration(runs)), loadavg())
			b.ReportMetric(ms(p50p-p50h), "ms-push-own-"+via.name)
		}
	}
	for _, co := range c.coords {
		b.Logf("%s: CPU %v, peak RSS %.0f MiB", co.name, procCPU(co.cmd.Process.Pid), float64(procPeakRSS(co.cmd.Process.Pid))/(1<<20))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkLeaderKilled measures the time from killing (SIGKILL) the raft
// leader of 3 TLS coordinators on loopback to the next acknowledged push,
// HIVE_BENCH_KILLS times (default 20): one client (the client library with
// failover over the three addresses, leader first, as hivectl) pushes
// continuously as hivectl does (a consistent base read, then the push);
// the leader is killed, and the figure is the time from the kill to the
// acknowledgement of the first push that began after it. The killed
// coordinator is restarted from its disk and the cluster is healthy again
// before the next kill. Prints worst and p50. Run it with -benchtime=1x.
func BenchmarkLeaderKilled(b *testing.B) {
	kills := envInt("HIVE_BENCH_KILLS", 20)
	c := newLBCluster(b, 3)
	for i := 0; i < b.N; i++ {
		leader := c.waitHealthy(30 * time.Second)
		conn := c.dial(c.addrs(leader))
		defer conn.Close()

		type ack struct{ start, done time.Time }
		type attempt struct {
			start, base, done time.Time
			err               error
			addr              string
		}
		var attempts []attempt
		var (
			mu   sync.Mutex
			acks []ack
			errs int
		)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				s, err := site.Parse("bench.yaml", []byte(siteYAML(fmt.Sprint("k", n))))
				if err != nil {
					panic(err)
				}
				start := time.Now()
				pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
				var base time.Time
				_, err = pushSite(pctx, conn, s, &base)
				pcancel()
				_, addr, _ := conn.Switches()
				mu.Lock()
				attempts = append(attempts, attempt{start, base, time.Now(), err, addr})
				if err == nil {
					acks = append(acks, ack{start, time.Now()})
				} else if ctx.Err() == nil {
					errs++
					b.Logf("push %d: %v", n, err)
				}
				mu.Unlock()
			}
		}()
		var lost []time.Duration
		var killedCPU time.Duration
		var peakRSS int64
		wall0 := time.Now()
		for k := 0; k < kills; k++ {
			leader = c.waitHealthy(30 * time.Second)
			time.Sleep(300 * time.Millisecond) // pushes flow through the healthy cluster
			killed := time.Now()
			peakRSS = max(peakRSS, procPeakRSS(leader.cmd.Process.Pid))
			c.kill(leader)
			if ru, ok := leader.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				killedCPU += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
			var got time.Duration
			deadline := time.Now().Add(30 * time.Second)
			for got == 0 && time.Now().Before(deadline) {
				mu.Lock()
				for _, a := range acks {
					if a.start.After(killed) {
						got = a.done.Sub(killed)
						break
					}
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
			if got == 0 {
				b.Fatalf("kill %d: no push acknowledged within 30 s of killing %s", k+1, leader.name)
			}
			lost = append(lost, got)
			if os.Getenv("HIVE_BENCH_DEBUG") != "" && got > 300*time.Millisecond {
				mu.Lock()
				for _, a := range attempts {
					if a.done.After(killed.Add(-100*time.Millisecond)) && a.start.Before(killed.Add(got)) {
						b.Logf("push started %+.0f ms, base read done %+.0f ms, done %+.0f ms via %s: %v", ms(a.start.Sub(killed)), ms(a.base.Sub(killed)), ms(a.done.Sub(killed)), a.addr, a.err)
					}
				}
				mu.Unlock()
				for _, co := range c.coords {
					if co != leader {
						b.Logf("%s log:\n%s", co.name, interesting(co.log.String(), killed))
					}
				}
			}
			b.Logf("kill %d (%s): next push acknowledged after %.0f ms (load average %s)", k+1, leader.name, ms(got), loadavg())
			c.start(leader)
		}
		cancel()
		wg.Wait()
		wall := time.Since(wall0)
		var live time.Duration
		for _, co := range c.coords {
			live += procCPU(co.cmd.Process.Pid)
			peakRSS = max(peakRSS, procPeakRSS(co.cmd.Process.Pid))
		}
		worst := pct(lost, 1)
		b.Logf("%d kills: kill -> next acknowledged push worst %.0f ms, p50 %.0f ms; %d pushes acknowledged, %d failed; wall %v, coordinators' CPU %v (killed ones) + %v (running ones), largest coordinator peak RSS %.0f MiB; load average %s",
			kills, ms(worst), ms(pct(lost, 0.5)), len(acks), errs, wall.Round(time.Millisecond), killedCPU.Round(time.Millisecond), live.Round(time.Millisecond), float64(peakRSS)/(1<<20), loadavg())
		b.ReportMetric(ms(worst), "ms-worst")
		b.ReportMetric(ms(pct(lost, 0.5)), "ms-p50")
	}
}

// interesting returns the log lines about elections and probes after t.
func interesting(log string, t time.Time) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "probe") && !strings.Contains(l, "election") && !strings.Contains(l, "vote") &&
			!strings.Contains(l, "leader") && !strings.Contains(l, "candidate") {
			continue
		}
		if i := strings.Index(l, "time="); i >= 0 && len(l) > i+29 {
			if ts, err := time.Parse(time.RFC3339Nano, l[i+5:i+29]); err == nil && ts.Before(t.Add(-time.Second)) {
				continue
			}
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
