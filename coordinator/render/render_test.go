package render

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func pkg(name, version string) *hivev1.Resource {
	return &hivev1.Resource{Key: "package:" + name, Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: name, Version: version}}}
}

func file(path string, secrets ...string) *hivev1.Resource {
	return &hivev1.Resource{Key: "file:" + path, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: path, Content: "x", Secrets: secrets}}}
}

func fw(rules ...*hivev1.FirewallRule) *hivev1.Resource {
	return &hivev1.Resource{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{Rules: rules}}}
}

func swarm(role hivev1.SwarmRole, init bool) *hivev1.Resource {
	return &hivev1.Resource{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: role, Init: init}}}
}

func site() *hivev1.Site {
	return &hivev1.Site{
		Roles: []*hivev1.Role{
			{Name: "base", Resources: []*hivev1.Resource{pkg("curl", ""), file("/etc/motd")}},
			{Name: "db", Resources: []*hivev1.Resource{
				{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0", Port: 7789}}},
				fw(&hivev1.FirewallRule{Ports: []string{"5432"}, SourceRoles: []string{"web"}}),
			}},
			{Name: "manager", Resources: []*hivev1.Resource{swarm(hivev1.SwarmRole_SWARM_ROLE_MANAGER, true)}},
			{Name: "web", Resources: []*hivev1.Resource{
				pkg("curl", ""),
				file("/etc/app.conf", "db-pass"),
				fw(&hivev1.FirewallRule{Ports: []string{"80"}, Sources: []string{"0.0.0.0/0"}},
					&hivev1.FirewallRule{Ports: []string{"9100"}, SourceRoles: []string{"monitor"}}),
				swarm(hivev1.SwarmRole_SWARM_ROLE_WORKER, false),
			}},
			{Name: "monitor"},
		},
		Selectors: []*hivev1.Selector{
			{Roles: []string{"base"}},
			{MatchLabels: map[string]string{"tier": "db"}, Roles: []string{"db"}},
			{Names: []string{"web-*"}, Roles: []string{"web"}},
			{Names: []string{"mgr-*"}, Roles: []string{"manager"}},
		},
		Services: []*hivev1.SwarmService{{Name: "web", Image: "10.0.0.5:5000/site/web:v1", Digest: "sha256:" + strings.Repeat("ab", 32), Replicas: 2,
			Secrets: []*hivev1.SwarmServiceSecret{{Secret: "svc-pass"}}}},
		Registry: &hivev1.ServiceRegistry{Address: "10.0.0.5:5000", Mirror: true},
	}
}

type fixture struct {
	st *state.Store
	kr *keyring.Keyring
	r  *Renderer
}

func newFixture(t *testing.T) *fixture {
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: state.New(), kr: kr, r: New(kr)}
	f.st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "s", Site: site()}})
	for _, n := range []struct {
		name, addr string
		labels     map[string]string
	}{
		{"db-b", "10.0.0.12", map[string]string{"tier": "db"}},
		{"db-a", "10.0.0.11", map[string]string{"tier": "db"}},
		{"web-1", "10.0.1.1", nil},
		{"web-2", "10.0.1.2", nil},
		{"mgr-2", "10.0.2.2", nil},
		{"mgr-1", "10.0.2.1", nil},
	} {
		upsert(f.st, &hivev1.NodeUpsertCommand{Name: n.name, Labels: n.labels, Addresses: []string{n.addr}})
	}
	return f
}

// upsert applies c as the leader proposes it (with the next ordinal).
// upsert registers a node whose labels are bound in its certificate (the
// tests' labels are trusted ones).
func upsert(st *state.Store, c *hivev1.NodeUpsertCommand) {
	c.Ordinal = st.NextOrdinal()
	if c.Identity == nil && len(c.Labels) > 0 {
		c.Identity = &hivev1.NodeIdentity{Source: state.SourceCertificate, Labels: c.Labels}
	}
	st.UpsertNode(t0, c)
}

func (f *fixture) setSecret(t *testing.T, name, value string) {
	sealed, id, err := f.kr.Seal(name, []byte(value))
	if err != nil {
		t.Fatal(err)
	}
	f.st.SetSecret(t0, &hivev1.SecretSetCommand{Name: name, Sealed: sealed, KeyId: id})
}

func (f *fixture) render(t *testing.T, name string) *hivev1.NodeState {
	t.Helper()
	n := f.st.Node(name)
	out, err := f.r.Render(f.st, FactsOf(n))
	if err != nil {
		t.Fatalf("render %s: %v", name, err)
	}
	return out.State
}

func keys(st *hivev1.NodeState) string {
	var k []string
	for _, r := range st.GetResources() {
		k = append(k, r.GetKey())
	}
	return strings.Join(k, " ")
}

func find(st *hivev1.NodeState, key string) *hivev1.Resource {
	for _, r := range st.GetResources() {
		if r.GetKey() == key {
			return r
		}
	}
	return nil
}

func TestSelectAndMerge(t *testing.T) {
	f := newFixture(t)
	web := f.render(t, "web-1")
	if got := strings.Join(web.GetFacts().GetRoles(), ","); got != "base,web" {
		t.Fatalf("roles = %s", got)
	}
	// curl is declared identically by base and web: once. Dependency
	// order: packages, files, firewall, swarm.
	if got := keys(web); got != "package:curl file:/etc/app.conf file:/etc/motd firewall:filter swarm:node" {
		t.Fatalf("keys = %s", got)
	}
	// The monitor rule has no nodes: dropped, never widened.
	rules := find(web, "firewall:filter").GetFirewall().GetRules()
	if len(rules) != 1 || rules[0].GetPorts()[0] != "80" {
		t.Fatalf("web rules = %v", rules)
	}
	db := f.render(t, "db-a")
	rules = find(db, "firewall:filter").GetFirewall().GetRules()
	if len(rules) != 1 || strings.Join(rules[0].GetSources(), ",") != "10.0.1.1,10.0.1.2" || len(rules[0].GetSourceRoles()) != 0 {
		t.Fatalf("db rules = %v", rules)
	}
	peers := find(db, "drbd:r0").GetDrbd().GetPeers()
	// Registration order: db-b was recorded first.
	if len(peers) != 2 || peers[0].GetName() != "db-b" || peers[0].GetNodeId() != 0 || peers[1].GetAddress() != "10.0.0.11" || peers[1].GetNodeId() != 1 {
		t.Fatalf("drbd peers = %v", peers)
	}
	if len(db.GetFacts().GetPeers()) != 0 {
		t.Fatalf("db facts peers = %v, want none (no template names a role)", db.GetFacts().GetPeers())
	}
}

func TestSwarmFacts(t *testing.T) {
	f := newFixture(t)
	m1, m2, w := f.render(t, "mgr-1"), f.render(t, "mgr-2"), f.render(t, "web-1")
	s1, s2, sw := find(m1, "swarm:node").GetSwarm(), find(m2, "swarm:node").GetSwarm(), find(w, "swarm:node").GetSwarm()
	if !s1.GetInitializer() || s1.GetJoinTokenSecret() != "" || strings.Join(s1.GetManagerAddrs(), ",") != "10.0.2.2:2377" {
		t.Fatalf("mgr-1 swarm = %v", s1)
	}
	var members []string
	for _, m := range s1.GetMembers() {
		members = append(members, fmt.Sprintf("%s=%s/%s", m.GetName(), m.GetAddress(), m.GetRole()))
	}
	if got := strings.Join(members, " "); got != "mgr-1=10.0.2.1/SWARM_ROLE_MANAGER mgr-2=10.0.2.2/SWARM_ROLE_MANAGER web-1=10.0.1.1/SWARM_ROLE_WORKER web-2=10.0.1.2/SWARM_ROLE_WORKER" {
		t.Fatalf("initializer's members = %s", got)
	}
	if len(s2.GetMembers()) != 0 || len(s2.GetServices()) != 0 || len(sw.GetServices()) != 0 {
		t.Fatal("members or services rendered for a non-initializer")
	}
	if len(s1.GetServices()) != 1 || s1.GetServices()[0].GetDigest() == "" {
		t.Fatalf("initializer's services = %v", s1.GetServices())
	}
	for _, s := range []*hivev1.Swarm{s1, s2, sw} {
		if s.GetRegistry().GetAddress() != "10.0.0.5:5000" {
			t.Fatalf("registry not rendered: %v", s)
		}
	}
	// The services' secrets reach the initializer only.
	f.setSecret(t, "svc-pass", "s3cret")
	if got := f.render(t, "mgr-1").GetSecrets()["svc-pass"]; string(got) != "s3cret" {
		t.Fatalf("initializer's service secret = %q", got)
	}
	if _, ok := f.render(t, "mgr-2").GetSecrets()["svc-pass"]; ok {
		t.Fatal("service secret rendered for a non-initializer")
	}
	if s2.GetInitializer() || s2.GetJoinTokenSecret() != "mgr-1/swarm-manager-token" {
		t.Fatalf("mgr-2 swarm = %v", s2)
	}
	if sw.GetInitializer() || sw.GetJoinTokenSecret() != "mgr-1/swarm-worker-token" || len(sw.GetManagerAddrs()) != 2 {
		t.Fatalf("web swarm = %v", sw)
	}
	// The worker token reaches the worker once published.
	if _, ok := w.GetSecrets()["mgr-1/swarm-worker-token"]; ok {
		t.Fatal("unpublished token present")
	}
	f.setSecret(t, "mgr-1/swarm-worker-token", "SWMTKN-1")
	w = f.render(t, "web-1")
	if string(w.GetSecrets()["mgr-1/swarm-worker-token"]) != "SWMTKN-1" {
		t.Fatalf("secrets = %v", w.GetSecrets())
	}
	if _, ok := f.render(t, "mgr-2").GetSecrets()["mgr-1/swarm-worker-token"]; ok {
		t.Fatal("manager got the worker token")
	}
}

func TestSecretsOnlyReferenced(t *testing.T) {
	f := newFixture(t)
	f.setSecret(t, "db-pass", "hunter2")
	f.setSecret(t, "other", "x")
	web := f.render(t, "web-1")
	if len(web.GetSecrets()) != 1 || string(web.GetSecrets()["db-pass"]) != "hunter2" {
		t.Fatalf("web secrets = %v", web.GetSecrets())
	}
	if len(f.render(t, "db-a").GetSecrets()) != 0 {
		t.Fatal("db got secrets it does not reference")
	}
	// A value sealed with a key this keyring lacks is a precise error.
	other, _ := keyring.New()
	sealed, id, _ := other.Seal("db-pass", []byte("v"))
	f.st.SetSecret(t0, &hivev1.SecretSetCommand{Name: "db-pass", Sealed: sealed, KeyId: id})
	_, err := f.r.Render(f.st, Facts{Name: "web-1"})
	if !errors.Is(err, keyring.ErrUnknownKey) {
		t.Fatalf("render with a foreign key: %v", err)
	}
}

func TestCacheAndHash(t *testing.T) {
	f := newFixture(t)
	a := f.render(t, "web-1")
	h0, m0 := f.r.Stats()
	b := f.render(t, "web-1")
	h1, m1 := f.r.Stats()
	if a != b || h1 != h0+1 || m1 != m0 {
		t.Fatalf("second render not cached: hits %d→%d misses %d→%d", h0, h1, m0, m1)
	}
	if h, _ := Hash(a); h != a.GetHash() {
		t.Fatal("hash does not match content")
	}
	// Registry change of a web node changes db's firewall sources.
	before := f.render(t, "db-a").GetHash()
	upsert(f.st, &hivev1.NodeUpsertCommand{Name: "web-3", Addresses: []string{"10.0.1.3"}})
	after := f.render(t, "db-a")
	if after.GetHash() == before || !strings.Contains(strings.Join(find(after, "firewall:filter").GetFirewall().GetRules()[0].GetSources(), ","), "10.0.1.3") {
		t.Fatal("registry change not rendered")
	}
	// New generation changes the hash; identical content across two
	// fixtures renders identical hashes (deterministic).
	g := newFixture(t)
	if g.render(t, "web-1").GetHash() != a.GetHash() {
		t.Fatal("same inputs, different hash")
	}
}

func TestConflicts(t *testing.T) {
	s := &hivev1.Site{
		Roles: []*hivev1.Role{
			{Name: "a", Resources: []*hivev1.Resource{pkg("nginx", "1")}},
			{Name: "b", Resources: []*hivev1.Resource{pkg("nginx", "2")}},
			{Name: "c", Resources: []*hivev1.Resource{{Key: "file:/x", Requires: []string{"package:missing"}, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/x"}}}}},
		},
		Selectors: []*hivev1.Selector{{Names: []string{"ab"}, Roles: []string{"a", "b"}}, {Names: []string{"c"}, Roles: []string{"c"}}},
	}
	st := state.New()
	st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "s", Site: s}})
	r := New(nil)
	_, err := r.Render(st, Facts{Name: "ab"})
	var ce *ConflictError
	if !errors.As(err, &ce) || ce.Key != "package:nginx" || ce.RoleA != "a" || ce.RoleB != "b" {
		t.Fatalf("conflict = %v", err)
	}
	if _, err := r.Render(st, Facts{Name: "c"}); err == nil || !strings.Contains(err.Error(), "requires package:missing") {
		t.Fatalf("missing requirement = %v", err)
	}
}

func TestNoGeneration(t *testing.T) {
	out, err := New(nil).Render(state.New(), Facts{Name: "n"})
	st := out.State
	if err != nil || st.GetGeneration() != 0 || len(st.GetResources()) != 0 || st.GetHash() == "" {
		t.Fatalf("empty render = %v, %v", st, err)
	}
}

func TestSelectorMatching(t *testing.T) {
	sel := &hivev1.Selector{MatchLabels: map[string]string{"dc": "fra"}, Names: []string{"web-*", "api-?"}}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"web-1", map[string]string{"dc": "fra"}, true},
		{"api-1", map[string]string{"dc": "fra", "x": "y"}, true},
		{"api-12", map[string]string{"dc": "fra"}, false},
		{"web-1", map[string]string{"dc": "ams"}, false},
		{"web-1", nil, false},
	} {
		if got := Matches(sel, c.name, c.labels); got != c.want {
			t.Errorf("%s %v: %v", c.name, c.labels, got)
		}
	}
}

// BenchmarkRenderPush measures rendering every node of a 5,000-node
// registry after a push (what watchers do), with a handful of role sets.
func BenchmarkRenderPush(b *testing.B) {
	st := state.New()
	for i := 0; i < 5000; i++ {
		tier := []string{"web", "lb"}[i%2]
		if i < 2 {
			tier = "db"
		}
		upsert(st, &hivev1.NodeUpsertCommand{Name: fmt.Sprintf("%s-%04d", tier, i), Labels: map[string]string{"tier": tier}, Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/65536, (i/256)%256, i%256)}})
	}
	nodes, _ := st.Nodes()
	r := New(nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := site()
		s.Name = fmt.Sprint(i)
		st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: fmt.Sprint("g", i), Site: s}, Force: true})
		for _, n := range nodes {
			if _, err := r.Render(st, FactsOf(n)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(nodes)), "µs/node")
}

// TestDrbdNodeIDsStable: DRBD node ids follow registration order, so a
// node added later (even with a lower name) never renumbers the existing
// peers; a node's ordinal survives a change of its facts and a snapshot.
func TestDrbdNodeIDsStable(t *testing.T) {
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	st := state.New()
	st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "s", Site: site()}})
	db := map[string]string{"tier": "db"}
	ids := func(st *state.Store, node string) map[string]uint32 {
		t.Helper()
		n := st.Node(node)
		out, err := New(kr).Render(st, FactsOf(n))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint32{}
		for _, p := range find(out.State, "drbd:r0").GetDrbd().GetPeers() {
			m[p.GetName()] = p.GetNodeId()
		}
		return m
	}
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-2", Labels: db, Addresses: []string{"10.0.0.2"}})
	if got := ids(st, "db-2"); len(got) != 1 || got["db-2"] != 0 {
		t.Fatalf("one node: ids = %v", got)
	}
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-0", Labels: db, Addresses: []string{"10.0.0.0"}})
	for _, node := range []string{"db-2", "db-0"} {
		if got := ids(st, node); len(got) != 2 || got["db-2"] != 0 || got["db-0"] != 1 {
			t.Fatalf("after adding db-0, %s sees ids %v; want db-2 0, db-0 1", node, got)
		}
	}
	// New facts keep the ordinal; a third node comes last.
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-2", Labels: db, Addresses: []string{"10.0.0.22"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-1", Labels: db, Addresses: []string{"10.0.0.1"}})
	if got := ids(st, "db-1"); got["db-2"] != 0 || got["db-0"] != 1 || got["db-1"] != 2 {
		t.Fatalf("after db-2's new address and db-1: ids = %v", got)
	}
	// Through a snapshot, and a node registered after the restore.
	snap, index := st.Capture()
	var buf bytes.Buffer
	if err := state.WriteSnapshot(&buf, snap, index); err != nil {
		t.Fatal(err)
	}
	st2, err := state.ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	upsert(st2, &hivev1.NodeUpsertCommand{Name: "db-00", Labels: db, Addresses: []string{"10.0.0.100"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-00", Labels: db, Addresses: []string{"10.0.0.100"}})
	a, b := ids(st, "db-00"), ids(st2, "db-00")
	if a["db-2"] != 0 || a["db-0"] != 1 || a["db-1"] != 2 || a["db-00"] != 3 || len(b) != 4 || b["db-2"] != a["db-2"] || b["db-0"] != a["db-0"] || b["db-1"] != a["db-1"] || b["db-00"] != a["db-00"] {
		t.Fatalf("after a snapshot: ids %v (restored) vs %v (original)", b, a)
	}
}
