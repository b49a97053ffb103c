package coordinator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/sitetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestMaintenance (real raft, dev server): a node in maintenance keeps the
// generation it had through pushes and rollouts (it is not planned into a
// wave), status shows the reason and who set it, the write is in the audit
// log, bad input is refused precisely, and resuming gives it the current
// generation again.
func TestMaintenance(t *testing.T) {
	f := newRolloutFleet(t, 3)
	g1 := f.push(rolloutSite("1"), nil)
	f.converge(f.nodes...)

	for _, tc := range []struct {
		req  *hivev1.MaintenanceStartRequest
		code codes.Code
		want string
	}{
		{&hivev1.MaintenanceStartRequest{Node: "web-2"}, codes.InvalidArgument, "reason: required"},
		{&hivev1.MaintenanceStartRequest{Node: "Bad Name", Reason: "x"}, codes.InvalidArgument, "node:"},
		{&hivev1.MaintenanceStartRequest{Node: "web-9", Reason: "x"}, codes.NotFound, "not registered"},
		{&hivev1.MaintenanceStartRequest{Node: "web-2", Reason: strings.Repeat("x", MaxRolloutReason+1)}, codes.InvalidArgument, "reason"},
	} {
		_, err := f.c.MaintenanceStart(f.ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("MaintenanceStart(%v) = %v, want %v with %q", tc.req, err, tc.code, tc.want)
		}
	}
	if _, err := f.c.MaintenanceEnd(f.ctx, &hivev1.MaintenanceEndRequest{Node: "web-2"}); status.Code(err) != codes.NotFound {
		t.Errorf("resume of a node not in maintenance: %v, want NotFound", err)
	}

	resp, err := f.c.MaintenanceStart(f.ctx, &hivev1.MaintenanceStartRequest{Node: "web-2", Reason: "replace disk sdb"})
	if err != nil {
		t.Fatal(err)
	}
	if m := resp.GetMaintenance(); m.GetAuthor() != "dev" || m.GetGeneration() != g1 || m.GetReason() != "replace disk sdb" {
		t.Fatalf("maintenance record %v", m)
	}
	g2 := f.push(rolloutSite("2"), nil)
	if got := f.targets(); got != fmt.Sprintf("web-1=%d web-2=%d web-3=%d", g2, g1, g2) {
		t.Fatalf("targets after a push: %s", got)
	}
	f.converge(f.nodes...)
	// A rollout does not plan it.
	g3 := f.push(rolloutSite("3"), &hivev1.RolloutOverride{MaxParallel: ptr(uint32(1))})
	var planned []string
	for _, n := range f.n.fsm.Store().Rollout().GetNodes() {
		planned = append(planned, n.GetName())
	}
	if strings.Join(planned, ",") != "web-1,web-3" {
		t.Fatalf("rollout of generation %d planned %v", g3, planned)
	}
	st, err := f.c.GetStatus(f.ctx, &hivev1.GetStatusRequest{Node: "web-2"})
	if err != nil {
		t.Fatal(err)
	}
	ns := st.GetNodes()[0]
	if ns.GetMaintenance().GetReason() != "replace disk sdb" || ns.GetMaintenance().GetAuthor() != "dev" || ns.GetDesiredGeneration() != g1 {
		t.Fatalf("status of web-2: maintenance %v desired %d", ns.GetMaintenance(), ns.GetDesiredGeneration())
	}
	// The rollout gate does not wait for it.
	f.converge("web-1")
	f.waitState("wave 2 opened", func(r *hivev1.Rollout) bool { return r.GetOpened() == 2 })
	f.converge("web-3")
	f.waitState("rollout completed", func(r *hivev1.Rollout) bool {
		return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED
	})
	if got := f.n.fsm.Store().TargetNumber("web-2"); got != g1 {
		t.Fatalf("web-2 target %d after the rollout, want %d", got, g1)
	}

	if _, err := f.c.MaintenanceEnd(f.ctx, &hivev1.MaintenanceEndRequest{Node: "web-2"}); err != nil {
		t.Fatal(err)
	}
	if got := f.n.fsm.Store().TargetNumber("web-2"); got != g3 {
		t.Fatalf("web-2 target %d after resume, want %d", got, g3)
	}
	audit, err := f.c.ListAudit(f.ctx, &hivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range audit.GetEntries() {
		if strings.Contains(e.GetSummary(), "web-2") {
			seen = append(seen, e.GetIdentity()+": "+e.GetSummary()+" ["+e.GetReason()+"]")
		}
	}
	want := []string{"dev: resume node web-2 from maintenance [not_found]",
		`dev: maintenance node web-2 (reason "replace disk sdb") []`, "dev: resume node web-2 from maintenance []"}
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit entries about web-2:\n%s\nwant:\n%s", strings.Join(seen, "\n"), strings.Join(want, "\n"))
	}
}

// TestRebootQueueQuorum (real raft, dev server, agents simulated by their
// reports): rebooting three DRBD peers and three swarm managers with
// max_parallel 10 never lets two peers or two managers hold the lock at
// once, lets a peer and a manager reboot together, takes each node through
// draining, rebooting (reboot order on its watch), recovering (a new boot
// id) and done.
func TestRebootQueueQuorum(t *testing.T) {
	srv := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := dialPlain(t, srv.GRPCAddr())
	names := []string{"db-1", "db-2", "db-3", "mgr-1", "mgr-2", "mgr-3"}
	orders := map[string]chan uint64{}
	var mu sync.Mutex
	hashes := map[string]string{}   // the latest state each node's watch got
	reported := map[string]string{} // the state hash each node reported last
	var drained []string            // swarm_drain lists the initializer got
	for i, n := range names {
		w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: n, Labels: map[string]string{"tier": strings.Split(n, "-")[0]}, Addresses: []string{fmt.Sprintf("10.0.2.%d", i+1)}})
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan uint64, 8)
		orders[n] = ch
		go func() {
			for {
				m, err := w.Recv()
				if err != nil {
					return
				}
				if o := m.GetReboot(); o != nil {
					ch <- o.GetId()
				}
				if st := m.GetState(); st != nil {
					mu.Lock()
					hashes[n] = st.GetHash()
					if len(st.GetSwarmDrain()) > 0 {
						drained = append(drained, strings.Join(st.GetSwarmDrain(), ","))
					}
					mu.Unlock()
				}
			}
		}()
	}
	waitFor(t, 10*time.Second, "nodes registered", func() bool {
		nodes, _ := srv.fsm.Store().Nodes()
		return len(nodes) == len(names)
	})
	s := &hivev1.Site{Name: "q", Roles: []*hivev1.Role{
		{Name: "db", Resources: []*hivev1.Resource{
			{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0", Minor: 0, Disk: "/dev/vdb", Port: 7789, PeerRole: "db"}}},
		}},
		{Name: "mgr", Resources: []*hivev1.Resource{
			{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Init: true}}},
		}},
	}, Selectors: []*hivev1.Selector{
		{MatchLabels: map[string]string{"tier": "db"}, Roles: []string{"db"}},
		{MatchLabels: map[string]string{"tier": "mgr"}, Roles: []string{"mgr"}},
	}}
	pr, err := c.Push(ctx, &hivev1.PushRequest{Site: s})
	if err != nil {
		t.Fatal(err)
	}
	gen := pr.GetGeneration()
	seq := uint64(0)
	boots := map[string]string{}
	resynced := map[string]bool{}
	report := func(n, boot string) {
		seq++
		mu.Lock()
		hash := hashes[n]
		mu.Unlock()
		reported[n], boots[n] = hash, boot
		r := &hivev1.Report{Node: n, Generation: gen, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: seq, BootId: boot, StateHash: hash,
			Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state", Health: hivev1.Health_HEALTH_PASSING}
		// The built-in checks a real agent runs for its DRBD resource or
		// swarm membership; a db node just back reports r0 resyncing once
		// (a failure below the threshold: still "passing").
		if strings.HasPrefix(n, "db-") {
			c := &hivev1.CheckResult{Name: "builtin/drbd:r0", Kind: "drbd", Passing: true}
			if boot == "2222-bbbb" && !resynced[n] {
				c.Failures, c.Message = 1, "volume 0 disk Inconsistent"
			}
			r.Checks = append(r.Checks, c)
		} else {
			r.Checks = append(r.Checks, &hivev1.CheckResult{Name: "builtin/swarm", Kind: "swarm", Passing: true})
		}
		if _, err := c.Report(ctx, &hivev1.ReportRequest{Report: r}); err != nil {
			t.Fatalf("report %s: %v", n, err)
		}
	}
	for _, n := range names {
		report(n, "1111-aaaa")
	}
	waitFor(t, 10*time.Second, "reports stored", func() bool { return srv.fsm.Store().Report("mgr-3").GetBootId() == "1111-aaaa" })

	if _, err := c.RebootStart(ctx, &hivev1.RebootStartRequest{Nodes: []string{"db-1"}, All: true}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("nodes and all: %v, want InvalidArgument", err)
	}
	if _, err := c.RebootStart(ctx, &hivev1.RebootStartRequest{All: true, MaxParallel: 10, Reason: "kernel"}); err != nil {
		t.Fatal(err)
	}
	maxHolders := 0
	rebooted := map[string]bool{}
	deadline := time.Now().Add(40 * time.Second)
	for {
		q := srv.fsm.Store().RebootQueue()
		var holders []string
		done := 0
		for _, n := range q.GetNodes() {
			switch n.GetState() {
			case hivev1.RebootState_REBOOT_STATE_DRAINING, hivev1.RebootState_REBOOT_STATE_REBOOTING, hivev1.RebootState_REBOOT_STATE_RECOVERING:
				holders = append(holders, n.GetName())
			case hivev1.RebootState_REBOOT_STATE_DONE:
				done++
			case hivev1.RebootState_REBOOT_STATE_FAILED:
				t.Fatalf("%s failed: %s", n.GetName(), n.GetMessage())
			}
		}
		db, mgr := 0, 0
		for _, h := range holders {
			if strings.HasPrefix(h, "db-") {
				db++
			} else {
				mgr++
			}
		}
		if db > 1 || mgr > 1 {
			t.Fatalf("holding the reboot lock together: %v", holders)
		}
		maxHolders = max(maxHolders, len(holders))
		if done == len(names) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reboots did not finish: %v", q)
		}
		// The agents: a node converges on every new state (the
		// initializer drains), one ordered to reboot comes back with a
		// new boot id.
		for _, n := range names {
			mu.Lock()
			h := hashes[n]
			mu.Unlock()
			if h != reported[n] {
				report(n, boots[n])
			}
			select {
			case id := <-orders[n]:
				if rebooted[n] {
					t.Fatalf("%s got a second reboot order (%d)", n, id)
				}
				rebooted[n] = true
				report(n, "2222-bbbb")
				if strings.HasPrefix(n, "db-") {
					// Back but not UpToDate: the lock stays.
					time.Sleep(600 * time.Millisecond)
					if e := srv.fsm.Store().RebootEntry(n); e.GetState() != hivev1.RebootState_REBOOT_STATE_RECOVERING {
						t.Fatalf("%s released while its DRBD resource resyncs: %v", n, e)
					}
					resynced[n] = true
					report(n, "2222-bbbb")
				}
			default:
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if maxHolders != 2 {
		t.Errorf("at most %d nodes held the lock at once; want a DRBD peer and a manager together (2)", maxHolders)
	}
	if len(rebooted) != len(names) {
		t.Errorf("reboot orders reached %v", rebooted)
	}
	// The initializer (mgr-1, the lowest name with init) was told to drain
	// each swarm manager in turn, and finally none.
	mu.Lock()
	got := strings.Join(drained, " ")
	mu.Unlock()
	for _, m := range []string{"mgr-1", "mgr-2", "mgr-3"} {
		if !strings.Contains(got, m) {
			t.Errorf("swarm_drain lists of the initializer %q never name %s", got, m)
		}
	}
	if ini, _ := srv.renderer.Render(srv.fsm.Store(), render.FactsOf(srv.fsm.Store().Node("mgr-1"))); len(ini.State.GetSwarmDrain()) != 0 {
		t.Errorf("initializer still drains %v after the reboots", ini.State.GetSwarmDrain())
	}
	st, err := c.RebootStatus(ctx, &hivev1.RebootStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.GetQueue().GetNodes() {
		if n.GetRequestedBy() != "dev" || n.GetReason() != "kernel" || n.GetId() == 0 {
			t.Errorf("queue entry %v", n)
		}
	}
}

// planText renders a reboot dry run's waves for comparison: one wave a
// line, "name" for a node the request adds, "name(state)" for one queued
// or holding the lock already.
func planText(resp *hivev1.RebootStartResponse) string {
	var lines []string
	for i, w := range resp.GetWaves() {
		var names []string
		for _, n := range w.GetNodes() {
			s := n.GetName()
			if n.GetState() != hivev1.RebootState_REBOOT_STATE_UNSPECIFIED {
				s += "(" + rebootStateName(n.GetState()) + ")"
			}
			names = append(names, s)
		}
		lines = append(lines, fmt.Sprintf("wave %d: %s", i+1, strings.Join(names, " ")))
	}
	return strings.Join(lines, "\n")
}

// planWaits is the waits of a reboot dry run by node.
func planWaits(resp *hivev1.RebootStartResponse) map[string]string {
	out := map[string]string{}
	for _, w := range resp.GetWaves() {
		for _, n := range w.GetNodes() {
			if n.GetWaits() != "" {
				out[n.GetName()] = n.GetWaits()
			}
		}
	}
	return out
}

// TestRebootDryRun (a three-server TLS cluster, real raft on disk, agents
// registered with certificates bound to their labels): a reboot dry run
// over three DRBD peers, three swarm managers and two plain nodes answers
// waves that never put two peers or two managers together, says why each
// node waits, counts the nodes already holding the lock or queued, and
// writes nothing (raft index, queue and audit log unchanged); bad input
// gets the error a real start gets; an agent is denied; a follower
// answers from its own state.
func TestRebootDryRun(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	fol := followers(nodes, l)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")

	names := []string{"db-1", "db-2", "db-3", "mgr-1", "mgr-2", "mgr-3", "web-1", "web-2"}
	for _, n := range names {
		tc.issueAgent(n, map[string]string{"tier": strings.Split(n, "-")[0]})
		w, err := tc.dial(t, l.GRPCAddr(), pki.KindAgent, n).WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: n, Addresses: []string{"127.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatalf("watch %s: %v", n, err)
		}
	}
	s := sitetest.QuorumSite("dry")
	gen := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: s}).GetGeneration()
	if _, err := admin.MaintenanceStart(ctx, &hivev1.MaintenanceStartRequest{Node: "web-2", Reason: "psu"}); err != nil {
		t.Fatal(err)
	}

	// Bad input: the dry run fails as a real start does, code and message.
	for _, req := range []*hivev1.RebootStartRequest{
		{},
		{Nodes: []string{"db-1"}, All: true},
		{Role: "db", All: true},
		{All: true, MaxParallel: MaxRebootParallel + 1},
		{Nodes: []string{"db-1", "Bad Name"}},
		{Nodes: []string{"db-9"}},
		{Role: "cache"},
		{All: true, Reason: strings.Repeat("x", MaxRolloutReason+1)},
	} {
		_, real := admin.RebootStart(ctx, req)
		dry := proto.Clone(req).(*hivev1.RebootStartRequest)
		dry.DryRun = true
		_, err := admin.RebootStart(ctx, dry)
		if real == nil || err == nil || status.Code(err) != status.Code(real) || status.Convert(err).Message() != status.Convert(real).Message() {
			t.Errorf("RebootStart(%v): dry run %v, real start %v", req, err, real)
		}
	}
	if _, err := admin.RebootStart(ctx, &hivev1.RebootStartRequest{Nodes: []string{"db-9"}, DryRun: true}); status.Code(err) != codes.NotFound {
		t.Errorf("dry run of an unregistered node: %v, want NotFound", err)
	}
	if _, err := admin.RebootStart(ctx, &hivev1.RebootStartRequest{Role: "db", All: true, DryRun: true}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("dry run of two selections: %v, want InvalidArgument", err)
	}
	// Not an admin: denied.
	agent := tc.dial(t, l.GRPCAddr(), pki.KindAgent, "web-1")
	if _, err := agent.RebootStart(ctx, &hivev1.RebootStartRequest{All: true, DryRun: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an agent's dry run: %v, want PermissionDenied", err)
	}

	// quiet waits until the leader's raft log stops growing (registrations,
	// the refused starts above) and returns its last index.
	quiet := func() uint64 {
		t.Helper()
		last := l.raft.LastIndex()
		for stable := time.Now(); time.Since(stable) < 500*time.Millisecond; {
			time.Sleep(50 * time.Millisecond)
			if i := l.raft.LastIndex(); i != last {
				last, stable = i, time.Now()
			}
			if ctx.Err() != nil {
				t.Fatal("raft log never quiet")
			}
		}
		return last
	}
	audited := func() int {
		t.Helper()
		a, err := admin.ListAudit(ctx, &hivev1.ListAuditRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(a.GetEntries())
	}
	dryRun := func(c hivev1.CoordinatorServiceClient, req *hivev1.RebootStartRequest) *hivev1.RebootStartResponse {
		t.Helper()
		req.DryRun = true
		resp, err := c.RebootStart(ctx, req)
		if err != nil {
			t.Fatalf("dry run %v: %v", req, err)
		}
		return resp
	}
	peers := "db-1 and db-2 are peers of a DRBD resource"
	majority := "2 swarm managers in one wave would leave the 3 managers without a majority (at most 1 per wave)"

	// An empty queue.
	idx, entries := quiet(), audited()
	resp := dryRun(admin, &hivev1.RebootStartRequest{All: true, MaxParallel: 10, Reason: "kernel"})
	if got, want := planText(resp), "wave 1: db-1 mgr-1 web-1\nwave 2: db-2 mgr-2\nwave 3: db-3 mgr-3"; got != want {
		t.Fatalf("dry run of all:\n%s\nwant:\n%s", got, want)
	}
	if w := planWaits(resp); w["db-2"] != "not in wave 1: "+peers || w["mgr-2"] != "not in wave 1: "+majority ||
		w["db-3"] != "not in wave 2: db-2 and db-3 are peers of a DRBD resource" || len(w) != 4 {
		t.Errorf("waits: %q", w)
	}
	if strings.Join(resp.GetSkipped(), ",") != "web-2: in maintenance" || resp.GetMaxParallel() != 10 || resp.GetQueue() != nil {
		t.Errorf("skipped %v, max parallel %d, queue %v", resp.GetSkipped(), resp.GetMaxParallel(), resp.GetQueue())
	}
	resp = dryRun(admin, &hivev1.RebootStartRequest{Nodes: []string{"web-1", "db-1", "db-2"}, MaxParallel: 2})
	if got, want := planText(resp), "wave 1: web-1 db-1\nwave 2: db-2"; got != want {
		t.Fatalf("dry run of three named nodes:\n%s\nwant:\n%s", got, want)
	}
	if w := planWaits(resp); w["db-2"] != "not in wave 1: max parallel 2: the lock is full" {
		t.Errorf("waits: %q", w)
	}
	resp = dryRun(admin, &hivev1.RebootStartRequest{Role: "db"})
	if got, want := planText(resp), "wave 1: db-1\nwave 2: db-2\nwave 3: db-3"; got != want || resp.GetMaxParallel() != 1 {
		t.Fatalf("dry run of role db (max parallel %d):\n%s\nwant:\n%s", resp.GetMaxParallel(), got, want)
	}
	if got := quiet(); got != idx {
		t.Errorf("raft index %d after the dry runs, %d before", got, idx)
	}
	if got := audited(); got != entries {
		t.Errorf("%d audit entries after the dry runs, %d before", got, entries)
	}
	if q := l.fsm.Store().RebootQueue(); q != nil {
		t.Errorf("reboot queue after the dry runs: %v", q)
	}

	// db-1 holds the lock (its agent reports a boot id, it is told to
	// reboot and never comes back here), db-2 is queued behind it.
	if _, err := tc.dial(t, l.GRPCAddr(), pki.KindAgent, "db-1").Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
		Node: "db-1", Seq: 1, Generation: gen, Phase: hivev1.Phase_PHASE_CONVERGED, BootId: "1111-aaaa",
		Started: timestamppb.Now(), Finished: timestamppb.Now()}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "db-1's report", func() bool { return l.fsm.Store().Report("db-1").GetBootId() == "1111-aaaa" })
	if _, err := admin.RebootStart(ctx, &hivev1.RebootStartRequest{Nodes: []string{"db-1", "db-2"}, MaxParallel: 1, Reason: "kernel"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "db-1 rebooting", func() bool {
		return l.fsm.Store().RebootEntry("db-1").GetState() == hivev1.RebootState_REBOOT_STATE_REBOOTING
	})
	idx, entries = quiet(), audited()
	before := proto.Clone(l.fsm.Store().RebootQueue())
	want := "wave 1: db-1(rebooting) mgr-1 web-1\nwave 2: db-2(queued) mgr-2\nwave 3: db-3 mgr-3"
	resp = dryRun(admin, &hivev1.RebootStartRequest{All: true, MaxParallel: 3})
	if got := planText(resp); got != want {
		t.Fatalf("dry run of all with db-1 rebooting and db-2 queued:\n%s\nwant:\n%s", got, want)
	}
	if w := planWaits(resp); w["db-2"] != "not in wave 1: "+peers || w["mgr-2"] != "not in wave 1: "+majority {
		t.Errorf("waits: %q", w)
	}
	if !proto.Equal(resp.GetQueue(), before) || resp.GetMaxParallel() != 3 {
		t.Errorf("dry run answered queue %v (max parallel %d), the queue is %v", resp.GetQueue(), resp.GetMaxParallel(), before)
	}
	// With the queue's max parallel (1), the lock is full until db-1 is done.
	resp = dryRun(admin, &hivev1.RebootStartRequest{Nodes: []string{"web-1"}})
	if got, want := planText(resp), "wave 1: db-1(rebooting)\nwave 2: db-2(queued)\nwave 3: web-1"; got != want {
		t.Fatalf("dry run of web-1 behind the queue:\n%s\nwant:\n%s", got, want)
	}
	if w := planWaits(resp); w["db-2"] != "not in wave 1: max parallel 1: the lock is full" || w["web-1"] != "not in wave 2: max parallel 1: the lock is full" {
		t.Errorf("waits: %q", w)
	}

	// A follower answers from its own store once it has the queue.
	waitFor(t, 10*time.Second, "the follower to apply the queue", func() bool {
		return fol.fsm.Store().RebootEntry("db-1").GetState() == hivev1.RebootState_REBOOT_STATE_REBOOTING
	})
	resp = dryRun(tc.dial(t, fol.GRPCAddr(), pki.KindAdmin, "alice"), &hivev1.RebootStartRequest{All: true, MaxParallel: 3})
	if got := planText(resp); got != want {
		t.Fatalf("follower's dry run:\n%s\nwant:\n%s", got, want)
	}

	if got := quiet(); got != idx {
		t.Errorf("raft index %d after the dry runs, %d before", got, idx)
	}
	if got := audited(); got != entries {
		t.Errorf("%d audit entries after the dry runs, %d before", got, entries)
	}
	if after := l.fsm.Store().RebootQueue(); !proto.Equal(after, before) {
		t.Errorf("reboot queue changed by the dry runs:\n%v\nwas:\n%v", after, before)
	}
}
