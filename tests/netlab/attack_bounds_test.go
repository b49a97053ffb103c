package netlabtests

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/internal/netlab"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The test binary doubles as the attacker and as a metrics reader inside a
// namespace: NETLAB_HELPER=bounds with NETLAB_BOUNDS=huge|flood|term.
func init() {
	if os.Getenv("NETLAB_HELPER") == "bounds" {
		os.Exit(boundsHelper())
	}
}

func boundsHelper() int {
	env := os.Getenv
	if env("NETLAB_BOUNDS") == "term" {
		// Read hive_coordinator_raft_term from NETLAB_ADDR's /metrics.
		resp, err := http.Get("http://" + env("NETLAB_ADDR") + "/metrics")
		if err != nil {
			fmt.Println("SETUP", err)
			return 2
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "hive_coordinator_raft_term "); ok {
				fmt.Println(v)
				return 0
			}
		}
		fmt.Println("SETUP no hive_coordinator_raft_term in /metrics")
		return 2
	}
	ca, err := os.ReadFile(env("NETLAB_CA"))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(env("NETLAB_CERT"), env("NETLAB_KEY"))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient(env("NETLAB_ADDR"), grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	defer conn.Close()
	c := hivev1.NewCoordinatorServiceClient(conn)
	node := env("NETLAB_NODE")
	report := func(ctx context.Context, seq uint64, diff string) error {
		_, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
			Node: node, Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: seq, Finished: timestamppb.Now(),
			Results: []*hivev1.ResourceResult{{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Diff: diff}},
		}})
		return err
	}
	switch env("NETLAB_BOUNDS") {
	case "huge":
		// Ten 4.5 MB reports at once; one line per answer.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		diff := strings.Repeat("x", 4_500_000)
		var wg sync.WaitGroup
		out := make([]string, 10)
		for i := range out {
			wg.Go(func() {
				if err := report(ctx, 1<<40+uint64(i), diff); err != nil {
					out[i] = fmt.Sprintf("ERR %s: %s", status.Code(err), status.Convert(err).Message())
				} else {
					out[i] = "OK"
				}
			})
		}
		wg.Wait()
		fmt.Println(strings.Join(out, "\n"))
	case "flood":
		// Small reports back to back for NETLAB_SECONDS.
		secs, _ := strconv.Atoi(env("NETLAB_SECONDS"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+10)*time.Second)
		defer cancel()
		end := time.Now().Add(time.Duration(secs) * time.Second)
		accepted, refused, first := 0, 0, ""
		for seq := uint64(1 << 41); time.Now().Before(end); seq++ {
			err := report(ctx, seq, "")
			switch status.Code(err) {
			case codes.OK:
				accepted++
			case codes.ResourceExhausted:
				refused++
				if first == "" {
					first = status.Convert(err).Message()
				}
			default:
				fmt.Printf("ERR %s: %s\n", status.Code(err), status.Convert(err).Message())
				return 1
			}
		}
		fmt.Printf("accepted %d refused %d first refusal: %s\n", accepted, refused, first)
	default:
		fmt.Println("SETUP unknown NETLAB_BOUNDS")
		return 2
	}
	return 0
}

// bounds runs the helper on host h against addr with certName's
// certificate, acting as node.
func (c *cluster) bounds(h *netlab.Host, mode, addr, node, certName string, extra ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := h.Command(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), append([]string{
		"NETLAB_HELPER=bounds",
		"GORACE=atexit_sleep_ms=0",
		"NETLAB_BOUNDS=" + mode,
		"NETLAB_NODE=" + node,
		"NETLAB_ADDR=" + addr,
		"NETLAB_CA=" + filepath.Join(c.pki, "ca.pem"),
		"NETLAB_CERT=" + filepath.Join(c.pki, certName+".pem"),
		"NETLAB_KEY=" + filepath.Join(c.pki, certName+"-key.pem"),
	}, extra...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("bounds helper %s: %v\n%s", mode, err, out)
	}
	return strings.TrimSpace(string(out))
}

// raftTerms reads every coordinator's raft term from its /metrics.
func (c *cluster) raftTerms() []string {
	c.t.Helper()
	var out []string
	for _, n := range c.coords {
		out = append(out, c.bounds(c.admin, "term", n.host.Addr+":"+httpPort, "", "admin"))
	}
	return out
}

// peakRSS returns a process's VmHWM (peak resident set) in KiB.
func peakRSS(t testing.TB, p *netlab.Proc) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	name := ""
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Name:"); ok {
			name = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(name, "hive-coord") {
				t.Fatalf("pid %d is %q, not the coordinator", p.Pid(), name)
			}
			return kb
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", p.Pid())
	return 0
}

// TestAttackReportBounds (issue 11, finding 4): a host holding agent a1's
// certificate sends ten 4.5 MB reports at once to the raft leader: each is
// refused with InvalidArgument naming the Report cap, no election follows
// (every coordinator's raft term is unchanged) and the coordinators' peak
// RSS stays bounded. Then it floods small reports: once the node's burst
// is spent they are refused with ResourceExhausted, while agent a2's
// reports keep going through.
func TestAttackReportBounds(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 3, agents: 2})
	a1, a2 := c.agents[0], c.agents[1]
	g1 := c.push(siteFiles("1", 2), true)
	c.waitConverged(g1, 60*time.Second, a1, a2)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	ms, err := c.members(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	var lead *node
	for _, m := range ms {
		for _, n := range c.coords {
			if m.Kind == "coordinator" && m.Raft == "leader" && m.Name == n.name {
				lead = n
			}
		}
	}
	if lead == nil {
		t.Fatalf("no leader in %s", dump(ms))
	}
	termsBefore := c.raftTerms()
	var hwmBefore []int
	for _, n := range c.coords {
		hwmBefore = append(hwmBefore, peakRSS(t, n.proc))
	}

	rogue := c.lab.AddHost("rogue")
	out := c.bounds(rogue, "huge", lead.host.Addr+":"+grpcPort, "a1", "a1")
	t.Logf("ten 4.5 MB reports to the leader %s:\n%s", lead.name, out)
	lines := strings.Split(out, "\n")
	if len(lines) != 10 {
		t.Fatalf("want 10 answers, got %q", out)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "ERR InvalidArgument: Report request is ") || !strings.Contains(l, "the limit for Report is 1048592 bytes") {
			t.Errorf("4.5 MB report: %q, want InvalidArgument naming the Report limit", l)
		}
	}
	time.Sleep(5 * time.Second) // several election timeouts
	c.mustRun(c.coords...)
	if after := c.raftTerms(); strings.Join(after, ",") != strings.Join(termsBefore, ",") {
		t.Errorf("raft terms changed from %v to %v: an election happened", termsBefore, after)
	} else {
		t.Logf("raft terms unchanged: %v", after)
	}
	for i, n := range c.coords {
		hwm := peakRSS(t, n.proc)
		t.Logf("%s peak RSS (VmHWM): %d MiB before, %d MiB after the attack", n.name, hwmBefore[i]>>10, hwm>>10)
		if hwm > 128<<10 {
			t.Errorf("%s peak RSS %d MiB, want under 128 MiB", n.name, hwm>>10)
		}
	}

	// The flood: small reports as a1, back to back, for 8 seconds, while
	// a2 (on its own certificate) keeps reporting every second.
	floodStart := time.Now()
	var flood string
	done := make(chan struct{})
	go func() {
		defer close(done)
		flood = c.bounds(rogue, "flood", lead.host.Addr+":"+grpcPort, "a1", "a1", "NETLAB_SECONDS=8")
	}()
	var a2During *time.Time
	for a2During == nil {
		select {
		case <-done:
			t.Fatalf("a2 did not report during the flood (flood: %s)", flood)
		case <-time.After(500 * time.Millisecond):
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := c.status(sctx)
		scancel()
		if err != nil {
			continue
		}
		if n := s.node("a2"); n != nil && n.LastReport != nil && n.LastReport.After(floodStart.Add(2*time.Second)) {
			a2During = n.LastReport
		}
	}
	<-done
	t.Logf("flood as a1: %s; a2 reported during it at %s", flood, a2During.Format(time.RFC3339Nano))
	var accepted, refused int
	if _, err := fmt.Sscanf(flood, "accepted %d refused %d", &accepted, &refused); err != nil {
		t.Fatalf("flood output %q: %v", flood, err)
	}
	if refused == 0 || accepted > 120+8+2 || !strings.Contains(flood, "node a1 is over its report rate") {
		t.Errorf("flood not rate limited: %s", flood)
	}
}
