package firewall

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

// TestConfirmWindowThroughAgent drives the confirm window through the real
// path: hivectl pushes to a hive-coordinator (--dev) on one netlab host, a
// hive-agent on another converges the firewall of its own namespace. A rule
// set that cuts the agent off its coordinator is rolled back by the agent
// on its own and reported failed; a good one stays.
//
// Run alone with: go test -run ThroughAgent ./converge/firewall/
func TestConfirmWindowThroughAgent(t *testing.T) {
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore")
	bin := netlab.Build(t, "hive-coordinator", "hive-agent", "hivectl")
	lab := netlab.New(t)
	admin := lab.AddHost("admin")
	c1 := lab.AddHost("c1")
	a1 := lab.AddHost("a1")
	c1.Start("hive-coordinator", bin["hive-coordinator"], "--dev", "--name", "c1",
		"--data-dir", filepath.Join(t.TempDir(), "c1"),
		"--grpc-addr", c1.Addr+":7400", "--raft-addr", c1.Addr+":7401",
		"--gossip-addr", c1.Addr+":7402", "--http-addr", "")
	ctl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := admin.Run(ctx, append([]string{bin["hivectl"], "--dev", "--addr", c1.Addr + ":7400"}, args...)...)
		return string(out), err
	}
	wait := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wait("coordinator", 60*time.Second, func() bool { _, err := ctl("members"); return err == nil })
	a1.Start("hive-agent", bin["hive-agent"], "--dev", "--no-gossip", "--name", "a1",
		"--coordinator", c1.Addr+":7400", "--address", a1.Addr,
		"--data-dir", filepath.Join(t.TempDir(), "a1"), "--interval", "1s", "--retry-min", "1s")

	save := func() string {
		out, err := exec.Command("ip", "netns", "exec", a1.NS, "iptables-save", "-t", "filter").Output()
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	push := func(rules string) {
		site := `site: fw
selectors:
  - names: ["a1"]
    roles: [base]
roles:
  base:
    firewall:
      confirm: 3s
      rules:
        - proto: tcp
          ports: [22]
          comment: ssh
` + rules
		f := filepath.Join(t.TempDir(), "site.yaml")
		if err := os.WriteFile(f, []byte(site), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := ctl("push", f, "-m", "fw"); err != nil {
			t.Fatalf("push: %v\n%s", err, out)
		}
	}
	status := func() string {
		out, _ := ctl("status", "-o", "json")
		return out
	}

	// Good rules: applied, confirmed, kept.
	push("")
	wait("good rules applied", 60*time.Second, func() bool {
		return strings.Contains(save(), "-A HIVE-INPUT -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT")
	})
	good := save()
	time.Sleep(4 * time.Second) // past the confirm deadline
	if now := save(); now != good {
		t.Fatalf("confirmed rules changed:\n%s", now)
	}

	// Rules that cut the agent off its coordinator: rolled back by the
	// agent alone, reported failed once it reaches the coordinator again.
	push(`        - chain: output
          proto: tcp
          ports: [7400]
          destinations: [` + c1.Addr + `]
          action: reject
          comment: cuts the coordinator off
`)
	wait("bad rules applied", 60*time.Second, func() bool { return strings.Contains(save(), "cuts the coordinator off") })
	start := time.Now()
	wait("rollback", 30*time.Second, func() bool { return !strings.Contains(save(), "cuts the coordinator off") })
	t.Logf("rolled back %v after the bad rules were seen", time.Since(start).Round(100*time.Millisecond))
	if now := save(); now != good {
		t.Errorf("rollback did not restore the good rules:\n%s\nwant\n%s", now, good)
	}
	wait("the rollback reported", 60*time.Second, func() bool { return strings.Contains(status(), "rolled back") })
	time.Sleep(3 * time.Second) // drift checks must not re-apply the held-back rules
	if now := save(); now != good {
		t.Errorf("held-back rules applied again:\n%s", now)
	}

	// A fixed rule set goes through.
	push(`        - chain: output
          proto: tcp
          ports: [9999]
          action: reject
`)
	wait("fixed rules applied", 60*time.Second, func() bool { return strings.Contains(save(), "--dport 9999") })
	time.Sleep(4 * time.Second)
	if !strings.Contains(save(), "--dport 9999") {
		t.Error("fixed rules rolled back")
	}
	out, _ := ctl("status")
	t.Logf("hivectl status:\n%s", out)
}
