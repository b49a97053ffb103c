package netlabtests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
)

// The sshd lock-out scenario (issue 15 item 10). A change to an sshd
// drop-in with a confirm window, whose notify cuts the agent off from the
// coordinator, must roll back by itself.
//
// The stand-in: the agent runs on the machine's file system (no --root),
// so the "drop-in" lives in the test's directory, not /etc/ssh, and the
// notified command stands in for "systemctl reload sshd" with a config
// that locks the operator out: it reads the drop-in and, when the drop-in
// has the line "# lockout", inserts an iptables DROP towards the
// coordinator in the agent's network namespace (the agent's only way to
// its coordinator, as sshd is the operator's only way to the server);
// without the line it deletes that rule. Like sshd, it acts on what the
// file says when notified, so the rollback's notify (the restored drop-in)
// undoes the cut.
const sshdConfirm = 3 * time.Second

func sshdSite(dropIn, coord, content string) string {
	return `site: netlab
selectors:
  - match: {tier: web}
    roles: [edge]
roles:
  edge:
    files:
      - path: ` + dropIn + `
        content: ` + fmt.Sprintf("%q", content) + `
        mode: "0644"
        confirm: ` + sshdConfirm.String() + `
        notify: [command:reload-sshd]
    commands:
      - name: reload-sshd
        on_notify: true
        shell: |
          rule="OUTPUT -d ` + coord + `/32 -m comment --comment hive-sshd-standin -j DROP"
          if grep -q '^# lockout' ` + dropIn + `; then
            iptables -w -C $rule 2>/dev/null || iptables -w -I $rule
          else
            while iptables -w -D $rule 2>/dev/null; do :; done
          fi
`
}

var (
	cfAppliedRe   = regexp.MustCompile(`time=(\S+) level=INFO msg="changes with a confirm window applied; waiting for a coordinator".*? keys="?\[([^\]]*)\]"? deadline=(\S+)`)
	cfConfirmedRe = regexp.MustCompile(`time=(\S+) level=INFO msg="changes confirmed by a coordinator".*? keys="?\[([^\]]*)\]"?()`)
	cfRestoredRe  = regexp.MustCompile(`time=(\S+) level=WARN msg="changes not confirmed in time: previous state restored".*? keys="?\[([^\]]*)\]"?()`)
)

// TestSshdLockoutRollsBack: a good drop-in is applied and confirmed; a
// bad one cuts the agent off through its notify, and the agent restores
// the good drop-in by itself after the window, runs the notify again
// (which lifts the cut), reports the rollback (status shows it for the
// bad generation) and does not apply the bad generation again.
func TestSshdLockoutRollsBack(t *testing.T) {
	testenv.SkipShort(t)
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "iptables")
	start := time.Now()
	c := newCluster(t, clusterConfig{coordinators: 1})
	c1 := c.coords[0]
	a := c.addHostAgent("a1", []string{"tier=web"}, c1)
	dropIn := filepath.Join(c.dir, "a1", "sshd_config.d", "50-hive.conf")
	good := "PasswordAuthentication no\n"
	bad := "PasswordAuthentication no\n# lockout\nListenAddress 192.0.2.1\n"
	cut := func() bool {
		out, err := exec.Command("ip", "netns", "exec", a.host.NS, "iptables", "-w", "-S", "OUTPUT").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables -S in %s: %v: %s", a.host.NS, err, out)
		}
		return strings.Contains(string(out), "hive-sshd-standin")
	}
	read := func() string {
		b, err := os.ReadFile(dropIn)
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}

	// A good drop-in: applied, confirmed, kept.
	g1 := c.push(sshdSite(dropIn, c1.host.Addr, good), false)
	waitEvent(t, a, cfConfirmedRe, 0, 30*time.Second, "good drop-in confirmed")
	c.waitConverged(g1, 30*time.Second, a)
	if got := read(); got != good || cut() {
		t.Fatalf("after the good drop-in: %q, cut %v", got, cut())
	}
	t.Logf("good drop-in applied and confirmed %v after the start", time.Since(start).Round(time.Millisecond))

	// The bad one: its notify cuts the agent off.
	g2 := c.push(sshdSite(dropIn, c1.host.Addr, bad), false)
	ap := waitEvent(t, a, cfAppliedRe, 1, 30*time.Second, "bad drop-in applied")
	if got := read(); got != bad {
		t.Fatalf("bad drop-in not in place after its apply: %q", got)
	}
	if !cut() {
		t.Fatal("the notify of the bad drop-in did not cut the agent off")
	}
	rb := waitEvent(t, a, cfRestoredRe, 0, sshdConfirm+15*time.Second, "rollback")
	if late := rb.at.Sub(ap.deadline); late < -time.Millisecond || late > 2*time.Second {
		t.Errorf("rolled back %v after the deadline, want within 2s", late)
	}
	if got := read(); got != good {
		t.Fatalf("drop-in after the rollback: %q, want the good one", got)
	}
	if fi, err := os.Stat(dropIn); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("drop-in mode after the rollback: %v (%v)", fi.Mode(), err)
	}
	if cut() {
		t.Fatal("the restored drop-in's notify did not lift the cut")
	}
	t.Logf("bad drop-in rolled back %v after its apply (window %v)", rb.at.Sub(ap.at).Round(time.Millisecond), sshdConfirm)

	// Reported: the bad generation, failed with the rollback.
	var last *siteStatus
	if !poll(20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.status(ctx)
		if err != nil {
			return false
		}
		last = s
		n := s.node(a.name)
		return n != nil && n.AppliedGeneration == g2 && strings.Contains(strings.Join(n.Errors, "\n"), "rolled back")
	}) {
		t.Fatalf("status does not report the rollback of generation %d: %s", g2, dump(last))
	}
	// Not applied again: drift checks run every second.
	time.Sleep(2 * time.Second)
	if got := read(); got != good || cut() {
		t.Fatalf("the bad generation was applied again: %q, cut %v", got, cut())
	}
	if n := len(agentEvents(t, a, cfAppliedRe)); n != 2 {
		t.Errorf("%d windows opened, want 2 (good, bad)", n)
	}
	t.Logf("scenario took %v", time.Since(start).Round(time.Millisecond))
}
