//go:build netlab_scenarios

package netlabtests

import (
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
// all with mutual TLS. One op is one push. Figures:
//
//   - agent-p50-ms / agent-p99-ms: from the start of `hivectl push` until an
//     agent's file holds the new content, over every agent and push;
//   - all-p50-ms / all-p99-ms: until `hivectl push --wait` returned, i.e.
//     every agent converged and reported, over the pushes.
//
// Run: make bench, or alone (root):
//
//	go test -tags netlab_scenarios -run '^$' -bench PushToAllConverged -benchtime 10x ./tests/netlab/
func BenchmarkPushToAllConverged(b *testing.B) {
	nAgents := envInt("NETLAB_BENCH_AGENTS", 50)
	c := newCluster(b, clusterConfig{coordinators: envInt("NETLAB_BENCH_COORDINATORS", 3), agents: nAgents, interval: 5 * time.Minute})
	g := c.push(siteFiles("warm", 1), true)
	c.waitConverged(g, 120*time.Second, c.agents...)

	var perAgent, all []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := fmt.Sprintf("b%d", i)
		want := fileContent(v, 0)
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			_, err := c.pushE(siteFiles(v, 1), true)
			done <- err
		}()
		seen := make([]bool, nAgents)
		left := nAgents
		for left > 0 {
			for j, a := range c.agents {
				if !seen[j] && a.readFile(filePath(0)) == want {
					seen[j] = true
					left--
					perAgent = append(perAgent, ms(time.Since(start)))
				}
			}
			if time.Since(start) > 120*time.Second {
				b.Fatalf("push %d: %d of %d agents never got the file", i, left, nAgents)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := <-done; err != nil {
			b.Fatalf("push %d: %v", i, err)
		}
		all = append(all, ms(time.Since(start)))
	}
	b.StopTimer()
	b.ReportMetric(pct(perAgent, 50), "agent-p50-ms")
	b.ReportMetric(pct(perAgent, 99), "agent-p99-ms")
	b.ReportMetric(pct(all, 50), "all-p50-ms")
	b.ReportMetric(pct(all, 99), "all-p99-ms")
	b.Logf("%d agents, %d coordinators, %d pushes: file on agent p50 %.0f ms p99 %.0f ms; push --wait (all converged and reported) p50 %.0f ms p99 %.0f ms",
		nAgents, len(c.coords), len(all), pct(perAgent, 50), pct(perAgent, 99), pct(all, 50), pct(all, 99))
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
