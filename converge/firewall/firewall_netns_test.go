package firewall

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// These tests drive the real iptables-save/iptables-restore (and the ip6
// variants) inside network namespaces created per test; the host's own
// tables are never read or written.

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newProvider(t *testing.T, mod func(*Config)) *Provider {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w := p.Window(); w != nil {
			_ = w.Confirm() // stop the timer before the namespace goes
		}
	})
	return p
}

func fwResource(fw *hivev1.Firewall) *hivev1.Resource {
	return &hivev1.Resource{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: fw}}
}

// converge runs one Plan (+ Apply when needed) like the engine does and
// returns the change.
func runOnce(t *testing.T, p *Provider, n *netns, fw *hivev1.Firewall) *converge.Change {
	t.Helper()
	ctx := context.Background()
	env := &converge.Env{Root: "/", Runner: n.runner(), Logger: testLogger(t)}
	chs, err := p.Plan(ctx, env, &converge.Batch{Items: []converge.Item{{Key: "firewall:filter", Resource: fwResource(fw)}}})
	if err != nil {
		t.Fatal(err)
	}
	ch := chs[0]
	if ch.Err == nil && ch.Needed {
		if err := p.Apply(ctx, env, chs); err != nil {
			t.Fatal(err)
		}
	}
	return ch
}

func baseRules() *hivev1.Firewall {
	return &hivev1.Firewall{
		Rules: []*hivev1.FirewallRule{
			{States: []string{"established", "related"}, Action: accept, Comment: "return traffic"},
			{InInterface: "lo", Action: accept},
			{Protocol: "tcp", Ports: []string{"22", "7400:7403"}, Sources: []string{"10.77.0.0/24", "fd77::/64"}, Action: accept, Comment: "ssh and hive"},
			{Protocol: "icmp", Action: accept},
			{Protocol: "icmpv6", Action: accept},
			{Protocol: "udp", Ports: []string{"53"}, Action: reject},
			{Chain: "output", Protocol: "tcp", Destinations: []string{"192.0.2.0/24"}, Action: drop, Comment: "no test-net"},
			{Chain: "forward", InInterface: "veth+", Action: logAct, Comment: `odd: it's "q" \\ back`},
		},
		Policies: map[string]hivev1.FirewallAction{"forward": drop},
	}
}

// foreign installs Docker-like chains and rules the provider must leave
// alone, and returns the lines of iptables-save naming them.
func foreign(t *testing.T, n *netns) string {
	n.exec(`*filter
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -j DOCKER
-A DOCKER-USER -j RETURN
-A INPUT -s 198.51.100.9/32 -j DROP
COMMIT
`, "iptables-restore", "--noflush")
	return foreignLines(n.save(IPv4))
}

func foreignLines(save string) string {
	var b strings.Builder
	for _, l := range strings.Split(save, "\n") {
		if strings.Contains(l, "DOCKER") || strings.Contains(l, "198.51.100.9") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func TestNetnsTimeline(t *testing.T) {
	n := newNetns(t)
	n.ip("link", "add", "veth9", "type", "veth", "peer", "name", "veth9p")
	before := foreign(t, n)
	p := newProvider(t, nil)
	fw := baseRules()

	// From empty: applied.
	ch := runOnce(t, p, n, fw)
	if ch.Err != nil || !ch.Needed {
		t.Fatalf("first run: needed=%v err=%v", ch.Needed, ch.Err)
	}
	t.Logf("first run diff:\n%s", ch.Diff)
	want, _ := Render(fw)
	for _, f := range Families {
		tables, err := ParseSave([]byte(n.save(f)))
		if err != nil {
			t.Fatal(err)
		}
		cur := Current(tables["filter"])
		for _, b := range Builtins {
			if got := strings.Join(cur.Chains[b.Hive], "\n"); got != strings.Join(want[f].Chains[b.Hive], "\n") {
				t.Errorf("%s %s:\n%s\nwant\n%s", f, b.Hive, got, strings.Join(want[f].Chains[b.Hive], "\n"))
			}
			if js := jumps(tables["filter"], b.Name, b.Hive); len(js) != 1 || js[0] != 0 {
				t.Errorf("%s: jumps %s -> %s at %v", f, b.Name, b.Hive, js)
			}
		}
		if cur.Policies["FORWARD"] != "DROP" || cur.Policies["INPUT"] != "ACCEPT" {
			t.Errorf("%s policies %v", f, cur.Policies)
		}
	}
	if after := foreignLines(n.save(IPv4)); after != before {
		t.Errorf("foreign rules changed:\n%s\nwas\n%s", after, before)
	}
	if w := p.Window(); w == nil {
		t.Fatal("no confirm window after a change")
	} else if err := w.Confirm(); err != nil {
		t.Fatal(err)
	}

	// Again: nothing to do.
	saved := n.save(IPv4) + n.save(IPv6)
	ch = runOnce(t, p, n, fw)
	if ch.Err != nil || ch.Needed {
		t.Fatalf("second run: needed=%v err=%v diff:\n%s", ch.Needed, ch.Err, ch.Diff)
	}
	if p.Window() != nil {
		t.Error("a no-op opened a confirm window")
	}
	if now := n.save(IPv4) + n.save(IPv6); now != saved {
		t.Errorf("no-op run changed the tables")
	}

	// Change one rule: one removed, one added, in IPv4 only.
	fw.Rules[5] = &hivev1.FirewallRule{Protocol: "udp", Ports: []string{"53"}, Action: accept, Family: v4}
	ch = runOnce(t, p, n, fw)
	if ch.Err != nil || !ch.Needed {
		t.Fatalf("change run: needed=%v err=%v", ch.Needed, ch.Err)
	}
	wantDiff := "ipv4: HIVE-INPUT - -p udp -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable\n" +
		"ipv4: HIVE-INPUT + -p udp -m udp --dport 53 -j ACCEPT\n" +
		"ipv6: HIVE-INPUT - -p udp -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable\n"
	if ch.Diff != wantDiff {
		t.Errorf("diff:\n%s\nwant\n%s", ch.Diff, wantDiff)
	}
	if !strings.Contains(n.save(IPv4), "-A HIVE-INPUT -p udp -m udp --dport 53 -j ACCEPT") {
		t.Error("changed rule not in place")
	}
	_ = p.Window().Confirm()

	// Drift: someone deletes the jump and adds a rule to a hive chain.
	n.exec("", "iptables", "-D", "INPUT", "-j", "HIVE-INPUT")
	n.exec("", "iptables", "-A", "HIVE-OUTPUT", "-j", "ACCEPT")
	ch = runOnce(t, p, n, fw)
	if !ch.Needed || !strings.Contains(ch.Diff, "jump INPUT -> HIVE-INPUT inserted first") || !strings.Contains(ch.Diff, "HIVE-OUTPUT - -j ACCEPT") {
		t.Errorf("drift not planned:\n%s", ch.Diff)
	}
	_ = p.Window().Confirm()
	if ch = runOnce(t, p, n, fw); ch.Needed {
		t.Errorf("not converged after drift:\n%s", ch.Diff)
	}

	// Removal: hive's chains and jumps go, foreign rules stay.
	env := &converge.Env{Root: "/", Runner: n.runner(), Logger: testLogger(t)}
	rms, err := p.Prune(context.Background(), env, nil)
	if err != nil || len(rms) != 1 {
		t.Fatal(err, rms)
	}
	rm := rms[0]
	if err := p.Apply(context.Background(), env, rms); err != nil || rm.Err != nil {
		t.Fatal(err, rm.Err)
	}
	_ = p.Window().Confirm()
	for _, f := range Families {
		if s := n.save(f); strings.Contains(s, "HIVE-") || !strings.Contains(s, ":FORWARD ACCEPT") {
			t.Errorf("%s after removal:\n%s", f, s)
		}
	}
	if after := foreignLines(n.save(IPv4)); after != before {
		t.Errorf("foreign rules changed by removal:\n%s\nwas\n%s", after, before)
	}
	if rms, err := p.Prune(context.Background(), env, nil); err != nil || len(rms) != 0 {
		t.Errorf("second prune: %v %v", rms, err)
	}
}

func TestNetnsBadInputLeavesStateAlone(t *testing.T) {
	n := newNetns(t)
	p := newProvider(t, nil)
	if ch := runOnce(t, p, n, baseRules()); ch.Err != nil {
		t.Fatal(ch.Err)
	}
	_ = p.Window().Confirm()
	before := n.save(IPv4) + n.save(IPv6)
	for _, tt := range []struct {
		name string
		rule *hivev1.FirewallRule
		want error
		msg  string
	}{
		{"unknown interface", &hivev1.FirewallRule{InInterface: "eth7", Action: accept}, ErrUnknownInterface, "unknown interface: eth7 (the machine has lo"},
		{"bad cidr", &hivev1.FirewallRule{Sources: []string{"10.0.0.300/24"}, Action: accept}, ErrInvalid, `firewall rule 9: sources: "10.0.0.300/24" is not a CIDR`},
	} {
		fw := baseRules()
		fw.Rules = append(fw.Rules, tt.rule)
		ch := runOnce(t, p, n, fw)
		if !errors.Is(ch.Err, tt.want) || !strings.Contains(ch.Err.Error(), tt.msg) {
			t.Errorf("%s: err = %v, want %v containing %q", tt.name, ch.Err, tt.want, tt.msg)
		}
	}
	if after := n.save(IPv4) + n.save(IPv6); after != before {
		t.Errorf("bad input changed the tables:\n%s", after)
	}
	if p.Window() != nil {
		t.Error("bad input opened a window")
	}
	// Once the interface exists, the same rules go through.
	n.ip("link", "add", "eth7", "type", "veth", "peer", "name", "eth7p")
	withEth7 := baseRules()
	withEth7.Rules = append(withEth7.Rules, &hivev1.FirewallRule{InInterface: "eth7", Action: accept})
	if ch := runOnce(t, p, n, withEth7); ch.Err != nil || !ch.Needed || !strings.Contains(ch.Diff, "-i eth7 -j ACCEPT") {
		t.Fatalf("after adding eth7: %v\n%s", ch.Err, ch.Diff)
	}
	_ = p.Window().Confirm()
	if ch := runOnce(t, p, n, baseRules()); ch.Err != nil {
		t.Fatal(ch.Err)
	}
	_ = p.Window().Confirm()

	// IPv6 restore failing after IPv4 was applied: IPv4 is restored, the
	// change fails, nothing is half-applied. The fault is injected around
	// the real tools: ip6tables-restore gets a line it refuses.
	fw := baseRules()
	fw.Rules[2].Ports = []string{"2222"}
	env := &converge.Env{Root: "/", Runner: faultRunner{Runner: n.runner(), name: "ip6tables-restore"}, Logger: testLogger(t)}
	chs, err := p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{{Key: "firewall:filter", Resource: fwResource(fw)}}})
	if err != nil || !chs[0].Needed {
		t.Fatal(err, chs[0].Err)
	}
	if err := p.Apply(context.Background(), env, chs); err != nil {
		t.Fatal(err)
	}
	if err := chs[0].Err; err == nil || !strings.Contains(err.Error(), "apply ipv6 rules") || !strings.Contains(err.Error(), "previous rules restored") {
		t.Errorf("failed restore: err = %v", err)
	}
	if after := n.save(IPv4) + n.save(IPv6); after != before {
		t.Errorf("failed IPv6 restore left IPv4 changed:\n%s", after)
	}
	if p.Window() != nil {
		t.Error("failed apply opened a window")
	}
}

// faultRunner breaks one command by appending a line its tool refuses.
type faultRunner struct {
	converge.Runner
	name string
}

func (r faultRunner) Run(ctx context.Context, c converge.Cmd) (converge.Output, error) {
	if c.Name == r.name {
		c.Stdin = []byte(strings.Replace(string(c.Stdin), "COMMIT\n", "-A HIVE-INPUT -j NO-SUCH-CHAIN\nCOMMIT\n", 1))
	}
	return r.Runner.Run(ctx, c)
}

// twoHosts links a "node" namespace (firewall under test) and a "peer"
// namespace (client, or coordinator) with veth: node 10.77.0.1, peer
// 10.77.0.2.
func twoHosts(t *testing.T) (node, peer *netns) {
	node, peer = newNetns(t), newNetns(t)
	link(t, node, peer, "10.77.0.1", "10.77.0.2", "fd77::1", "fd77::2")
	return node, peer
}

// listen opens a TCP listener inside n that accepts and closes
// connections until the test ends.
func listen(t *testing.T, n *netns, addr string) {
	t.Helper()
	var l net.Listener
	if err := n.do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// dial connects from inside n; nil means the connection was accepted.
func dial(n *netns, addr string, timeout time.Duration) error {
	var err error
	if e := n.do(func() error {
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
		return nil
	}); e != nil {
		return e
	}
	return err
}

func TestNetnsTraffic(t *testing.T) {
	node, peer := twoHosts(t)
	for _, a := range []string{"10.77.0.1:8080", "10.77.0.1:8081", "10.77.0.1:8082", "[fd77::1]:8080", "[fd77::1]:8081"} {
		listen(t, node, a)
	}
	// Before: everything open.
	for _, a := range []string{"10.77.0.1:8080", "10.77.0.1:8081", "10.77.0.1:8082", "[fd77::1]:8081"} {
		if err := dial(peer, a, 3*time.Second); err != nil {
			t.Fatalf("before: dial %s: %v", a, err)
		}
	}
	p := newProvider(t, nil)
	fw := &hivev1.Firewall{
		Rules: []*hivev1.FirewallRule{
			{States: []string{"established", "related"}, Action: accept},
			{InInterface: "lo", Action: accept},
			{Protocol: "tcp", Ports: []string{"8080"}, Sources: []string{"10.77.0.2", "fd77::2"}, Action: accept},
			{Protocol: "tcp", Ports: []string{"8081"}, Action: reject},
			{Protocol: "icmpv6", Action: accept}, // neighbour discovery
		},
		Policies: map[string]hivev1.FirewallAction{"input": drop},
	}
	if ch := runOnce(t, p, node, fw); ch.Err != nil || !ch.Needed {
		t.Fatalf("apply: %v", ch.Err)
	}
	_ = p.Window().Confirm()
	for _, tt := range []struct {
		addr string
		want string // "" accepted, "refused" rejected, "timeout" dropped
	}{
		{"10.77.0.1:8080", ""},
		{"[fd77::1]:8080", ""},
		{"10.77.0.1:8081", "refused"},
		{"[fd77::1]:8081", "refused"},
		{"10.77.0.1:8082", "timeout"}, // policy DROP
	} {
		timeout := 2 * time.Second // the first ICMPv6 error may wait for neighbour discovery
		if tt.want == "timeout" {
			timeout = 400 * time.Millisecond
		}
		err := dial(peer, tt.addr, timeout)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("dial %s: %v, want accepted", tt.addr, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("dial %s: %v, want %s", tt.addr, err, tt.want)
		}
	}
	// The node itself still reaches the peer (output is open, replies are
	// accepted as established).
	listen(t, peer, "10.77.0.2:9000")
	if err := dial(node, "10.77.0.2:9000", time.Second); err != nil {
		t.Errorf("node to peer: %v", err)
	}
}

func TestNetnsConfirmWindow(t *testing.T) {
	node, coord := twoHosts(t)
	listen(t, coord, "10.77.0.2:7400")
	probe := func(ctx context.Context) error {
		timeout := time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = min(time.Until(d), timeout)
		}
		return dial(node, "10.77.0.2:7400", timeout)
	}
	if err := dial(node, "10.77.0.2:7400", 3*time.Second); err != nil {
		t.Fatalf("coordinator unreachable before the change: %v", err)
	}
	p := newProvider(t, func(c *Config) { c.HoldBack = 0 })
	// Windows that must end confirmed get 3 s, so a loaded machine does
	// not turn a slow probe into a rollback; the one that must roll back
	// gets 1 s.
	good := &hivev1.Firewall{
		Rules:          []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"22"}, Action: accept}},
		ConfirmSeconds: 3,
	}

	// A change that keeps the coordinator reachable is confirmed and stays.
	if ch := runOnce(t, p, node, good); ch.Err != nil || !ch.Needed {
		t.Fatalf("apply good: %v", ch.Err)
	}
	w := p.Window()
	if st := w.ConfirmWith(context.Background(), 100*time.Millisecond, probe); st != WindowConfirmed {
		t.Fatalf("good rules: window %s", st)
	}
	time.Sleep(3200 * time.Millisecond) // past the deadline: nothing happens
	if ch := runOnce(t, p, node, good); ch.Needed || ch.Err != nil {
		t.Fatalf("confirmed rules were changed: %v %s", ch.Err, ch.Diff)
	}
	confirmed := node.save(IPv4)

	// A change that cuts the coordinator off is rolled back by itself.
	bad := &hivev1.Firewall{
		Rules:          append(good.Rules, &hivev1.FirewallRule{Chain: "output", Protocol: "tcp", Destinations: []string{"10.77.0.2"}, Ports: []string{"7400"}, Action: drop, Comment: "cuts the coordinator off"}),
		ConfirmSeconds: 1,
	}
	start := time.Now()
	if ch := runOnce(t, p, node, bad); ch.Err != nil || !ch.Needed {
		t.Fatalf("apply bad: %v", ch.Err)
	}
	w = p.Window()
	if err := probe(context.Background()); err == nil {
		t.Fatal("the bad rules did not cut the coordinator off")
	}
	st := w.ConfirmWith(context.Background(), 100*time.Millisecond, probe)
	if st != WindowRolledBack {
		_, _, err := w.State()
		t.Fatalf("bad rules: window %s (%v)", st, err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("rolled back after %v, want about 1s", d)
	}
	if now := node.save(IPv4); now != confirmed {
		t.Errorf("rollback did not restore the confirmed rules:\n%s\nwant\n%s", now, confirmed)
	}
	if err := probe(context.Background()); err != nil {
		t.Errorf("coordinator still unreachable after rollback: %v", err)
	}
	if err := w.Confirm(); !errors.Is(err, ErrWindowClosed) {
		t.Errorf("late confirm: %v", err)
	}

	// The rolled-back rules are held back and the rollback is reported.
	ch := runOnce(t, p, node, bad)
	if !errors.Is(ch.Err, ErrHeldBack) || !strings.Contains(ch.Err.Error(), "rolled back at") {
		t.Fatalf("after rollback: err = %v", ch.Err)
	}
	if now := node.save(IPv4); now != confirmed {
		t.Error("held-back rules were applied")
	}
	// Other rules go through.
	if ch := runOnce(t, p, node, &hivev1.Firewall{ConfirmSeconds: 3}); ch.Err != nil || !ch.Needed {
		t.Fatalf("new rules after rollback: %v", ch.Err)
	}
	if st := p.Window().ConfirmWith(context.Background(), 100*time.Millisecond, probe); st != WindowConfirmed {
		t.Fatalf("new rules: %s", st)
	}
}

func TestNetnsSupersededWindowRollsBackToConfirmed(t *testing.T) {
	n := newNetns(t)
	p := newProvider(t, nil)
	fw := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"1"}, Action: accept}}, ConfirmSeconds: 30}
	runOnce(t, p, n, fw)
	_ = p.Window().Confirm()
	confirmed := n.save(IPv4)
	fw.Rules[0].Ports = []string{"2"}
	runOnce(t, p, n, fw)
	first := p.Window()
	fw.Rules[0].Ports = []string{"3"}
	runOnce(t, p, n, fw)
	second := p.Window()
	if st, _, _ := first.State(); st != WindowSuperseded {
		t.Errorf("first window %s", st)
	}
	if err := second.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if now := n.save(IPv4); now != confirmed {
		t.Errorf("rollback went to:\n%s\nwant the last confirmed:\n%s", now, confirmed)
	}
}

// TestNetnsConformance runs the shared provider timeline (cancelled plan,
// from empty, no-op, drift and reconverge) against iptables in a namespace;
// the fingerprint is the namespace's iptables-save and ip6tables-save.
func TestNetnsConformance(t *testing.T) {
	n := newNetns(t)
	foreign(t, n)
	p := newProvider(t, nil)
	fw := fwResource(baseRules())
	want, _ := Render(baseRules())
	convergetest.Run(t, convergetest.Timeline{
		Provider:    p,
		Env:         &converge.Env{Root: t.TempDir(), Runner: n.runner(), Logger: testLogger(t)},
		Desired:     []*hivev1.Resource{fw},
		Fingerprint: func(t *testing.T) string { return n.save(IPv4) + n.save(IPv6) },
		Check: func(t *testing.T) {
			for _, f := range Families {
				tables, _ := ParseSave([]byte(n.save(f)))
				if got := Current(tables["filter"]); !got.Equal(&Ruleset{Chains: want[f].Chains, Policies: got.Policies}) || got.Policies["FORWARD"] != "DROP" {
					t.Errorf("%s: %+v", f, got)
				}
			}
		},
		Drift: func(t *testing.T) {
			n.exec("", "ip6tables", "-D", "HIVE-INPUT", "1")
			n.exec("", "iptables", "-P", "FORWARD", "ACCEPT")
		},
	})
}

// TestNetnsWindowSurvivesRestart: an agent that dies inside a confirm
// window rolls back after its restart when nobody confirms.
func TestNetnsWindowSurvivesRestart(t *testing.T) {
	n := newNetns(t)
	state := filepath.Join(t.TempDir(), "firewall-window.json")
	first := newProvider(t, func(c *Config) { c.StateFile = state })
	good := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"22"}, Action: accept}}}
	runOnce(t, first, n, good)
	_ = first.Window().Confirm()
	confirmed := n.save(IPv4) + n.save(IPv6)
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file kept after confirm: %v", err)
	}

	bad := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"23"}, Action: accept}}}
	runOnce(t, first, n, bad)
	// The agent "crashes": its timer never fires.
	first.Window().timer.Stop()
	first.mu.Lock()
	first.window = nil
	first.mu.Unlock()
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no state file inside the window: %v", err)
	}

	second := newProvider(t, func(c *Config) { c.StateFile = state; c.ConfirmWindow = time.Second })
	if ch := runOnce(t, second, n, bad); ch.Needed || ch.Err != nil {
		t.Fatalf("after restart: needed=%v err=%v", ch.Needed, ch.Err)
	}
	w := second.Window()
	if w == nil {
		t.Fatal("window not reopened after restart")
	}
	select {
	case <-w.Done():
	case <-time.After(60 * time.Second): // the rollback runs iptables-restore, slow on a loaded host
		t.Fatal("reopened window did not end")
	}
	if st, _, err := w.State(); st != WindowRolledBack {
		t.Fatalf("reopened window: %s %v", st, err)
	}
	if now := n.save(IPv4) + n.save(IPv6); now != confirmed {
		t.Errorf("not rolled back to the confirmed rules:\n%s", now)
	}
	// The hold is on disk with the window gone: an agent restarted after
	// the rollback does not apply the rolled-back rules again.
	third := newProvider(t, func(c *Config) { c.StateFile = state; c.ConfirmWindow = time.Second })
	if ch := runOnce(t, third, n, bad); !errors.Is(ch.Err, ErrHeldBack) {
		t.Fatalf("after a restart past the rollback: err = %v", ch.Err)
	}
	if third.Window() != nil {
		t.Error("a window reopened after the rollback")
	}
	if now := n.save(IPv4) + n.save(IPv6); now != confirmed {
		t.Errorf("held-back rules applied after a restart:\n%s", now)
	}
	// Other rules clear the hold, and confirming them leaves no state.
	runOnce(t, third, n, good)
	if ch := runOnce(t, third, n, &hivev1.Firewall{}); ch.Err != nil || !ch.Needed {
		t.Fatalf("new rules after the restart: %v", ch.Err)
	}
	_ = third.Window().Confirm()
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file kept after the hold ended and the window was confirmed: %v", err)
	}
}

// TestNetnsEngine runs the provider through the real converge engine:
// changed, then ok, then pruned when the node state no longer has a
// firewall.
func TestNetnsEngine(t *testing.T) {
	n := newNetns(t)
	p := newProvider(t, nil)
	reg, err := converge.NewRegistry(p)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := converge.New(converge.Config{Root: "/", Runner: n.runner(), Logger: testLogger(t), Family: converge.FamilyDebian}, reg)
	if err != nil {
		t.Fatal(err)
	}
	st := &hivev1.NodeState{Node: "n1", Generation: 1, Resources: []*hivev1.Resource{fwResource(baseRules())}}
	outcome := func(rep *converge.Report) string {
		var s []string
		for _, r := range rep.Results {
			s = append(s, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
		}
		return strings.Join(s, " ")
	}
	for i, want := range []string{"firewall:filter=CHANGED", "firewall:filter=OK"} {
		rep, err := eng.Run(context.Background(), st, converge.RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := outcome(rep); got != want {
			t.Errorf("run %d: %s, want %s", i+1, got, want)
		}
		if w := p.Window(); w != nil {
			_ = w.Confirm()
		}
	}
	st.Resources = nil
	rep, err := eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcome(rep); got != "firewall:filter=CHANGED" {
		t.Errorf("prune run: %s", got)
	}
	if s := n.save(IPv4); strings.Contains(s, "HIVE-") {
		t.Errorf("hive chains left after prune:\n%s", s)
	}
	rep, _ = eng.Run(context.Background(), st, converge.RunOptions{})
	if got := outcome(rep); got != "" {
		t.Errorf("second prune run: %s", got)
	}
}
