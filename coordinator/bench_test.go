package coordinator

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Benchmarks run 3-server clusters over TLS on loopback, in this process:
// the CPU and RSS figures printed therefore include the benchmark's own
// clients (watchers and reporters), an upper bound for the coordinators.

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func quietCluster(b *testing.B, n int) ([]*node, *tlsCluster) {
	b.Helper()
	nodes, tc := newCluster(b, n, clusterOpts{})
	return nodes, tc
}

type usage struct {
	cpu  time.Duration
	wall time.Time
}

func startUsage() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), wall: time.Now()}
}

// report prints CPU (cores used on average) and the process's RSS.
func (u usage) report(b *testing.B) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - u.cpu
	wall := time.Since(u.wall)
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cores")
	b.ReportMetric(float64(rssBytes())/(1<<20), "MiB-rss")
}

func rssBytes() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(float64(len(d)-1) * p)
	return d[i]
}

// BenchmarkPushToWatch measures push-to-watch propagation: N watchers
// (HIVE_BENCH_WATCHERS, default 1000; HIVE_BENCH_LB of them, default 10,
// are load balancers whose addresses every web node's firewall lists),
// each on its own TLS connection,
// spread over a 3-server cluster; each op is one push (through a
// follower), timed until every watcher has received the new generation.
func BenchmarkPushToWatch(b *testing.B) {
	n := envInt("HIVE_BENCH_WATCHERS", 1000)
	// The first lbs nodes are tier=lb, the others tier=web, whose firewall
	// rule is rendered with every lb node's address.
	lbs := envInt("HIVE_BENCH_LB", 10)
	nodes, tc := quietCluster(b, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tc.issue(pki.KindAdmin, "bench")

	type watcher struct {
		gen chan uint64
	}
	ws := make([]*watcher, n)
	var ready sync.WaitGroup
	ready.Add(n)
	var startErr error
	var errOnce sync.Once
	// Agents connect over time, not all in the same millisecond: at most
	// 64 TLS handshakes and registrations in flight.
	sem := make(chan struct{}, 64)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		w := &watcher{gen: make(chan uint64, 16)}
		ws[i] = w
		srv := nodes[i%3]
		c := tc.dial(b, srv.GRPCAddr(), pki.KindAdmin, "bench")
		tier := "web"
		if i < lbs {
			tier = "lb"
		}
		go func(i int) {
			// Like an agent: retry with backoff until the stream delivers
			// its first state (registration can fail while an election
			// runs under the connection storm).
			var st hivev1.CoordinatorService_WatchNodeStateClient
			var err error
			for attempt := 0; attempt < 50; attempt++ {
				st, err = c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{
					Node: fmt.Sprintf("node-%05d", i), Labels: map[string]string{"tier": tier},
					Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255)},
				})
				if err == nil {
					_, err = st.Recv()
				}
				if err == nil {
					break
				}
				time.Sleep(time.Duration(100+attempt*50) * time.Millisecond)
			}
			<-sem
			ready.Done()
			if err != nil {
				errOnce.Do(func() { startErr = err })
				return
			}
			for {
				m, err := st.Recv()
				if err != nil {
					return
				}
				select {
				case w.gen <- m.GetState().GetGeneration():
				default:
				}
			}
		}(i)
	}
	ready.Wait()
	if startErr != nil {
		b.Fatal(startErr)
	}
	l := leader(b, nodes)
	admin := tc.dial(b, followers(nodes, l)[0].GRPCAddr(), pki.KindAdmin, "bench")
	// Let the registry debounce settle so the pushes measure pushes.
	time.Sleep(300 * time.Millisecond)
	for _, w := range ws {
		for len(w.gen) > 0 {
			<-w.gen
		}
	}
	var lat, ackLat []time.Duration
	defer cpuProfile(b)()
	u := startUsage()
	b.ResetTimer()
	for op := 0; op < b.N; op++ {
		start := time.Now()
		p, err := admin.Push(ctx, &hivev1.PushRequest{Site: testSite(fmt.Sprint("bench-", op)), Force: true})
		if err != nil {
			b.Fatal(err)
		}
		ackLat = append(ackLat, time.Since(start))
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, w := range ws {
			wg.Add(1)
			go func(w *watcher) {
				defer wg.Done()
				timeout := time.After(30 * time.Second)
				for {
					select {
					case g := <-w.gen:
						if g >= p.GetGeneration() {
							d := time.Since(start)
							mu.Lock()
							lat = append(lat, d)
							mu.Unlock()
							return
						}
					case <-timeout:
						return
					}
				}
			}(w)
		}
		wg.Wait()
	}
	b.StopTimer()
	if len(lat) != b.N*n {
		b.Fatalf("%d of %d deliveries arrived", len(lat), b.N*n)
	}
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(n), "watchers")
	b.ReportMetric(float64(lbs), "lb-nodes")
	b.ReportMetric(float64(percentile(ackLat, 0.50).Microseconds())/1000, "push-ack-p50-ms")
	u.report(b)
	runtime.GC()
	writeHeapProfile(b)
}

// cpuProfile starts a CPU profile into HIVE_BENCH_CPUPROFILE, if set, and
// returns the function that stops it.
func cpuProfile(b *testing.B) func() {
	path := os.Getenv("HIVE_BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// writeHeapProfile writes the in-use heap to HIVE_BENCH_MEMPROFILE, if
// set, with every watcher still connected (go tool pprof -sample_index
// inuse_space; the coordinators' share is under coordinator.*, grpc's
// server transport and raft).
func writeHeapProfile(b *testing.B) {
	path := os.Getenv("HIVE_BENCH_MEMPROFILE")
	if path == "" {
		return
	}
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReports measures status reports absorbed by a 3-server
// cluster: R concurrent reporters (HIVE_BENCH_REPORTERS, default 2000)
// over 30 TLS connections send to all three servers; each op is one
// committed report. (hive-load, tests/load, measures the same with every
// simulated agent on its own connection and certificate.)
func BenchmarkReports(b *testing.B) {
	r := envInt("HIVE_BENCH_REPORTERS", 2000)
	nodes, tc := quietCluster(b, 3)
	ctx := context.Background()
	var clients []hivev1.CoordinatorServiceClient
	for i := 0; i < 30; i++ {
		clients = append(clients, tc.dial(b, nodes[i%3].GRPCAddr(), pki.KindAdmin, "bench"))
	}
	results := []*hivev1.ResourceResult{
		{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_OK},
		{Key: "file:/etc/nginx/nginx.conf", Outcome: hivev1.Outcome_OUTCOME_OK},
		{Key: "service:nginx", Outcome: hivev1.Outcome_OUTCOME_OK},
		{Key: "firewall:filter", Outcome: hivev1.Outcome_OUTCOME_OK},
		{Key: "package:chrony", Outcome: hivev1.Outcome_OUTCOME_CHANGED},
	}
	var next sync.Mutex
	count := 0
	defer cpuProfile(b)()
	u := startUsage()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	var failed error
	for w := 0; w < r; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			seq := uint64(0)
			for {
				next.Lock()
				if count >= b.N {
					next.Unlock()
					return
				}
				count++
				next.Unlock()
				seq++
				_, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
					Node: fmt.Sprintf("node-%05d", w), Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED,
					Seq: seq, Finished: timestamppb.Now(), Results: results,
				}})
				if err != nil {
					failed = err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "reports/s")
	u.report(b)
}

// BenchmarkLeaderLoss measures the time from killing the leader of a
// 3-server cluster to the next acknowledged push (sent through a
// survivor, retried by the client until it succeeds).
func BenchmarkLeaderLoss(b *testing.B) {
	var total time.Duration
	var worst time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		nodes, tc := quietCluster(b, 3)
		l := leader(b, nodes)
		f := followers(nodes, l)
		admin := tc.dial(b, f[0].GRPCAddr(), pki.KindAdmin, "bench")
		ctx := context.Background()
		if _, err := admin.Push(ctx, &hivev1.PushRequest{Site: testSite("before"), Force: true}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		killed := time.Now()
		l.noTransfer.Store(true) // a crash: no leadership hand-over
		l.cancel()               // stop the leader without waiting for its shutdown
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := admin.Push(pctx, &hivev1.PushRequest{Site: testSite(fmt.Sprint("after-", time.Now().UnixNano())), Force: true})
			cancel()
			if err == nil {
				break
			}
			if time.Since(killed) > 30*time.Second {
				b.Fatalf("no push acknowledged 30 s after the leader's death: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Since(killed)
		b.StopTimer()
		total += d
		worst = max(worst, d)
		<-l.Done()
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s-to-next-push")
	b.ReportMetric(worst.Seconds(), "worst-s")
}

// BenchmarkStatusAll measures the all-nodes status answer `hivectl push
// --wait` polls, on a --dev server holding N nodes (HIVE_BENCH_NODES,
// default 2000) that each reported 20 resource results. resp-bytes is the
// answer's encoded size; with-results-bytes what it would be if it carried
// every node's results (as one-node answers do).
func BenchmarkStatusAll(b *testing.B) {
	n := envInt("HIVE_BENCH_NODES", 2000)
	srv := startDev(b)
	ctx := context.Background()
	var results []*hivev1.ResourceResult
	for i := range 20 {
		results = append(results, &hivev1.ResourceResult{Key: fmt.Sprintf("file:/etc/app/conf.d/%02d.conf", i), Outcome: hivev1.Outcome_OUTCOME_OK, Duration: durationpb.New(3 * time.Millisecond)})
	}
	var reports []*hivev1.Report
	for i := range n {
		name := fmt.Sprintf("node-%05d", i)
		if err := srv.registerNode(ctx, &registration{name: name, labels: map[string]string{"tier": "web"}, addrs: []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}, version: "bench",
			identity: &hivev1.NodeIdentity{Source: "certificate", Labels: map[string]string{"tier": "web"}}}); err != nil {
			b.Fatal(err)
		}
		reports = append(reports, &hivev1.Report{Node: name, Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1, Finished: timestamppb.Now(), Results: results})
	}
	if _, err := srv.commit(ctx, &hivev1.Command{Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: reports}}}); err != nil {
		b.Fatal(err)
	}
	c := dialPlain(b, srv.GRPCAddr())
	var resp *hivev1.GetStatusResponse
	b.ResetTimer()
	for range b.N {
		var err error
		if resp, err = c.GetStatus(ctx, &hivev1.GetStatusRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(resp.GetNodes()) != n {
		b.Fatalf("status lists %d nodes, want %d", len(resp.GetNodes()), n)
	}
	full := proto.Clone(resp).(*hivev1.GetStatusResponse)
	for _, ns := range full.GetNodes() {
		ns.Results = results
	}
	b.ReportMetric(float64(proto.Size(resp)), "resp-bytes")
	b.ReportMetric(float64(proto.Size(full)), "with-results-bytes")
}
