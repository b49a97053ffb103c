package coordinator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
)

// checkGenerations verifies that every node holds exactly generations
// 1..want, numbered without gaps, each with its parent, and that they are
// identical across nodes; acked maps generation number to the sha256 the
// client was told.
func checkGenerations(t *testing.T, nodes []*node, want uint64, acked map[uint64]string) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, 20*time.Second, fmt.Sprintf("%s to reach generation %d", n.cfg.Name, want), func() bool {
			return n.fsm.Store().CurrentNumber() >= want
		})
	}
	ref := nodes[0].fsm.Store()
	for _, n := range nodes {
		st := n.fsm.Store()
		if st.CurrentNumber() != ref.CurrentNumber() {
			t.Fatalf("%s has %d generations, %s has %d", n.cfg.Name, st.CurrentNumber(), nodes[0].cfg.Name, ref.CurrentNumber())
		}
		for i := uint64(1); i <= st.CurrentNumber(); i++ {
			g := st.Generation(i)
			if g == nil || g.GetNumber() != i || g.GetParent() != i-1 {
				t.Fatalf("%s: generation %d = %v (gap or bad parent)", n.cfg.Name, i, g.GetNumber())
			}
			if g.GetSha256() != ref.Generation(i).GetSha256() {
				t.Fatalf("%s: generation %d differs from %s's", n.cfg.Name, i, nodes[0].cfg.Name)
			}
			if sha, ok := acked[i]; ok && sha != g.GetSha256() {
				t.Fatalf("%s: acknowledged generation %d has sha %s, stored %s", n.cfg.Name, i, sha, g.GetSha256())
			}
		}
	}
	for num := range acked {
		if num > ref.CurrentNumber() {
			t.Fatalf("acknowledged generation %d is missing (current %d)", num, ref.CurrentNumber())
		}
	}
}

// pushRetry pushes like an operator's client would: on Unavailable (no
// leader, or leadership lost mid-commit under load) it tries again with
// the same content, which is then either applied or reported unchanged.
func pushRetry(ctx context.Context, t *testing.T, c hivev1.CoordinatorServiceClient, req *hivev1.PushRequest) *hivev1.PushResponse {
	t.Helper()
	for {
		p, err := c.Push(ctx, req)
		if err == nil {
			return p
		}
		if code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("push: %v", err)
		}
		t.Logf("push retried: %v", err)
		time.Sleep(50 * time.Millisecond)
	}
}

// retryUnavailable calls f until it succeeds, retrying on Unavailable.
func retryUnavailable(ctx context.Context, t *testing.T, f func() error) {
	t.Helper()
	for {
		err := f()
		if err == nil {
			return
		}
		if code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterForwardWatchStatus: a push through a follower is forwarded,
// committed and acknowledged; every server has it; a follower serves a
// watch that sees the push; status reads agree on every server.
func TestClusterForwardWatchStatus(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tc.issueAgent("web-1", map[string]string{"tier": "web"}, "10.1.0.1")
	agent := tc.dial(t, f[1].GRPCAddr(), pki.KindAgent, "web-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.1.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetState().GetGeneration() != 0 {
		t.Fatalf("first watch message = %v, %v", m, err)
	}

	admin := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("1.0"), Message: "via follower"})
	if p.GetGeneration() != 1 {
		t.Fatalf("push = %v", p)
	}
	// Acknowledged means committed: the leader has it now.
	if l.fsm.Store().CurrentNumber() != 1 {
		t.Fatal("acknowledged push not on the leader")
	}
	if g := l.fsm.Store().Generation(1); g.GetAuthor() != "alice" {
		t.Fatalf("author = %q, want alice (from the certificate)", g.GetAuthor())
	}
	checkGenerations(t, nodes, 1, map[uint64]string{1: p.GetSha256()})
	m, err := w.Recv()
	if err != nil || m.GetState().GetGeneration() != 1 {
		t.Fatalf("watch after push = %v, %v", m, err)
	}

	if _, err := agent.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "web-1", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		c := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice")
		waitFor(t, 10*time.Second, "status on "+n.cfg.Name, func() bool {
			s, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
			return err == nil && len(s.GetNodes()) == 1 && s.GetNodes()[0].GetPhase() == hivev1.Phase_PHASE_CONVERGED && s.GetServer() == n.cfg.Name
		})
	}
	// Members list all three coordinators with one leader.
	mem, err := admin.ListMembers(ctx, &hivev1.ListMembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, m := range mem.GetMembers() {
		if m.GetRaft() == hivev1.RaftRole_RAFT_ROLE_LEADER {
			leaders++
		}
	}
	if len(mem.GetMembers()) != 4 || leaders != 1 {
		t.Fatalf("members = %v", mem)
	}
}

// TestClusterLeaderKill kills the leader during a stream of pushes: every
// acknowledged generation is on every server afterwards, numbering has no
// gaps, and the killed server catches up after a restart from disk.
func TestClusterLeaderKill(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	var mu sync.Mutex
	acked := map[uint64]string{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, fn := range f {
		c := tc.dial(t, fn.GRPCAddr(), pki.KindAdmin, "alice")
		wg.Add(1)
		go func(i int, c hivev1.CoordinatorServiceClient) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				p, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite(fmt.Sprintf("%d.%d", i, k)), Force: true})
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				mu.Lock()
				if old, dup := acked[p.GetGeneration()]; dup && old != p.GetSha256() {
					t.Errorf("generation %d acknowledged twice with different content", p.GetGeneration())
				}
				acked[p.GetGeneration()] = p.GetSha256()
				mu.Unlock()
			}
		}(i, c)
	}
	waitFor(t, 45*time.Second, "some pushes", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 5 })
	killedAt := time.Now()
	l.crash(t)
	var newLeader *node
	waitFor(t, 45*time.Second, "a new leader and a push after the kill", func() bool {
		newLeader = nil
		for _, n := range f {
			if n.IsLeader() {
				newLeader = n
			}
		}
		return newLeader != nil && newLeader.fsm.Store().CurrentNumber() > l.fsm.Store().CurrentNumber()
	})
	t.Logf("new leader %s, first push after the kill within %v", newLeader.cfg.Name, time.Since(killedAt))
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	var max uint64
	for g := range acked {
		if g > max {
			max = g
		}
	}
	mu.Unlock()
	t.Logf("%d acknowledged pushes, last generation %d", len(acked), max)
	checkGenerations(t, f, max, acked)

	// Restart the killed server from its disk: it catches up.
	cfg := l.cfg
	cfg.RaftAddr, cfg.GRPCAddr = l.RaftAddr(), l.GRPCAddr()
	r := startNode(t, cfg)
	waitReady(t, r)
	checkGenerations(t, []*node{f[0], f[1], r}, max, acked)
}

// TestClusterRestartAll stops every server and starts them again from
// their data directories: state and leadership come back.
func TestClusterRestartAll(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, nodes[1].GRPCAddr(), pki.KindAdmin, "alice")
	acked := map[uint64]string{}
	for i := 0; i < 3; i++ {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint(i)), BaseGeneration: uint64(i)})
		acked[p.GetGeneration()] = p.GetSha256()
	}
	retryUnavailable(ctx, t, func() error {
		_, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v")})
		return err
	})
	var cfgs []Config
	for _, n := range nodes {
		cfg := n.cfg
		cfg.RaftAddr, cfg.GRPCAddr = n.RaftAddr(), n.GRPCAddr()
		cfg.BootstrapExpect = 0
		cfgs = append(cfgs, cfg)
		n.stop(t)
	}
	var again []*node
	for _, cfg := range cfgs {
		again = append(again, startNode(t, cfg))
	}
	waitReady(t, again...)
	checkGenerations(t, again, 3, acked)
	l := leader(t, again)
	admin = tc.dial(t, again[0].GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("after"), BaseGeneration: 3})
	if p.GetGeneration() != 4 {
		t.Fatalf("push after restart = %v (leader %s)", p, l.cfg.Name)
	}
	if l.fsm.Store().Secret("api-key") == nil {
		t.Fatal("secret lost across restart")
	}
}

// TestClusterPartitionHeal cuts a follower off raft, pushes, heals; then
// cuts the leader off: the majority elects a new leader and keeps
// accepting pushes; after healing every server agrees.
func TestClusterPartitionHeal(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l := leader(t, nodes)
	f := followers(nodes, l)
	acked := map[uint64]string{}

	f[0].layer.setBlocked(true)
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	for i := 0; i < 3; i++ {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint("a", i)), Force: true})
		acked[p.GetGeneration()] = p.GetSha256()
	}
	if got := f[0].fsm.Store().CurrentNumber(); got != 0 {
		t.Fatalf("cut-off follower has generation %d", got)
	}
	f[0].layer.setBlocked(false)
	checkGenerations(t, nodes, uint64(len(acked)), acked)

	// Now isolate the leader.
	l.layer.setBlocked(true)
	var nl *node
	waitFor(t, 20*time.Second, "a new leader among the majority", func() bool {
		for _, n := range f {
			if n.IsLeader() && n.fsm.Store().Coordinator(n.cfg.Name).GetGrpcAddr() == n.GRPCAddr() {
				nl = n
				return true
			}
		}
		return false
	})
	admin2 := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, admin2, &hivev1.PushRequest{Site: testSite("b"), Force: true})
	acked[p.GetGeneration()] = p.GetSha256()
	// The isolated old leader cannot commit.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	if _, err := admin.Push(sctx, &hivev1.PushRequest{Site: testSite("minority"), Force: true}); err == nil {
		t.Fatal("push through the isolated old leader was acknowledged")
	}
	scancel()
	l.layer.setBlocked(false)
	checkGenerations(t, nodes, p.GetGeneration(), acked)
	t.Logf("new leader %s; all agree on %d generations", nl.cfg.Name, p.GetGeneration())
}

// TestClusterSnapshotCatchUp: a follower cut off while the leader
// snapshots and truncates its log catches up by installing the snapshot.
func TestClusterSnapshotCatchUp(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{snapshotThreshold: 8, trailingLogs: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l := leader(t, nodes)
	lag := followers(nodes, l)[0]
	lag.layer.setBlocked(true)
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	acked := map[uint64]string{}
	for i := 0; i < 30; i++ {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint(i)), Force: true})
		acked[p.GetGeneration()] = p.GetSha256()
	}
	waitFor(t, 20*time.Second, "a leader snapshot", func() bool {
		fs, err := raft.NewFileSnapshotStore(l.cfg.DataDir, 2, nil)
		if err != nil {
			return false
		}
		metas, _ := fs.List()
		return len(metas) > 0 && metas[0].Index > lag.fsm.Store().Index()+4
	})
	// Make sure the entries the follower needs are gone from the log. Raft
	// compacts the log after the snapshot is on disk, so the snapshot can
	// be listed a moment before the log is cut: wait for that too.
	waitFor(t, 20*time.Second, "the leader's log compacted past the follower", func() bool {
		first, _ := l.boltStore.FirstIndex()
		return first > lag.fsm.Store().Index()+1
	})
	restores := lag.fsm.Restores()
	lag.layer.setBlocked(false)
	checkGenerations(t, nodes, uint64(len(acked)), acked)
	if lag.fsm.Restores() <= restores {
		t.Fatal("follower caught up without installing a snapshot")
	}
}

// TestClusterAuth checks identities: an agent acts only as itself, only
// admins write, ClusterService is for coordinators, no certificate means
// no access.
func TestClusterAuth(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	addr := nodes[0].GRPCAddr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := tc.dial(t, addr, pki.KindAgent, "node-a")

	w, err := a.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "node-b"})
	if err == nil {
		_, err = w.Recv()
	}
	if code(err) != codes.PermissionDenied {
		t.Fatalf("agent A watching as B: %v", err)
	}
	if _, err := a.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "node-b"}}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent A reporting as B: %v", err)
	}
	if _, err := a.GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "node-b"}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent A rendering B: %v", err)
	}
	if _, err := a.Push(ctx, &hivev1.PushRequest{Site: testSite("x")}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent push: %v", err)
	}
	if _, err := a.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "k", Value: []byte("v")}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent secret set: %v", err)
	}
	if _, err := a.GetStatus(ctx, &hivev1.GetStatusRequest{}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent status: %v", err)
	}
	// As itself it may watch and report.
	w, err = a.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatalf("agent watching itself: %v", err)
	}
	if _, err := a.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "node-a", Seq: 1}}); err != nil {
		t.Fatalf("agent reporting itself: %v", err)
	}
	// Agents and admins cannot use the cluster service.
	f := tc.issue(pki.KindAgent, "node-a")
	cfg, _ := pki.ClientTLSConfig(f.CA, f.Cert, f.Key)
	conn := dialConn(t, addr, cfg)
	if _, err := hivev1.NewClusterServiceClient(conn).Apply(ctx, &hivev1.ApplyRequest{Command: &hivev1.Command{}}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent cluster apply: %v", err)
	}
	if _, err := hivev1.NewClusterServiceClient(conn).GetKeys(ctx, &hivev1.GetKeysRequest{Ids: []string{"x"}}); code(err) != codes.PermissionDenied {
		t.Fatalf("agent reading keyring keys: %v", err)
	}
	// Without a certificate: unauthenticated.
	nocert, _ := pki.ClientTLSConfig(f.CA, "", "")
	anon := dialTLS(t, addr, nocert)
	if _, err := anon.ListGenerations(ctx, &hivev1.ListGenerationsRequest{}); code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous: %v", err)
	}
	// Admin writes.
	admin := tc.dial(t, addr, pki.KindAdmin, "alice")
	pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("x")})
}

// TestRecoverSingleSurvivor: two of three servers are lost for good; the
// survivor's configuration is rewritten with Recover, it starts as a
// one-server cluster with every generation, takes pushes, and a new server
// joins it.
func TestRecoverSingleSurvivor(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{snapshotThreshold: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	acked := map[uint64]string{}
	for i := 0; i < 6; i++ {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint(i)), Force: true})
		acked[p.GetGeneration()] = p.GetSha256()
	}
	checkGenerations(t, nodes, uint64(len(acked)), acked)
	survivor := nodes[2]
	cfg := survivor.cfg
	cfg.RaftAddr, cfg.GRPCAddr = survivor.RaftAddr(), survivor.GRPCAddr()
	for _, n := range nodes {
		n.stop(t)
	}
	if err := Recover(cfg.DataDir, cfg.Name, cfg.RaftAddr, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	r := startNode(t, cfg)
	waitReady(t, r)
	l := leader(t, []*node{r})
	checkGenerations(t, []*node{l}, uint64(len(acked)), acked)
	admin = tc.dial(t, r.GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("after"), Force: true})
	acked[p.GetGeneration()] = p.GetSha256()

	// A new server joins the survivor.
	f := tc.issue(pki.KindCoordinator, "c9")
	ncfg := cfg
	ncfg.Name, ncfg.DataDir = "c9", t.TempDir()
	ncfg.RaftAddr, ncfg.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	ncfg.TLSCert, ncfg.TLSKey = f.Cert, f.Key
	ncfg.BootstrapExpect = 0
	ncfg.Join = []string{r.GossipAddr()}
	n9 := startNode(t, ncfg)
	waitReady(t, n9)
	checkGenerations(t, []*node{r, n9}, p.GetGeneration(), acked)
}

// TestRestoreFromBackup follows docs/operations.md: the newest snapshot
// directory and the keyring, copied into an empty data directory, then
// `recover`, start: the server has every generation up to the snapshot and
// can open the secrets.
func TestRestoreFromBackup(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{snapshotThreshold: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := nodes[0]
	admin := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice")
	retryUnavailable(ctx, t, func() error {
		_, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v1")})
		return err
	})
	acked := map[uint64]string{}
	for i := 0; i < 8; i++ {
		p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite(fmt.Sprint(i)), Force: true})
		acked[p.GetGeneration()] = p.GetSha256()
	}
	// Take a snapshot now, as the timer would.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	cfg := n.cfg
	n.stop(t)

	// The backup: newest snapshots/<id>/ and the keyring.
	// Directory names are TERM-INDEX-MILLIS: the newest is the highest
	// term then index, numerically (a plain `sort` gets 2-9 after 2-10).
	entries, err := os.ReadDir(filepath.Join(cfg.DataDir, "snapshots"))
	if err != nil || len(entries) == 0 {
		t.Fatalf("snapshots: %v %v", entries, err)
	}
	latest := ""
	var bestTerm, bestIndex uint64
	for _, e := range entries {
		var term, index, ms uint64
		if _, err := fmt.Sscanf(e.Name(), "%d-%d-%d", &term, &index, &ms); err != nil {
			continue
		}
		if term > bestTerm || (term == bestTerm && index > bestIndex) {
			latest, bestTerm, bestIndex = e.Name(), term, index
		}
	}
	restored := t.TempDir()
	if err := os.CopyFS(filepath.Join(restored, "snapshots", latest), os.DirFS(filepath.Join(cfg.DataDir, "snapshots", latest))); err != nil {
		t.Fatal(err)
	}
	kr, _ := os.ReadFile(cfg.KeyringFile)
	if err := os.WriteFile(filepath.Join(restored, "keyring.json"), kr, 0o600); err != nil {
		t.Fatal(err)
	}
	rcfg := cfg
	rcfg.DataDir, rcfg.KeyringFile = restored, ""
	rcfg.RaftAddr, rcfg.GRPCAddr = "127.0.0.1:0", "127.0.0.1:0"
	rcfg.BootstrapExpect = 0
	// Recover with the raft address the restored server will listen on
	// (here the old server's, free again).
	if err := Recover(restored, rcfg.Name, cfg.RaftAddr, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	rcfg.RaftAddr = cfg.RaftAddr
	r := startNode(t, rcfg)
	waitReady(t, r)
	checkGenerations(t, []*node{r}, uint64(len(acked)), acked)
	c := tc.dial(t, r.GRPCAddr(), pki.KindAdmin, "alice")
	ls, err := c.ListSecrets(ctx, &hivev1.ListSecretsRequest{})
	if err != nil || len(ls.GetSecrets()) != 1 {
		t.Fatalf("secrets after restore: %v %v", ls, err)
	}
	out, err := r.renderer.Render(r.fsm.Store(), render.Facts{Name: "web-1", Labels: map[string]string{"tier": "web"}})
	if err != nil || string(out.State.GetSecrets()["api-key"]) != "v1" {
		t.Fatalf("secret after restore: %v %v", out, err)
	}
}

// TestKeySharing: servers that each created their own keyring still
// deliver every secret: a server that lacks the key a value was sealed with
// fetches it from another coordinator (GetKeys over mutual TLS) and keeps it
// in its keyring file.
func TestKeySharing(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{ownKeyrings: true})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	retryUnavailable(ctx, t, func() error {
		_, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("s3cret")})
		return err
	})
	pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("1")})
	sealedWith := nodes[0].keyring.Primary()
	if nodes[2].keyring.Has(sealedWith) && nodes[1].keyring.Has(sealedWith) {
		// Fine either way; the point is that the others did not start with it.
		t.Log("keys already shared")
	}
	tc.issueAgent("web-1", map[string]string{"tier": "web"})
	agent := tc.dial(t, nodes[2].GRPCAddr(), pki.KindAgent, "web-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	var st *hivev1.NodeState
	for st.GetGeneration() != 1 {
		m, err := w.Recv()
		if err != nil {
			t.Fatalf("watch on a server without the key: %v", err)
		}
		st = m.GetState()
	}
	if string(st.GetSecrets()["api-key"]) != "s3cret" {
		t.Fatalf("secrets = %v", st.GetSecrets())
	}
	// The background sync gives the third server the key too, on disk.
	waitFor(t, 20*time.Second, "every server to hold the key", func() bool {
		for _, n := range nodes {
			if !n.keyring.Has(sealedWith) {
				return false
			}
		}
		return true
	})
	data, err := os.ReadFile(filepath.Join(nodes[1].cfg.DataDir, "keyring.json"))
	if err != nil || !strings.Contains(string(data), sealedWith) {
		t.Fatalf("keyring file of %s lacks the fetched key: %v", nodes[1].cfg.Name, err)
	}
}

// TestWatchWithoutQuorum: with two of three servers gone the survivor has
// no leader, yet it still serves watches from its state (reads need no
// quorum); the node's registration waits for a leader in the background.
func TestWatchWithoutQuorum(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	p := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("1")})
	checkGenerations(t, nodes, p.GetGeneration(), nil)
	l := leader(t, nodes)
	var survivor *node
	for _, n := range nodes {
		if n != l && survivor == nil {
			survivor = n
			continue
		}
		n.stop(t)
	}
	tc.issueAgent("web-9", map[string]string{"tier": "web"})
	agent := tc.dial(t, survivor.GRPCAddr(), pki.KindAgent, "web-9")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-9", Labels: map[string]string{"tier": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := w.Recv()
	if err != nil || m.GetState().GetGeneration() != p.GetGeneration() {
		t.Fatalf("watch without quorum = %v, %v", m, err)
	}
	// Writes, on the other hand, are refused as unavailable.
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	if _, err := tc.dial(t, survivor.GRPCAddr(), pki.KindAdmin, "alice").Push(sctx, &hivev1.PushRequest{Site: testSite("2")}); err == nil {
		t.Fatal("push acknowledged without a quorum")
	}
}

// TestGracefulStopHandsOver: a leader stopped cleanly (SIGTERM) hands
// leadership to another server before it goes, so there is no election
// timeout: another server leads as soon as the stop returns.
func TestGracefulStopHandsOver(t *testing.T) {
	nodes, _ := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)
	l.stop(t)
	if !l.handedOver.Load() {
		t.Fatal("the leader stopped without handing leadership over")
	}
	// The transfer returns once the target won its election.
	deadline := time.Now().Add(5 * time.Second)
	for !f[0].IsLeader() && !f[1].IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leader after the old leader's clean stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
