package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/gossip"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// devCoordinator is a real --dev coordinator in this process.
type devCoordinator struct {
	srv    *coordinator.Server
	cancel context.CancelFunc
}

func startCoordinator(t testing.TB, dataDir, grpcAddr, raftAddr string) *devCoordinator {
	t.Helper()
	cfg := coordinator.DevConfig()
	cfg.DataDir = dataDir
	cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr, cfg.GossipAddr = grpcAddr, raftAddr, "", "127.0.0.1:0"
	cfg.Logger = testLogger(t).With("side", "coordinator")
	srv, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = srv.Run(ctx) }()
	c := &devCoordinator{srv: srv, cancel: cancel}
	t.Cleanup(c.stop)
	select {
	case <-srv.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("coordinator not ready")
	}
	return c
}

func (c *devCoordinator) stop() {
	c.cancel()
	select {
	case <-c.srv.Done():
	case <-time.After(20 * time.Second):
	}
}

const e2eSite = `site: e2e
selectors:
  - roles: [base]
roles:
  base:
    files:
      - path: /etc/motd
        template: true
        content: |
          {{ .Name }} says %s
      - path: /etc/hive-e2e/app.conf
        mode: "0640"
        content: |
          level = %s
    packages:
      - chrony
`

func push(t testing.TB, addr, word string) uint64 {
	t.Helper()
	text := strings.ReplaceAll(e2eSite, "%s", word)
	s, err := site.Parse("e2e.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := conn.Push(ctx, &hivev1.PushRequest{Site: s, Message: word, Force: true, SourceName: "e2e.yaml", Source: []byte(text)})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetGeneration()
}

func nodeStatus(t testing.TB, addr, node string) *hivev1.NodeStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		return nil
	}
	defer conn.Close()
	resp, err := conn.GetStatus(ctx, &hivev1.GetStatusRequest{Node: node})
	if err != nil {
		return nil
	}
	for _, n := range resp.GetNodes() {
		if n.GetName() == node {
			return n
		}
	}
	return nil
}

func readFile(root, p string) string {
	b, _ := os.ReadFile(filepath.Join(root, p))
	return string(b)
}

// TestEndToEndDevCoordinator runs a real agent (real engine and file
// provider under a sandbox root) against a real --dev coordinator over
// gRPC: converge, drift corrected, a new push, coordinator gone (cached
// state still enforced, reports queued), coordinator back (queued reports
// delivered in order).
func TestEndToEndDevCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	coordDir := t.TempDir()
	co := startCoordinator(t, coordDir, "127.0.0.1:0", "127.0.0.1:0")
	addr, raftAddr := co.srv.GRPCAddr(), co.srv.RaftAddr()
	g1 := push(t, addr, "hello")

	root := t.TempDir()
	cfg := testConfig(t, t.TempDir())
	cfg.Name = "web-1"
	cfg.Root = root
	cfg.Coordinators = []string{addr}
	cfg.Labels = map[string]string{"tier": "web"}
	cfg.Addresses = []string{"127.0.0.1"}
	deps, err := agent.NewEngine(cfg, cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	// Converge: files written under the root, package only planned, the
	// coordinator's status says converged at g1.
	waitFor(t, "files written under the root", 20*time.Second, func() bool {
		return readFile(root, "/etc/motd") == "web-1 says hello\n" && readFile(root, "/etc/hive-e2e/app.conf") == "level = hello\n"
	})
	if fi, err := os.Stat(filepath.Join(root, "/etc/hive-e2e/app.conf")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("app.conf mode: %v %v", fi, err)
	}
	select {
	case <-a.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after converging")
	}
	var st *hivev1.NodeStatus
	waitFor(t, "converged status", 20*time.Second, func() bool {
		st = nodeStatus(t, addr, "web-1")
		return st.GetAppliedGeneration() == g1 && st.GetPhase() == hivev1.Phase_PHASE_CONVERGED
	})
	planned := false
	for _, r := range st.GetResults() {
		if r.GetKey() == "package:chrony" && r.GetOutcome() == hivev1.Outcome_OUTCOME_PLANNED {
			planned = true
		}
	}
	if !planned {
		t.Errorf("package:chrony not reported as planned under --root: %v", st.GetResults())
	}

	// Drift is corrected on the next run (SIGHUP here).
	os.WriteFile(filepath.Join(root, "/etc/motd"), []byte("tampered\n"), 0o644)
	a.Trigger(agent.TriggerSignal)
	waitFor(t, "drift corrected", 10*time.Second, func() bool { return readFile(root, "/etc/motd") == "web-1 says hello\n" })

	// A new push arrives through the watch.
	g2 := push(t, addr, "again")
	waitFor(t, "second generation applied", 20*time.Second, func() bool {
		return readFile(root, "/etc/hive-e2e/app.conf") == "level = again\n"
	})
	waitFor(t, "g2 reported", 20*time.Second, func() bool {
		return nodeStatus(t, addr, "web-1").GetAppliedGeneration() == g2
	})
	runsBefore := a.Stats().Runs

	// Coordinator gone: the cached state is still enforced and reports
	// wait on disk.
	co.stop()
	os.WriteFile(filepath.Join(root, "/etc/hive-e2e/app.conf"), []byte("level = tampered\n"), 0o640)
	a.Trigger(agent.TriggerSignal)
	waitFor(t, "drift corrected without coordinator", 10*time.Second, func() bool {
		return readFile(root, "/etc/hive-e2e/app.conf") == "level = again\n"
	})
	a.Trigger(agent.TriggerSignal)
	waitFor(t, "two offline runs", 10*time.Second, func() bool { return a.Stats().Runs >= runsBefore+2 })
	// Read the queue without OpenCache, which removes temporary files:
	// the running agent's report being written among them.
	cache := queueReader(filepath.Join(cfg.DataDir, agent.ReportsDir))
	var queued []uint64
	waitFor(t, "reports queued", 5*time.Second, func() bool {
		queued, _ = cache.Queued()
		return len(queued) >= 2
	})
	lastSeq := queued[len(queued)-1]
	t.Logf("queued while offline: %v", queued)

	// Coordinator back on the same address and data: the agent reconnects
	// by itself and delivers the queue, and does not apply the unchanged
	// state again (it resumes with the hash it holds).
	// Let any run still queued from the two triggers finish first: the
	// property checked below is about the reconnect, not the offline runs.
	runsOffline := a.Stats().Runs
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(300 * time.Millisecond)
		r := a.Stats().Runs
		if r == runsOffline {
			break
		}
		runsOffline = r
	}
	offline := time.Now()
	startCoordinator(t, coordDir, addr, raftAddr) // stopped by its cleanup
	waitFor(t, "queue delivered", 30*time.Second, func() bool {
		q, _ := cache.Queued()
		return len(q) == 0
	})
	waitFor(t, "status after reconnect", 10*time.Second, func() bool {
		st = nodeStatus(t, addr, "web-1")
		return st.GetLastReport().AsTime().After(offline.Add(-time.Minute)) && st.GetAppliedGeneration() == g2
	})
	if a.Stats().ReportsSent < 4 {
		t.Errorf("reports sent = %d", a.Stats().ReportsSent)
	}
	time.Sleep(200 * time.Millisecond)
	if s := a.Stats(); s.Runs != runsOffline || s.Reconnects < 1 {
		t.Errorf("after reconnecting: runs %d (want %d: unchanged state not re-applied), reconnects %d", s.Runs, runsOffline, s.Reconnects)
	}
	t.Logf("last queued seq %d delivered; stats %+v", lastSeq, a.Stats())
}

// TestSwitchCoordinator: two coordinators with the same site; when the
// one the agent watches stops, the agent switches to the other, does not
// re-apply the unchanged state, and reports there.
func TestSwitchCoordinator(t *testing.T) {
	if testing.Short() {
		t.Skip("starts coordinators")
	}
	cos := []*devCoordinator{
		startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"),
		startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"),
	}
	var addrs []string
	for _, c := range cos {
		addrs = append(addrs, c.srv.GRPCAddr())
		push(t, c.srv.GRPCAddr(), "same")
	}
	root := t.TempDir()
	cfg := testConfig(t, t.TempDir())
	cfg.Name, cfg.Root, cfg.Coordinators = "web-1", root, addrs
	deps, err := agent.NewEngine(cfg, cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	first := -1
	waitFor(t, "converged on one coordinator", 20*time.Second, func() bool {
		for i, c := range cos {
			if nodeStatus(t, c.srv.GRPCAddr(), "web-1").GetPhase() == hivev1.Phase_PHASE_CONVERGED {
				first = i
				return true
			}
		}
		return false
	})
	runs := a.Stats().Runs
	cos[first].stop()
	other := cos[1-first].srv.GRPCAddr()
	// The other coordinator gets a watch (it registers the node) but the
	// same state is not applied again.
	waitFor(t, "watching the other coordinator", 20*time.Second, func() bool {
		return nodeStatus(t, other, "web-1") != nil && a.Stats().Reconnects >= 1
	})
	time.Sleep(300 * time.Millisecond)
	if got := a.Stats().Runs; got != runs {
		t.Fatalf("runs went from %d to %d after switching: the unchanged state was re-applied", runs, got)
	}
	a.Trigger(agent.TriggerSignal)
	waitFor(t, "report on the other coordinator", 20*time.Second, func() bool {
		return nodeStatus(t, other, "web-1").GetPhase() == hivev1.Phase_PHASE_CONVERGED
	})
}

// TestRememberedCoordinators: restarted where gossip finds nobody yet, the
// agent reaches the coordinators it remembered from its last session.
func TestRememberedCoordinators(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	co := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	push(t, co.srv.GRPCAddr(), "remembered")
	cfg := testConfig(t, t.TempDir())
	c, _ := agent.OpenCache(cfg.DataDir, nil)
	if err := c.SaveCoordinators([]string{co.srv.GRPCAddr()}); err != nil {
		t.Fatal(err)
	}
	g := gossip.DefaultConfig()
	g.BindAddr, g.Join = "127.0.0.1:0", []string{"127.0.0.1:1"} // nobody there
	cfg.Gossip, cfg.Coordinators = &g, nil
	eng := &fakeEngine{}
	a, _ := startAgent(t, cfg, eng, nil)
	select {
	case <-a.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not reach the remembered coordinator")
	}
	if s := a.Stats(); s.LastGeneration != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestGossipDiscovery: with one gossip join address and no coordinator
// address, the agent learns the coordinator's gRPC address from gossip
// metadata, converges, and remembers the coordinator for a restart.
func TestGossipDiscovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	co := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	push(t, co.srv.GRPCAddr(), "gossip")
	// A gossip member advertising the coordinator (as hive-coordinator
	// does for itself).
	mc := gossip.DefaultConfig()
	mc.Name, mc.BindAddr, mc.Profile = "c1", "127.0.0.1:0", gossip.ProfileLocal
	mc.Meta = &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, GrpcAddr: co.srv.GRPCAddr()}
	member, err := gossip.New(mc)
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(context.Background())
	defer mcancel()
	go member.Run(mctx)

	cfg := testConfig(t, t.TempDir())
	g := gossip.DefaultConfig()
	g.BindAddr, g.Join, g.Profile = "127.0.0.1:0", []string{member.LocalAddr()}, gossip.ProfileLocal
	cfg.Gossip, cfg.Coordinators = &g, nil
	eng := &fakeEngine{}
	a, stop := startAgent(t, cfg, eng, nil)
	select {
	case <-a.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("the agent did not find the coordinator through gossip")
	}
	if _, ok := find(member.Members(), "n1"); !ok {
		t.Error("the coordinator's gossip member does not see the agent")
	}
	stop()
	c, _ := agent.OpenCache(cfg.DataDir, nil)
	if got, err := c.LoadCoordinators(); err != nil || len(got) != 1 || got[0] != co.srv.GRPCAddr() {
		t.Fatalf("remembered coordinators = %v, %v", got, err)
	}
}

func find(ms []gossip.Member, name string) (gossip.Member, bool) {
	for _, m := range ms {
		if m.Name == name {
			return m, true
		}
	}
	return gossip.Member{}, false
}

// queueReader lists the report queue of a running agent's cache, like
// Cache.Queued, without opening the cache.
type queueReader string

func (d queueReader) Queued() ([]uint64, error) {
	ents, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".pb")
		if !ok || strings.HasPrefix(n, ".") {
			continue
		}
		if s, err := strconv.ParseUint(n, 10, 64); err == nil {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}
