package gossip_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/gossip"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// tlog sends slog output to t.Log.
type tlog struct {
	mu sync.Mutex
	t  testing.TB
	on bool
}

func (w *tlog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.on {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	w := &tlog{t: t, on: true}
	t.Cleanup(func() { w.mu.Lock(); w.on = false; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type member struct {
	*gossip.Gossip
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, valid once done is closed
}

// stop cancels Run (a graceful leave) and waits for it.
func (m *member) stop(t *testing.T) {
	t.Helper()
	m.cancel()
	select {
	case <-m.done:
		if m.err != nil {
			t.Errorf("run: %v", m.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

func config(t *testing.T, name string, join []string, meta *hivev1.MemberMeta) gossip.Config {
	c := gossip.DefaultConfig()
	c.Name = name
	c.BindAddr = "127.0.0.1:0"
	c.Join = join
	c.Meta = meta
	c.Profile = gossip.ProfileLocal
	c.Logger = testLogger(t).With("node", name)
	c.JoinBackoffMin = 50 * time.Millisecond
	c.JoinBackoffMax = 200 * time.Millisecond
	c.RejoinInterval = 300 * time.Millisecond
	return c
}

func start(t *testing.T, cfg gossip.Config) *member {
	t.Helper()
	g, err := gossip.New(cfg)
	if err != nil {
		t.Fatalf("new %s: %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{Gossip: g, cancel: cancel, done: make(chan struct{})}
	go func() { m.err = g.Run(ctx); close(m.done) }()
	t.Cleanup(func() {
		cancel()
		<-m.done
	})
	return m
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
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

func stateOf(g *gossip.Gossip, name string) gossip.State {
	m, ok := find(g.Members(), name)
	if !ok {
		return 0
	}
	return m.State
}

func agentMeta(role string) *hivev1.MemberMeta {
	return &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_AGENT, Labels: map[string]string{"role": role}, Version: "test"}
}

func TestJoinMetaAndUpdate(t *testing.T) {
	coord := start(t, config(t, "c1", nil, &hivev1.MemberMeta{
		Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, GrpcAddr: "127.0.0.1:7400", RaftAddr: "127.0.0.1:7401", BootstrapExpect: 3,
	}))
	join := []string{coord.LocalAddr()}
	a1 := start(t, config(t, "a1", join, agentMeta("web")))
	a2 := start(t, config(t, "a2", join, agentMeta("db")))
	all := []*member{coord, a1, a2}
	for _, m := range all {
		waitFor(t, "three alive members", 5*time.Second, func() bool {
			n := 0
			for _, mm := range m.Members() {
				if mm.State == gossip.StateAlive {
					n++
				}
			}
			return n == 3
		})
	}
	select {
	case <-a1.Joined():
	default:
		t.Fatal("a1.Joined not closed after join")
	}

	// Agents find the coordinator and its gRPC address from metadata.
	cs := a2.Coordinators()
	if len(cs) != 1 || cs[0].Name != "c1" || cs[0].Meta.GetGrpcAddr() != "127.0.0.1:7400" || cs[0].Meta.GetBootstrapExpect() != 3 {
		t.Fatalf("coordinators seen by a2 = %+v", cs)
	}
	m, _ := find(coord.Members(), "a1")
	if m.Meta.GetLabels()["role"] != "web" || m.Meta.GetKind() != hivev1.MemberKind_MEMBER_KIND_AGENT || m.Addr != a1.LocalAddr() {
		t.Fatalf("a1 as seen by c1 = %+v", m)
	}
	self, _ := find(a1.Members(), "a1")
	if !self.Self {
		t.Fatal("a1 does not see itself as Self")
	}
	if p := m.Proto(); p.GetGossip() != hivev1.GossipState_GOSSIP_STATE_ALIVE || p.GetLabels()["role"] != "web" {
		t.Fatalf("proto = %v", p)
	}

	// A metadata update propagates and is delivered as an event.
	events, cancel := coord.Subscribe(16)
	defer cancel()
	if err := a2.UpdateMeta(context.Background(), agentMeta("cache")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "update event", 5*time.Second, func() bool {
		for {
			select {
			case ev := <-events:
				if ev.Type == gossip.EventUpdate && ev.Member.Name == "a2" && ev.Member.Meta.GetLabels()["role"] == "cache" {
					return true
				}
			default:
				return false
			}
		}
	})
	waitFor(t, "a1 sees a2's new label", 5*time.Second, func() bool {
		m, _ := find(a1.Members(), "a2")
		return m.Meta.GetLabels()["role"] == "cache"
	})
}

func TestLeaveAndDeadDetection(t *testing.T) {
	a := start(t, config(t, "a", nil, agentMeta("x")))
	join := []string{a.LocalAddr()}
	b := start(t, config(t, "b", join, agentMeta("x")))
	c := start(t, config(t, "c", join, agentMeta("x")))
	waitFor(t, "three members", 5*time.Second, func() bool { return len(a.Members()) == 3 && len(b.Members()) == 3 })
	events, cancel := a.Subscribe(16)
	defer cancel()

	// A graceful stop is seen as "left".
	c.stop(t)
	waitFor(t, "c left", 10*time.Second, func() bool {
		return stateOf(a.Gossip, "c") == gossip.StateLeft && stateOf(b.Gossip, "c") == gossip.StateLeft
	})

	// A member that vanishes without leaving is detected as "dead".
	b.Close()
	waitFor(t, "b dead", 15*time.Second, func() bool { return stateOf(a.Gossip, "b") == gossip.StateDead })

	var leaves []string
	for len(events) > 0 {
		ev := <-events
		if ev.Type == gossip.EventLeave {
			leaves = append(leaves, ev.Member.Name+":"+ev.Member.State.String())
		}
	}
	if strings.Join(leaves, ",") != "c:left,b:dead" {
		t.Errorf("leave events = %v, want [c:left b:dead]", leaves)
	}
	if got := a.Coordinators(); len(got) != 0 {
		t.Errorf("coordinators = %v", got)
	}
}

func TestWrongKeyRefused(t *testing.T) {
	k1, _ := gossip.NewKey()
	k2, _ := gossip.NewKey()
	key1, err := gossip.ParseKey([]byte(k1 + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	key2, _ := gossip.ParseKey([]byte(k2))

	ca := config(t, "a", nil, agentMeta("x"))
	ca.Key = key1
	a := start(t, ca)
	join := []string{a.LocalAddr()}

	good := config(t, "good", join, agentMeta("x"))
	good.Key = key1
	g := start(t, good)

	bad := config(t, "bad", join, agentMeta("x"))
	bad.Key = key2
	b := start(t, bad)

	plain := config(t, "plain", join, agentMeta("x"))
	p := start(t, plain)

	waitFor(t, "good joins", 5*time.Second, func() bool { return stateOf(a.Gossip, "good") == gossip.StateAlive })
	<-g.Joined()
	// Give the refused members several join attempts.
	time.Sleep(1500 * time.Millisecond)
	for _, name := range []string{"bad", "plain"} {
		if _, ok := find(a.Members(), name); ok {
			t.Errorf("%s (wrong or no key) became a member of an encrypted pool", name)
		}
	}
	for _, m := range []*member{b, p} {
		select {
		case <-m.Joined():
			t.Errorf("a member with the wrong key reports joined")
		default:
		}
		if len(m.Members()) != 1 {
			t.Errorf("refused member sees %d members", len(m.Members()))
		}
	}
}

func TestRejoinAfterPoolRestart(t *testing.T) {
	cfgA := config(t, "a", nil, agentMeta("x"))
	a := start(t, cfgA)
	addr := a.LocalAddr()
	b := start(t, config(t, "b", []string{addr}, agentMeta("x")))
	waitFor(t, "b joined", 5*time.Second, func() bool { return stateOf(b.Gossip, "a") == gossip.StateAlive })

	// a crashes and comes back on the same address, knowing nobody: b's
	// rejoin loop must bring the pool together again.
	a.Close()
	waitFor(t, "a dead", 15*time.Second, func() bool { return stateOf(b.Gossip, "a") == gossip.StateDead })
	cfgA.BindAddr = addr
	a2 := start(t, cfgA)
	waitFor(t, "pool healed", 10*time.Second, func() bool {
		return stateOf(b.Gossip, "a") == gossip.StateAlive && stateOf(a2.Gossip, "b") == gossip.StateAlive
	})
}

func TestMetaTooLarge(t *testing.T) {
	labels := map[string]string{}
	for i := range 40 {
		labels[strings.Repeat("k", 5)+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("v", 10)
	}
	big := &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_AGENT, Labels: labels}
	c := config(t, "a", nil, big)
	if err := c.Validate(); !errors.Is(err, gossip.ErrMetaTooLarge) {
		t.Fatalf("Validate = %v, want ErrMetaTooLarge", err)
	}
	a := start(t, config(t, "a", nil, agentMeta("x")))
	if err := a.UpdateMeta(context.Background(), big); !errors.Is(err, gossip.ErrMetaTooLarge) {
		t.Fatalf("UpdateMeta = %v, want ErrMetaTooLarge", err)
	}
	m, _ := find(a.Members(), "a")
	if m.Meta.GetLabels()["role"] != "x" {
		t.Fatalf("meta changed after a refused update: %v", m.Meta)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*gossip.Config)
		want string
	}{
		{"ok", func(*gossip.Config) {}, ""},
		{"no name", func(c *gossip.Config) { c.Name = "" }, "name is empty"},
		{"bad bind", func(c *gossip.Config) { c.BindAddr = "7402" }, "bind address"},
		{"bad advertise", func(c *gossip.Config) { c.AdvertiseAddr = "example.com:1" }, "advertise address"},
		{"bad join", func(c *gossip.Config) { c.Join = []string{"nohost"} }, "join address"},
		{"bad key", func(c *gossip.Config) { c.Key = []byte("short") }, "key"},
		{"bad profile", func(c *gossip.Config) { c.Profile = "fast" }, "unknown profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := gossip.DefaultConfig()
			c.Name = "n"
			tc.mod(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
	if d := gossip.DefaultConfig(); d.BindAddr != ":7402" {
		t.Fatalf("default bind %q", d.BindAddr)
	}
	for _, bad := range []string{"", "!!!", "c2hvcnQ="} {
		if _, err := gossip.ParseKey([]byte(bad)); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}
