package netlabtests

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
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
//     content (polled every 5ms), over every agent and push;
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
	nAgents := envInt("NETLAB_BENCH_AGENTS", 50)
	c := newCluster(b, clusterConfig{coordinators: envInt("NETLAB_BENCH_COORDINATORS", 3), agents: nAgents, interval: 5 * time.Minute})
	g := c.push(siteFiles("warm", 1), true)
	c.waitConverged(g, 120*time.Second, c.agents...)

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
			time.Sleep(5 * time.Millisecond)
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
	b.Logf("%d agents, %d coordinators, %d pushes: file on agent p50 %.0f ms p99 %.0f ms; run finished p50 %.0f ms p99 %.0f ms; all converged p50 %.0f ms p99 %.0f ms; push --wait returned p50 %.0f ms p99 %.0f ms",
		nAgents, len(c.coords), len(all), pct(file, 50), pct(file, 99), pct(conv, 50), pct(conv, 99), pct(all, 50), pct(all, 99), pct(wait, 50), pct(wait, 99))
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
