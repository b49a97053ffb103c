package netlabtests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
)

// The firewall lock-out scenario (issue 12). One TLS coordinator c1; agent
// a1 runs without --root, so it converges the real iptables and ip6tables
// of its own namespace. The good rule set has input policy drop and lets
// return traffic and everything from c1 in; the bad one has input policy
// drop too but lets nothing from c1 in: the agent is cut off, its probe
// fails, and the confirm window must roll the change back by itself.
//
// confirm is 3 s rather than 10 s: the race sits at the deadline, not in
// the window's length, and 3 s is longer than the 2 s of SIGHUPs before
// the deadline, so every storm starts inside the window after the apply.
// A good rule set is confirmed by a probe that takes milliseconds (a TLS
// dial to c1), far inside 3 s even on two loaded cores. The site accepts
// 1 s to 1 h.
const (
	lockoutConfirm = 3 * time.Second
	// lockoutSlack is what a rollback may take past the deadline: two
	// iptables-restore runs, or a restart of the agent (kill cycles).
	lockoutSlack = 1500 * time.Millisecond
)

func lockoutSite(coord string, good bool, cycle int) string {
	rules := `        - in_interface: lo
        - proto: tcp
          ports: [22]
          comment: "bad ` + fmt.Sprint(cycle) + `"
`
	if good {
		rules = `        - states: [established, related]
        - in_interface: lo
        - sources: [` + coord + `/32]
          comment: coordinator
        - proto: tcp
          ports: [22]
          comment: "good ` + fmt.Sprint(cycle) + `"
`
	}
	return `site: netlab
selectors:
  - match: {tier: web}
    roles: [edge]
roles:
  edge:
    firewall:
      confirm: ` + lockoutConfirm.String() + `
      policies: {input: drop}
      rules:
` + rules
}

// addHostAgent is addAgent without --root: the agent converges its own
// namespace's firewall (the site must hold nothing that touches the
// machine's files).
func (c *cluster) addHostAgent(name string, labels []string, via *node) *node {
	c.t.Helper()
	n := &node{name: name, host: c.lab.AddHost(name), labels: labels}
	n.data = filepath.Join(c.dir, name, "data")
	certArgs := []string{"cert", "create", "--agent", name}
	for _, l := range labels {
		certArgs = append(certArgs, "--label", l)
	}
	c.tls(certArgs...)
	args := c.agentArgs(n, name, via)
	if i := slices.Index(args, "--root"); i >= 0 {
		args = slices.Delete(args, i, i+2)
	}
	n.proc = n.host.Start("hive-agent", args...)
	c.agents = append(c.agents, n)
	return n
}

// filterSave is the namespace's filter table, both families, without
// comments and counters.
func filterSave(t testing.TB, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command("ip", "netns", "exec", ns, tool, "-t", "filter").Output()
		if err != nil {
			t.Fatalf("%s in %s: %v", tool, ns, err)
		}
		b.WriteString("# " + tool + "\n")
		for _, l := range strings.Split(string(out), "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			b.WriteString(counters.ReplaceAllString(l, "") + "\n")
		}
	}
	return b.String()
}

var counters = regexp.MustCompile(` \[\d+:\d+\]$`)

// agentEvent is one firewall line of the agent's log.
type agentEvent struct {
	at       time.Time
	rules    string
	deadline time.Time
}

var (
	fwChangedRe  = regexp.MustCompile(`time=(\S+) level=INFO msg="firewall changed; waiting for confirmation".*? rules=(\w+) deadline=(\S+)`)
	fwRestoredRe = regexp.MustCompile(`time=(\S+) level=WARN msg="firewall change not confirmed in time: previous rules restored".*? rules=(\w+) deadline=(\S+)`)
	fwConfirmRe  = regexp.MustCompile(`time=(\S+) level=INFO msg="firewall change confirmed".*? rules=(\w+)()`)
	fwEndedRe    = regexp.MustCompile(`time=(\S+) level=INFO msg="firewall confirm window ended".*? state="?([a-z ]+)"?()`)
	fwReopenRe   = regexp.MustCompile(`time=(\S+) level=WARN msg="unconfirmed firewall change found from before a restart: confirm window reopened".*? rules=(\w+) deadline=(\S+)`)
	fwHeldRe     = regexp.MustCompile(`time=(\S+) level=WARN msg="resource failed" component=converge key=firewall:filter err="firewall rules held back after rollback: rules (\w+)()`)
	agentStartRe = regexp.MustCompile(`time=(\S+) level=INFO msg="hive-agent starting"()()`)
)

func agentEvents(t testing.TB, a *node, re *regexp.Regexp) []agentEvent {
	t.Helper()
	var out []agentEvent
	for _, m := range re.FindAllStringSubmatch(a.proc.Log(), -1) {
		ev := agentEvent{rules: m[2]}
		var err error
		if ev.at, err = time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Fatalf("agent log time %q: %v", m[1], err)
		}
		if m[3] != "" {
			if ev.deadline, err = time.Parse(time.RFC3339Nano, m[3]); err != nil {
				t.Fatalf("agent log deadline %q: %v", m[3], err)
			}
		}
		out = append(out, ev)
	}
	return out
}

// waitEvent waits for the (n+1)th event of re and returns it.
func waitEvent(t testing.TB, a *node, re *regexp.Regexp, n int, timeout time.Duration, what string) agentEvent {
	t.Helper()
	var ev agentEvent
	if !poll(timeout, func() bool {
		evs := agentEvents(t, a, re)
		if len(evs) > n {
			ev = evs[n]
			return true
		}
		return false
	}) {
		t.Fatalf("%s: not in the agent's log after %v", what, timeout)
	}
	return ev
}

// TestFirewallLockoutRollsBack runs lock-out cycles against a real agent
// with SIGHUPs every 50 ms from 2 s before to 2 s after each deadline (so
// converge runs overlap the rollback), five of them with the agent left
// alone and five with the agent killed (-9) 300 ms before the deadline
// and restarted. Each cycle checks: one apply of the bad rules and one
// rollback, within the window plus lockoutSlack; once the good rules are
// back they never leave again (both families, polled every 100 ms); they
// equal the good rules exactly; status reports the rollback for that
// generation, and "held back" is never reported before the rollback; at most one prober per window (one "confirm window ended"
// line per window); the next good rule set applies, is confirmed and
// stays past its deadline.
func TestFirewallLockoutRollsBack(t *testing.T) {
	testenv.SkipShort(t)
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore")
	// A storm is 80 runs, each with its report, against a coordinator that
	// takes 1 report per second per node (burst 120): the agent keeps only
	// the newest few queued, so status shows the latest run within seconds.
	c := newCluster(t, clusterConfig{coordinators: 1, agentFlags: []string{"--max-queued-reports", "3"}})
	c1 := c.coords[0]
	a := c.addHostAgent("a1", []string{"tier=web"}, c1)

	// good applies good rule set i and checks that it is confirmed and,
	// with past, stays past its deadline (a confirmed window has nothing
	// left to race with: the first and last sets wait, the others go on
	// at once, which saves ~3.3 s a cycle); it returns the tables.
	good := func(i int, past bool) string {
		t.Helper()
		n := len(agentEvents(t, a, fwChangedRe))
		nc := len(agentEvents(t, a, fwConfirmRe))
		gen := c.push(lockoutSite(c1.host.Addr, true, i), false)
		ch := waitEvent(t, a, fwChangedRe, n, 30*time.Second, fmt.Sprintf("good rules %d applied", i))
		waitEvent(t, a, fwConfirmRe, nc, 30*time.Second, fmt.Sprintf("good rules %d confirmed", i))
		c.waitConverged(gen, 30*time.Second, a)
		if past {
			time.Sleep(time.Until(ch.deadline.Add(300 * time.Millisecond)))
		}
		save := filterSave(t, a.host.NS)
		for _, want := range []string{":INPUT DROP", "-A INPUT -j HIVE-INPUT", "-A HIVE-INPUT -s " + c1.host.Addr + "/32 -m comment --comment coordinator -j ACCEPT", fmt.Sprintf(`--comment "good %d"`, i)} {
			if !strings.Contains(save, want) {
				t.Fatalf("good rules %d: no %q in\n%s", i, want, save)
			}
		}
		if strings.Count(save, ":INPUT DROP") != 2 {
			t.Fatalf("good rules %d: input policy not drop in both families:\n%s", i, save)
		}
		if evs := agentEvents(t, a, fwRestoredRe); len(evs) > 0 && evs[len(evs)-1].at.After(ch.at) {
			t.Fatalf("good rules %d rolled back", i)
		}
		if now := filterSave(t, a.host.NS); now != save {
			t.Fatalf("good rules %d changed after their deadline:\n%s\nwant\n%s", i, now, save)
		}
		return save
	}

	var lates []time.Duration // rollback minus deadline, per cycle
	// lockout pushes bad rule set i over the good tables before and
	// returns how long after the apply the agent rolled it back.
	lockout := func(i int, before string, kill bool) time.Duration {
		t.Helper()
		nChanged := len(agentEvents(t, a, fwChangedRe))
		nRestored := len(agentEvents(t, a, fwRestoredRe))
		nEnded := len(agentEvents(t, a, fwEndedRe))
		nStarts := len(agentEvents(t, a, agentStartRe))
		gen := c.push(lockoutSite(c1.host.Addr, false, i), false)
		ch := waitEvent(t, a, fwChangedRe, nChanged, 30*time.Second, fmt.Sprintf("bad rules %d applied", i))
		if bad := filterSave(t, a.host.NS); !strings.Contains(bad, fmt.Sprintf(`--comment "bad %d"`, i)) && bad != before {
			t.Fatalf("cycle %d: neither the bad nor the good rules in place:\n%s", i, bad)
		}
		stormFrom, stormTo := ch.deadline.Add(-2*time.Second), ch.deadline.Add(2*time.Second)

		// SIGHUP every 50 ms around the deadline (paused while the agent
		// restarts: before its handler is in place SIGHUP would end it).
		var hup atomic.Bool
		hup.Store(true)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(stormFrom))
			tk := time.NewTicker(50 * time.Millisecond)
			defer tk.Stop()
			for now := range tk.C {
				if now.After(stormTo) {
					return
				}
				if hup.Load() {
					_ = a.proc.Signal(syscall.SIGHUP)
				}
			}
		}()
		if kill {
			time.Sleep(time.Until(ch.deadline.Add(-300 * time.Millisecond)))
			hup.Store(false)
			a.proc.Kill()
			a.proc.Restart()
			waitEvent(t, a, agentStartRe, nStarts, 10*time.Second, "agent restarted")
			hup.Store(true)
		}

		// Poll both families until after the storm: once the good rules
		// are back, nothing else may appear.
		var back time.Time
		for time.Now().Before(stormTo.Add(time.Second)) {
			now := filterSave(t, a.host.NS)
			switch {
			case now == before && back.IsZero():
				back = time.Now()
			case now != before && !back.IsZero():
				wg.Wait()
				t.Fatalf("cycle %d: rules changed again %v after the rollback:\n%s\nwant\n%s", i, time.Since(back), now, before)
			}
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		if back.IsZero() {
			t.Fatalf("cycle %d: not rolled back %v after the deadline:\n%s\nwant\n%s", i, time.Since(ch.deadline), filterSave(t, a.host.NS), before)
		}
		rb := waitEvent(t, a, fwRestoredRe, nRestored, 5*time.Second, fmt.Sprintf("cycle %d rollback", i))
		took := rb.at.Sub(ch.at)
		// The log's times have millisecond precision.
		if rb.at.After(ch.deadline.Add(lockoutSlack)) || rb.at.Before(ch.deadline.Add(-time.Millisecond)) {
			t.Errorf("cycle %d: rolled back %v after the deadline, want within %v after it", i, rb.at.Sub(ch.deadline), lockoutSlack)
		}
		// "Held back" is reported only once the rules were rolled back.
		for _, ev := range agentEvents(t, a, fwHeldRe) {
			if ev.at.After(ch.at) && ev.at.Before(rb.at) {
				t.Errorf("cycle %d: held back reported at %s while the rules were in place (applied %s, rolled back %s)", i,
					ev.at.Format(time.StampMilli), ch.at.Format(time.StampMilli), rb.at.Format(time.StampMilli))
			}
		}
		if n := len(agentEvents(t, a, fwChangedRe)); n != nChanged+1 {
			t.Errorf("cycle %d: %d firewall changes, want 1 (the bad rules applied again?)", i, n-nChanged)
		}
		if n := len(agentEvents(t, a, fwRestoredRe)); n != nRestored+1 {
			t.Errorf("cycle %d: %d rollbacks, want 1", i, n-nRestored)
		}
		// Status: the generation of the bad rules, failed with the
		// rollback.
		var last *siteStatus
		if !poll(15*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.status(ctx)
			if err != nil {
				return false
			}
			last = s
			n := s.node(a.name)
			return n != nil && n.AppliedGeneration == gen && strings.Contains(strings.Join(n.Errors, "\n"), "rolled back")
		}) {
			t.Fatalf("cycle %d: status does not report the rollback of generation %d: %s", i, gen, dump(last))
		}
		if now := filterSave(t, a.host.NS); now != before {
			t.Fatalf("cycle %d: rules changed after the rollback was reported:\n%s", i, now)
		}
		ended := agentEvents(t, a, fwEndedRe)[nEnded:]
		// One prober per window: one line, or none after a restart when
		// the reopened window rolled back before a run could probe it.
		if len(ended) > 1 || (len(ended) == 0 && !kill) || (len(ended) == 1 && ended[0].rules != "rolled back") {
			t.Errorf("cycle %d: confirm window ended lines %+v, want one, rolled back (one prober per window)", i, ended)
		}
		lates = append(lates, rb.at.Sub(ch.deadline))
		return took
	}

	before := good(0, true)
	var times []time.Duration
	const cycles, killFrom = 10, 6 // cycles 1-5 plain, 6-10 with kill -9
	for i := 1; i <= cycles; i++ {
		kill := i >= killFrom
		took := lockout(i, before, kill)
		times = append(times, took)
		t.Logf("cycle %d (kill %v): rolled back %v after the apply, %v after the deadline", i, kill, took.Round(time.Millisecond), lates[len(lates)-1].Round(time.Millisecond))
		before = good(i, i == cycles)
	}
	if n, want := len(agentEvents(t, a, fwReopenRe)), cycles-killFrom+1; n != want {
		t.Errorf("%d windows reopened after a restart, want %d", n, want)
	}
	slices.Sort(times)
	t.Logf("rollback after the apply over %d cycles (confirm %v): min %v, median %v, max %v", len(times), lockoutConfirm,
		times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	slices.Sort(lates)
	t.Logf("rollback after the deadline: min %v, median %v, max %v", lates[0].Round(time.Millisecond), lates[len(lates)/2].Round(time.Millisecond), lates[len(lates)-1].Round(time.Millisecond))
	if os.Getenv("NETLAB_KEEP_LOG") != "" {
		t.Log(a.proc.Log())
	}
}
