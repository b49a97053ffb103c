package swarm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// member is one engine of the lab with its provider and environment.
type member struct {
	n   *node
	p   *Provider
	env *converge.Env
	cli *client.Client
}

func newMember(t *testing.T, n *node) *member {
	cfg := DefaultConfig()
	cfg.Host = "unix://" + n.sock
	cfg.Dial = n.dial
	cfg.DialTimeout = time.Second
	p, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	cli, err := client.New(client.WithHost("unix://" + n.sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &member{n: n, p: p, cli: cli, env: &converge.Env{
		Root:    t.TempDir(),
		Facts:   &hivev1.NodeFacts{Name: n.name, Addresses: []string{n.addr}},
		Secrets: map[string][]byte{},
		Logger:  testLogger(t),
	}}
}

func swarmRes(s *hivev1.Swarm) *hivev1.Resource {
	return &hivev1.Resource{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: s}}
}

// converge plans and applies like the engine; it returns the change.
func (m *member) converge(t *testing.T, s *hivev1.Swarm) *converge.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chs, err := m.p.Plan(ctx, m.env, &converge.Batch{Items: []converge.Item{{Key: "swarm:node", Resource: swarmRes(s)}}})
	if err != nil {
		t.Fatal(err)
	}
	ch := chs[0]
	if ch.Err == nil && ch.Needed {
		t.Logf("%s: %s", m.n.name, strings.TrimSpace(ch.Diff))
		if err := m.p.Apply(ctx, m.env, chs); err != nil {
			t.Fatal(err)
		}
	}
	return ch
}

func (m *member) state(t *testing.T) dswarm.Info {
	t.Helper()
	info, err := m.cli.Info(context.Background(), client.InfoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Info.Swarm
}

// nodes returns the swarm's nodes by address, as the manager sees them.
func (m *member) nodes(t *testing.T) map[string]dswarm.Node {
	t.Helper()
	res, err := m.cli.NodeList(context.Background(), client.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dswarm.Node{}
	for _, n := range res.Items {
		addr := n.Status.Addr
		if n.ManagerStatus != nil {
			addr, _, _ = strings.Cut(n.ManagerStatus.Addr, ":")
		}
		out[addr] = n
	}
	return out
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("waited %v for %s", time.Since(start).Round(time.Millisecond), what)
}

// TestSwarmTimeline forms a swarm of one manager and two workers through
// the provider, against real engines: init with networks and tokens, a
// worker joining while the manager is down (precise failure, success on
// retry), a join stuck pending cancelled and redone, labels applied by the
// initializer, a removed node leaving and being removed from the node list,
// a worker promoted to manager, no-op reruns.
func TestSwarmTimeline(t *testing.T) {
	l := newLab(t, "m1", "w1", "w2")
	m1, w1, w2 := newMember(t, l.nodes[0]), newMember(t, l.nodes[1]), newMember(t, l.nodes[2])

	members := []*hivev1.SwarmMember{
		{Name: "m1", Address: m1.n.addr, Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Labels: map[string]string{"zone": "a"}},
		{Name: "w1", Address: w1.n.addr, Role: hivev1.SwarmRole_SWARM_ROLE_WORKER, Labels: map[string]string{"zone": "b", "disk": "ssd"}},
		{Name: "w2", Address: w2.n.addr, Role: hivev1.SwarmRole_SWARM_ROLE_WORKER, Labels: map[string]string{"zone": "c"}},
	}
	manager := &hivev1.Swarm{
		Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Init: true, Initializer: true,
		Labels:   map[string]string{"zone": "a"},
		Networks: []*hivev1.SwarmNetwork{{Name: "hive-net", Subnet: "10.210.0.0/24", Attachable: true}},
		Members:  members,
	}
	worker := func(labels map[string]string) *hivev1.Swarm {
		return &hivev1.Swarm{
			Role: hivev1.SwarmRole_SWARM_ROLE_WORKER, Labels: labels,
			ManagerAddrs:    []string{m1.n.addr + ":2377"},
			JoinTokenSecret: "m1/" + PublishedWorkerToken,
		}
	}

	// A worker before the swarm exists: precise failures, nothing done.
	ch := w1.converge(t, &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_WORKER})
	if !errors.Is(ch.Err, ErrNoManager) {
		t.Errorf("no managers: %v", ch.Err)
	}
	ch = w1.converge(t, worker(nil))
	if !errors.Is(ch.Err, ErrNoToken) || !strings.Contains(ch.Err.Error(), `secret "m1/swarm-worker-token" not published yet`) {
		t.Errorf("no token: %v", ch.Err)
	}

	// Init on the initializer: swarm, network, own label, tokens.
	ch = m1.converge(t, manager)
	if ch.Err != nil || !ch.Needed || !strings.Contains(ch.Diff, "init swarm advertising "+m1.n.addr) {
		t.Fatalf("init: needed=%v err=%v diff=%s", ch.Needed, ch.Err, ch.Diff)
	}
	if st := m1.state(t); st.LocalNodeState != dswarm.LocalNodeStateActive || !st.ControlAvailable {
		t.Fatalf("m1 swarm state %+v", st)
	}
	pub := m1.p.Published()
	if !strings.HasPrefix(string(pub[PublishedWorkerToken]), "SWMTKN-1-") || !strings.HasPrefix(string(pub[PublishedManagerToken]), "SWMTKN-1-") {
		t.Fatalf("published %q", pub)
	}
	netw, err := m1.cli.NetworkInspect(context.Background(), "hive-net", client.NetworkInspectOptions{})
	if err != nil || netw.Network.Driver != "overlay" || !netw.Network.Attachable || len(netw.Network.IPAM.Config) != 1 || netw.Network.IPAM.Config[0].Subnet.String() != "10.210.0.0/24" {
		t.Errorf("network: %+v %v", netw.Network, err)
	}
	if n := m1.nodes(t)[m1.n.addr]; n.Spec.Labels["zone"] != "a" {
		t.Errorf("m1 labels %v", n.Spec.Labels)
	}
	if ch = m1.converge(t, manager); ch.Err != nil || ch.Needed {
		t.Fatalf("manager rerun: needed=%v err=%v diff=%s", ch.Needed, ch.Err, ch.Diff)
	}
	// Test speed only: heartbeats every second, so nodes that leave show
	// down in seconds rather than tens of seconds.
	sw, err := m1.cli.SwarmInspect(context.Background(), client.SwarmInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sw.Swarm.Spec.Dispatcher.HeartbeatPeriod = time.Second
	if _, err := m1.cli.SwarmUpdate(context.Background(), client.SwarmUpdateOptions{Version: sw.Swarm.Version, Spec: sw.Swarm.Spec}); err != nil {
		t.Fatal(err)
	}

	// The coordinator now hands the token to the workers (as a secret).
	for _, w := range []*member{w1, w2} {
		w.env.Secrets["m1/"+PublishedWorkerToken] = pub[PublishedWorkerToken]
	}

	// w1 joins while the manager is down: precise failure, engine left
	// clean (not pending), success once the manager is back.
	m1.n.stop()
	start := time.Now()
	ch = w1.converge(t, worker(nil))
	if !errors.Is(ch.Err, ErrNoManager) || !strings.Contains(ch.Err.Error(), m1.n.addr+":2377") {
		t.Fatalf("join with manager down: %v", ch.Err)
	}
	t.Logf("join with manager down failed after %v: %v", time.Since(start).Round(time.Millisecond), ch.Err)
	if st := w1.state(t); st.LocalNodeState != dswarm.LocalNodeStateInactive {
		t.Errorf("w1 after failed join: %s", st.LocalNodeState)
	}
	if err := m1.n.start(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "manager back with control", 60*time.Second, func() bool {
		st := m1.state(t)
		return st.LocalNodeState == dswarm.LocalNodeStateActive && st.ControlAvailable
	})
	var lastErr error
	eventually(t, "w1 to join after the manager is back", 30*time.Second, func() bool {
		ch = w1.converge(t, worker(nil))
		lastErr = ch.Err
		return ch.Err == nil
	})
	_ = lastErr
	if st := w1.state(t); st.LocalNodeState != dswarm.LocalNodeStateActive || st.ControlAvailable {
		t.Fatalf("w1 state %+v", st)
	}
	// w2's engine is stuck in a join through a manager that does not
	// exist (started by hand, left retrying in the background): the
	// provider cancels it and joins properly.
	jctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, _ = w2.cli.SwarmJoin(jctx, client.SwarmJoinOptions{ListenAddr: "0.0.0.0:2377", AdvertiseAddr: w2.n.addr,
		RemoteAddrs: []string{"10.79.0.99:2377"}, JoinToken: string(pub[PublishedWorkerToken])})
	cancel()
	eventually(t, "w2 pending", 10*time.Second, func() bool { return w2.state(t).LocalNodeState == dswarm.LocalNodeStatePending })
	ch = w2.converge(t, worker(nil))
	if ch.Err != nil || !strings.Contains(ch.Diff, "cancel the pending join") {
		t.Fatalf("w2 join from pending: %v %s", ch.Err, ch.Diff)
	}
	if st := w2.state(t); st.LocalNodeState != dswarm.LocalNodeStateActive {
		t.Fatalf("w2 state %s", st.LocalNodeState)
	}
	if ch = w1.converge(t, worker(nil)); ch.Err != nil || ch.Needed {
		t.Errorf("w1 rerun: needed=%v err=%v %s", ch.Needed, ch.Err, ch.Diff)
	}

	// The initializer labels the workers that joined.
	ch = m1.converge(t, manager)
	if ch.Err != nil || !strings.Contains(ch.Diff, "label node w1 ("+w1.n.addr+"): disk=ssd, zone=b") || !strings.Contains(ch.Diff, "label node w2") {
		t.Fatalf("labels: err=%v diff=%s", ch.Err, ch.Diff)
	}
	nodes := m1.nodes(t)
	if len(nodes) != 3 || nodes[w1.n.addr].Spec.Labels["disk"] != "ssd" || nodes[w2.n.addr].Spec.Labels["zone"] != "c" || nodes[w1.n.addr].Spec.Role != dswarm.NodeRoleWorker {
		t.Errorf("nodes after labels: %+v", nodes)
	}
	if ch = m1.converge(t, manager); ch.Needed || ch.Err != nil {
		t.Errorf("manager rerun after labels: %v %s", ch.Err, ch.Diff)
	}

	// w1 goes into maintenance (or takes the reboot lock): the initializer
	// drains it and marks it; once released, makes it active again.
	m1.env.SwarmDrain = []string{"w1"}
	ch = m1.converge(t, manager)
	if ch.Err != nil || !strings.Contains(ch.Diff, "drain node w1 ("+w1.n.addr+")") {
		t.Fatalf("drain: err=%v diff=%s", ch.Err, ch.Diff)
	}
	if n := m1.nodes(t)[w1.n.addr]; n.Spec.Availability != dswarm.NodeAvailabilityDrain || n.Spec.Labels[DrainedLabel] != "true" || n.Spec.Labels["disk"] != "ssd" {
		t.Errorf("w1 after drain: %+v", n.Spec)
	}
	if ch = m1.converge(t, manager); ch.Needed || ch.Err != nil {
		t.Errorf("rerun while drained: %v %s", ch.Err, ch.Diff)
	}
	m1.env.SwarmDrain = nil
	ch = m1.converge(t, manager)
	if ch.Err != nil || !strings.Contains(ch.Diff, "make node w1 ("+w1.n.addr+") active again") {
		t.Fatalf("undrain: err=%v diff=%s", ch.Err, ch.Diff)
	}
	if n := m1.nodes(t)[w1.n.addr]; n.Spec.Availability != dswarm.NodeAvailabilityActive || n.Spec.Labels[DrainedLabel] != "" {
		t.Errorf("w1 after undrain: %+v", n.Spec)
	}

	// w2's swarm role is removed: it leaves; the initializer, whose
	// members no longer list it, removes the node once it is down.
	rm, err := w2.p.Prune(context.Background(), w2.env, nil)
	if err != nil || len(rm) != 1 || !strings.Contains(rm[0].Diff, "leave the swarm") {
		t.Fatalf("prune plan: %v %v", rm, err)
	}
	if err := w2.p.Apply(context.Background(), w2.env, rm); err != nil || rm[0].Err != nil {
		t.Fatalf("leave: %v %v", err, rm[0].Err)
	}
	if st := w2.state(t); st.LocalNodeState != dswarm.LocalNodeStateInactive {
		t.Errorf("w2 after leave: %s", st.LocalNodeState)
	}
	if rm, err := w2.p.Prune(context.Background(), w2.env, nil); err != nil || len(rm) != 0 {
		t.Errorf("second prune: %v %v", rm, err)
	}
	// Were w2 to become the initializer while m1 runs the swarm, it must
	// not start a second swarm.
	rogue := &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Init: true, Initializer: true, ManagerAddrs: []string{m1.n.addr + ":2377"}}
	if ch = w2.converge(t, rogue); !errors.Is(ch.Err, ErrState) || !strings.Contains(ch.Err.Error(), "refusing to initialise a second swarm") {
		t.Errorf("second initializer: %v", ch.Err)
	}
	if st := w2.state(t); st.LocalNodeState != dswarm.LocalNodeStateInactive {
		t.Errorf("w2 after refused init: %s", st.LocalNodeState)
	}
	manager.Members = members[:2]
	eventually(t, "w2 down on the manager", 30*time.Second, func() bool {
		return m1.nodes(t)[w2.n.addr].Status.State == dswarm.NodeStateDown
	})
	ch = m1.converge(t, manager)
	if ch.Err != nil || !strings.Contains(ch.Diff, "remove node") {
		t.Fatalf("remove: err=%v diff=%s", ch.Err, ch.Diff)
	}
	if nodes := m1.nodes(t); len(nodes) != 2 {
		t.Errorf("nodes after removal: %d", len(nodes))
	}
	if ch = m1.converge(t, manager); ch.Needed || ch.Err != nil {
		t.Errorf("rerun after removal: %v %s", ch.Err, ch.Diff)
	}

	// w1 becomes a manager: it leaves and joins again with the manager
	// token; the initializer relabels its new node and removes the old one.
	w1.env.Secrets["m1/"+PublishedManagerToken] = pub[PublishedManagerToken]
	promoted := worker(nil)
	promoted.Role = hivev1.SwarmRole_SWARM_ROLE_MANAGER
	promoted.JoinTokenSecret = "m1/" + PublishedManagerToken
	ch = w1.converge(t, promoted)
	if ch.Err != nil || !strings.Contains(ch.Diff, "leave the swarm (is worker, must be manager)") {
		t.Fatalf("promote: %v %s", ch.Err, ch.Diff)
	}
	if st := w1.state(t); !st.ControlAvailable {
		t.Errorf("w1 not a manager: %+v", st)
	}
	if !strings.HasPrefix(string(w1.p.Published()[PublishedWorkerToken]), "SWMTKN-1-") {
		t.Error("new manager publishes no token")
	}
	members[1].Role = hivev1.SwarmRole_SWARM_ROLE_MANAGER
	eventually(t, "old w1 node down", 30*time.Second, func() bool {
		for _, n := range mustNodes(t, m1) {
			if n.Status.Addr == w1.n.addr && n.Spec.Role == dswarm.NodeRoleWorker && n.Status.State == dswarm.NodeStateDown {
				return true
			}
		}
		return false
	})
	ch = m1.converge(t, manager)
	if ch.Err != nil || !strings.Contains(ch.Diff, "label node w1") || !strings.Contains(ch.Diff, "remove node") {
		t.Fatalf("after promotion: %v %s", ch.Err, ch.Diff)
	}
	if ch = m1.converge(t, manager); ch.Needed || ch.Err != nil {
		t.Errorf("final rerun: %v %s", ch.Err, ch.Diff)
	}
	if ch = w1.converge(t, promoted); ch.Needed || ch.Err != nil {
		t.Errorf("promoted rerun: %v %s", ch.Err, ch.Diff)
	}
}

func mustNodes(t *testing.T, m *member) []dswarm.Node {
	t.Helper()
	res, err := m.cli.NodeList(context.Background(), client.NodeListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Items
}
