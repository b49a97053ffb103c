package firewall

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestConfirmWithOneProber: a second ConfirmWith on a window being probed
// does not probe; both return once the first confirms.
func TestConfirmWithOneProber(t *testing.T) {
	p, err := New(DefaultConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	w := &Window{p: p, deadline: time.Now().Add(time.Hour), done: make(chan struct{})}
	p.window, p.last = w, w
	var calls atomic.Int32
	release := make(chan struct{})
	probe := func(ctx context.Context) error {
		calls.Add(1)
		<-release
		return nil
	}
	var wg sync.WaitGroup
	states := make([]WindowState, 3)
	for i := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			states[i] = w.ConfirmWith(context.Background(), 10*time.Millisecond, probe)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("%d probes for one window, want 1", n)
	}
	for i, st := range states {
		if st != WindowConfirmed {
			t.Errorf("ConfirmWith %d: %s", i, st)
		}
	}
	if p.Window() != nil {
		t.Error("confirmed window still open")
	}
}

// TestNetnsRollbackBetweenPlanAndApply is issue 12's race made
// deterministic: a run plans the unconfirmed rules again (drift inside the
// window), the window rolls back before the run applies. The apply must
// see the hold (it plans again under the lock): no rules put back, no new
// window, and a later rollback can never restore what the stale plan saw.
func TestNetnsRollbackBetweenPlanAndApply(t *testing.T) {
	n := newNetns(t)
	p := newProvider(t, func(c *Config) { c.HoldBack = 0 })
	ctx := context.Background()
	good := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"22"}, Action: accept}}}
	runOnce(t, p, n, good)
	_ = p.Window().Confirm()
	confirmed := n.save(IPv4) + n.save(IPv6)

	bad := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"23"}, Action: accept}}, ConfirmSeconds: 30}
	runOnce(t, p, n, bad)
	w := p.Window()
	n.exec("", "ip6tables", "-D", "HIVE-INPUT", "1") // drift: the next plan wants to apply

	env := testEnv(t, n)
	chs, err := p.Plan(ctx, env, batchOf(bad))
	if err != nil || chs[0].Err != nil || !chs[0].Needed {
		t.Fatalf("plan inside the window: %v %v needed=%v", err, chs[0].Err, chs[0].Needed)
	}
	if err := w.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Apply(ctx, env, chs); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(chs[0].Err, ErrHeldBack) {
		t.Errorf("apply after the rollback: err = %v, want ErrHeldBack", chs[0].Err)
	}
	if now := n.save(IPv4) + n.save(IPv6); now != confirmed {
		t.Fatalf("rolled-back rules put back:\n%s\nwant\n%s", now, confirmed)
	}
	if nw := p.Window(); nw != nil {
		t.Fatalf("a new window opened after the rollback (deadline %v)", nw.Deadline())
	}
	if ch := runOnce(t, p, n, bad); !errors.Is(ch.Err, ErrHeldBack) {
		t.Errorf("next run: %v, want ErrHeldBack", ch.Err)
	}
}

// TestNetnsDriftInsideWindowKeepsIt: the same rules applied again inside
// their window (drift) keep the window and its deadline, so runs cannot
// push a rollback back.
func TestNetnsDriftInsideWindowKeepsIt(t *testing.T) {
	n := newNetns(t)
	p := newProvider(t, nil)
	fw := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"23"}, Action: accept}}, ConfirmSeconds: 30}
	runOnce(t, p, n, fw)
	w := p.Window()
	n.exec("", "iptables", "-D", "HIVE-INPUT", "1")
	if ch := runOnce(t, p, n, fw); ch.Err != nil || !ch.Needed {
		t.Fatalf("drift not repaired: %v", ch.Err)
	}
	if p.Window() != w {
		t.Fatal("drift repair opened a new window")
	}
	if st, _, _ := w.State(); st != WindowOpen {
		t.Fatalf("window %s", st)
	}
}

func testEnv(t *testing.T, n *netns) *converge.Env {
	return &converge.Env{Root: "/", Runner: n.runner(), Logger: testLogger(t)}
}

func batchOf(fw *hivev1.Firewall) *converge.Batch {
	return &converge.Batch{Items: []converge.Item{{Key: "firewall:filter", Resource: fwResource(fw)}}}
}

// TestNetnsApplyRollsBackOverdueWindow: a run that applies after the
// deadline, before the window's timer got the lock, rolls the window back
// itself and holds its rules back; it never extends the window.
func TestNetnsApplyRollsBackOverdueWindow(t *testing.T) {
	n := newNetns(t)
	p := newProvider(t, nil)
	good := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"22"}, Action: accept}}}
	runOnce(t, p, n, good)
	_ = p.Window().Confirm()
	confirmed := n.save(IPv4) + n.save(IPv6)
	bad := &hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Protocol: "tcp", Ports: []string{"23"}, Action: accept}}, ConfirmSeconds: 30}
	runOnce(t, p, n, bad)
	w := p.Window()
	n.exec("", "iptables", "-D", "HIVE-INPUT", "1")
	p.now = func() time.Time { return time.Now().Add(time.Minute) } // past the deadline; the timer has not fired
	if ch := runOnce(t, p, n, bad); !errors.Is(ch.Err, ErrHeldBack) {
		t.Fatalf("apply past the deadline: %v, want ErrHeldBack", ch.Err)
	}
	if st, _, _ := w.State(); st != WindowRolledBack {
		t.Errorf("overdue window %s", st)
	}
	if now := n.save(IPv4) + n.save(IPv6); now != confirmed {
		t.Errorf("not rolled back:\n%s", now)
	}
	if p.Window() != nil {
		t.Error("a window is open")
	}
}
