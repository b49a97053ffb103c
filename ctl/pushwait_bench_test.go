package ctl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchCluster starts three coordinators in this process over mutual TLS
// on loopback (raft on disk in temporary directories; the second and
// third join the first through gossip and are promoted to voters), and
// returns them with the PKI.
func benchCluster(b *testing.B) ([]*coordinator.Server, *pkitest.Dir) {
	b.Helper()
	pk := pkitest.New(b)
	key := []byte("0123456789abcdef0123456789abcdef")
	var srvs []*coordinator.Server
	for i := range 3 {
		name := fmt.Sprintf("c%d", i+1)
		f := pk.Issue(pki.KindCoordinator, name, net.ParseIP("127.0.0.1"))
		cfg := coordinator.DefaultConfig()
		cfg.Name, cfg.DataDir = name, b.TempDir()
		cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
		cfg.GossipAddr, cfg.GossipProfile, cfg.GossipKey = "127.0.0.1:0", "local", key
		cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = f.CA, f.Cert, f.Key
		cfg.ReconcileInterval, cfg.PromoteStabilization = 100*time.Millisecond, 500*time.Millisecond
		cfg.Logger = slog.New(slog.DiscardHandler)
		if i == 0 {
			cfg.BootstrapExpect = 1
		} else {
			cfg.Join = []string{srvs[0].GossipAddr()}
		}
		s, err := coordinator.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- s.Run(ctx) }()
		b.Cleanup(func() { cancel(); <-errc })
		select {
		case <-s.Ready():
		case <-time.After(30 * time.Second):
			b.Fatalf("%s not ready", name)
		}
		srvs = append(srvs, s)
	}
	admin := pk.Issue(pki.KindAdmin, "bench")
	c, err := client.Dial(context.Background(), client.Config{Addrs: []string{srvs[0].GRPCAddr()}, CA: admin.CA, Cert: admin.Cert, Key: admin.Key})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		voters := 0
		if resp, err := c.ListPeers(context.Background(), &hivev1.ListPeersRequest{}); err == nil {
			for _, p := range resp.GetPeers() {
				if p.GetVoter() {
					voters++
				}
			}
		}
		if voters == 3 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d voters after 60s, want 3", voters)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return srvs, pk
}

// benchAcks records, per generation, when each agent's final report was
// sent and acknowledged (committed).
type benchAcks struct {
	mu   sync.Mutex
	sent map[uint64][]time.Time
	ack  map[uint64][]time.Time
}

// BenchmarkPushWaitReturn measures how soon `hivectl push --wait` returns
// after the last agent's report is committed. Three coordinators run in
// this process over mutual TLS (raft on disk); N simulated agents
// (HIVE_BENCH_AGENTS, default 100), each with its own agent certificate and
// its own connection, spread over the three, watch their state and on each
// new generation report "applying", run for 0–50 ms, and report
// "converged" (a Report call answered once its batch is committed). Each op
// runs `hivectl push FILE --wait` in-process against one coordinator
// (HIVE_BENCH_WAIT_ON=follower, the default, or leader) and times its
// return against the last agent's report: "after-ack" from the moment
// that report's Report call was answered (committed), "after-send" from
// the moment it was sent. Percentiles are over the ops.
//
// HIVE_BENCH_POLL=1 makes hivectl poll every 500 ms instead, as it did
// before blocking status (and does against a coordinator without it).
func BenchmarkPushWaitReturn(b *testing.B) {
	n := benchEnvInt("HIVE_BENCH_AGENTS", 100)
	if os.Getenv("HIVE_BENCH_POLL") != "" {
		pollOnly = true
		defer func() { pollOnly = false }()
	}
	srvs, pk := benchCluster(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var leader, follower *coordinator.Server
	for _, s := range srvs {
		if s.IsLeader() {
			leader = s
		} else if follower == nil {
			follower = s
		}
	}
	waitOn := follower
	if os.Getenv("HIVE_BENCH_WAIT_ON") == "leader" {
		waitOn = leader
	}

	acks := &benchAcks{sent: map[uint64][]time.Time{}, ack: map[uint64][]time.Time{}}
	registered := make(chan struct{}, n)
	for i := range n {
		name := fmt.Sprintf("node-%04d", i)
		f := pk.Issue(pki.KindAgent, name, net.ParseIP("127.0.0.1"))
		conn, err := client.Dial(ctx, client.Config{Addrs: []string{srvs[i%3].GRPCAddr()}, CA: f.CA, Cert: f.Cert, Key: f.Key})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		stream, err := conn.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: name, AgentVersion: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			var seq uint64
			first := true
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				if first {
					registered <- struct{}{}
					first = false
				}
				st := resp.GetState()
				g := st.GetGeneration()
				if g == 0 {
					continue
				}
				seq++
				if _, err := conn.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: name, Generation: g, StateHash: st.GetHash(),
					Phase: hivev1.Phase_PHASE_APPLYING, Seq: seq, Started: timestamppb.Now(), Trigger: "state"}}); err != nil && ctx.Err() == nil {
					b.Errorf("%s: applying report: %v", name, err)
				}
				time.Sleep(time.Duration(rand.IntN(50)) * time.Millisecond)
				seq++
				final := &hivev1.Report{Node: name, Generation: g, StateHash: st.GetHash(),
					Phase: hivev1.Phase_PHASE_CONVERGED, Seq: seq, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state"}
				// Sent again on Unavailable (a leader change on a loaded
				// host), as the agent's report queue does; the last
				// attempt is the one timed.
				var sent, acked time.Time
				for try := 0; ; try++ {
					sent = time.Now()
					_, err = conn.Report(ctx, &hivev1.ReportRequest{Report: final})
					acked = time.Now()
					if err == nil || ctx.Err() != nil || status.Code(err) != codes.Unavailable || try == 20 {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					if ctx.Err() == nil {
						b.Errorf("%s: final report: %v", name, err)
					}
					continue
				}
				acks.mu.Lock()
				acks.sent[g] = append(acks.sent[g], sent)
				acks.ack[g] = append(acks.ack[g], acked)
				acks.mu.Unlock()
			}
		}()
	}
	for range n {
		select {
		case <-registered:
		case <-time.After(60 * time.Second):
			b.Fatal("agents did not all register")
		}
	}

	admin := pk.Issue(pki.KindAdmin, "alice")
	dir := b.TempDir()
	genRE := regexp.MustCompile(`generation (\d+) \(sha256`)
	var afterAck, afterSend, total []time.Duration
	var ru0 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	wall0 := time.Now()
	b.ResetTimer()
	for op := range b.N {
		file := filepath.Join(dir, fmt.Sprintf("site-%d.yaml", op))
		site := fmt.Sprintf("site: bench\nselectors:\n  - roles: [base]\nroles:\n  base:\n    files:\n      - path: /etc/hive-bench\n        content: |\n          op %d\n", op)
		if err := os.WriteFile(file, []byte(site), 0o644); err != nil {
			b.Fatal(err)
		}
		var out, errb bytes.Buffer
		start := time.Now()
		code := Main([]string{"push", file, "--wait", "--timeout", "60s", "--addr", waitOn.GRPCAddr(),
			"--ca", admin.CA, "--cert", admin.Cert, "--key", admin.Key}, strings.NewReader(""), &out, &errb)
		ret := time.Now()
		if code != 0 {
			b.Fatalf("push --wait: exit %d\n%s%s", code, out.String(), errb.String())
		}
		m := genRE.FindStringSubmatch(out.String())
		if m == nil || !strings.Contains(out.String(), fmt.Sprintf("%d/%d converged", n, n)) {
			b.Fatalf("push --wait output:\n%s", out.String())
		}
		g, _ := strconv.ParseUint(m[1], 10, 64)
		acks.mu.Lock()
		sent, ack := acks.sent[g], acks.ack[g]
		acks.mu.Unlock()
		if len(ack) < n {
			// push --wait returned once the coordinator had applied every
			// report; an agent may not have its answer yet.
			time.Sleep(200 * time.Millisecond)
			acks.mu.Lock()
			sent, ack = acks.sent[g], acks.ack[g]
			acks.mu.Unlock()
		}
		if len(ack) != n {
			b.Fatalf("generation %d: %d final reports acknowledged, want %d", g, len(ack), n)
		}
		lastAck, lastSent := ack[0], sent[0]
		for i := range ack {
			if ack[i].After(lastAck) {
				lastAck = ack[i]
			}
			if sent[i].After(lastSent) {
				lastSent = sent[i]
			}
		}
		afterAck = append(afterAck, ret.Sub(lastAck))
		afterSend = append(afterSend, ret.Sub(lastSent))
		total = append(total, ret.Sub(start))
	}
	b.StopTimer()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano()+ru.Stime.Nano()) - time.Duration(ru0.Utime.Nano()+ru0.Stime.Nano())
	pct := func(d []time.Duration, p float64) float64 {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return float64(s[int(float64(len(s)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(afterAck, 0.5), "ms-after-ack-p50")
	b.ReportMetric(pct(afterAck, 0.99), "ms-after-ack-p99")
	b.ReportMetric(pct(afterAck, 1), "ms-after-ack-max")
	b.ReportMetric(pct(afterSend, 0.5), "ms-after-send-p50")
	b.ReportMetric(pct(afterSend, 1), "ms-after-send-max")
	b.ReportMetric(pct(total, 0.5), "ms-push-wait-p50")
	b.ReportMetric(cpu.Seconds()/time.Since(wall0).Seconds(), "cores")
	b.ReportMetric(float64(ru.Maxrss)/1024, "MiB-peak-rss")
}
