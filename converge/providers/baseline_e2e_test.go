package providers_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/hosts"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

const baselineSite = `site: baseline
secrets: [ops-pw]
selectors:
  - roles: [base]
roles:
  base:
    groups:
      - name: admins
        gid: 2001
        sudo: "ALL=(ALL:ALL) NOPASSWD: ALL"
    users:
      - name: ops
        uid: 2001
        groups: [admins]
        shell: /bin/bash
        password: {secret: ops-pw}
        authorized_keys:
          - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@laptop
    hosts:
      entries:
        - {address: 10.0.0.10, names: [db1, db1.internal]}
    hostname: {}
    timezone: Europe/Paris
    locale: C.UTF-8
`

// TestBaselineDebianRoot converges the host baseline kinds of a site file
// into a debootstrap root through the engine with the default providers:
// a dry run plans everything and touches nothing, the first run changes
// everything, the second nothing; drift is put back; a state without the
// user and the hosts block prunes them (home kept).
func TestBaselineDebianRoot(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "chroot", "useradd", "groupadd", "chpasswd")
	root := debroot.CopyWith(t, "sudo")
	hash := "$6$hivesalt$Xq0vPj3v1K5m6m0yZr1m1Zl0bq0m7lH0xJ1m2YH7u5B6oM9k3yC3E9p9pXvH2rj6w0y6l9QZ8c2a2f8k1u4r/."
	st := nodeState(t, baselineSite, map[string][]byte{"ops-pw": []byte(hash)})
	eng := engine(t, root, providers.DefaultConfig(), nil)
	checkRuns(t, eng, st, "group:admins=CHANGED hostname:node=CHANGED hosts:block=CHANGED locale:system=CHANGED timezone:system=CHANGED user:ops=CHANGED")
	chroot := func(args ...string) string {
		out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("chroot %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	if got := chroot("id", "-nG", "ops"); got != "ops admins\n" {
		t.Errorf("id ops = %q", got)
	}
	if got := chroot("sudo", "-l", "-U", "ops"); !strings.Contains(got, "NOPASSWD: ALL") {
		t.Errorf("sudo -l -U ops:\n%s", got)
	}
	if got := chroot("date", "-d", "2026-01-15 12:00", "+%Z"); got != "CET\n" {
		t.Errorf("zone: %q", got)
	}
	if got := chroot("getent", "hosts", "db1.internal"); !strings.HasPrefix(got, "10.0.0.10") {
		t.Errorf("getent hosts db1.internal = %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(b) != "web-1\n" {
		t.Errorf("/etc/hostname = %q", b)
	}

	// Drift: shell, password and hosts block edited by hand.
	chroot("usermod", "-s", "/bin/sh", "-p", "$6$other$x", "ops")
	b, _ := os.ReadFile(filepath.Join(root, "etc/hosts"))
	must(t, os.WriteFile(filepath.Join(root, "etc/hosts"), []byte(strings.Replace(string(b), "10.0.0.10", "10.6.6.6", 1)), 0o644))
	rep, err := eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := results(rep); got != "group:admins=OK hostname:node=OK hosts:block=CHANGED locale:system=OK timezone:system=OK user:ops=CHANGED" {
		t.Fatalf("drift run: %s", got)
	}
	for _, r := range rep.GetResults() {
		if strings.Contains(r.GetDiff()+r.GetMessage(), "$6$") {
			t.Errorf("a password hash in the result of %s: %q %q", r.GetKey(), r.GetMessage(), r.GetDiff())
		}
		if r.GetKey() == "user:ops" && !strings.Contains(r.GetDiff(), "set password (from secret ops-pw)") {
			t.Errorf("user:ops diff %q", r.GetDiff())
		}
	}
	if got := chroot("getent", "shadow", "ops"); !strings.HasPrefix(got, "ops:"+hash+":") {
		t.Errorf("password not put back: %q", got)
	}

	// Removal: the user and the hosts block leave the state.
	var kept []*hivev1.Resource
	for _, r := range st.GetResources() {
		if r.GetKey() != "user:ops" && r.GetKey() != "hosts:block" {
			kept = append(kept, r)
		}
	}
	st.Resources = kept
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err = eng.Run(ctx, st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := results(rep); !strings.Contains(got, "user:ops=CHANGED") || !strings.Contains(got, "hosts:block=CHANGED") {
		t.Fatalf("prune run: %s", got)
	}
	if out, err := exec.Command("chroot", root, "getent", "passwd", "ops").CombinedOutput(); err == nil {
		t.Errorf("ops still exists: %s", out)
	}
	if _, err := os.Stat(filepath.Join(root, "home/ops")); err != nil {
		t.Errorf("home not kept: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hosts")); strings.Contains(string(b), hosts.Begin) {
		t.Errorf("hosts block left:\n%s", b)
	}
	rep, err = eng.Run(ctx, st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Count(hivev1.Outcome_OUTCOME_CHANGED) + rep.Count(hivev1.Outcome_OUTCOME_FAILED); n != 0 {
		t.Fatalf("run after prune not a no-op: %s", results(rep))
	}
}
