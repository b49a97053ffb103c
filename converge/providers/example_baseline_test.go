package providers_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
	"google.golang.org/protobuf/proto"
)

// exampleBaselineState renders deploy/examples/baseline.yaml for node-1 of
// a three-node fleet the way the coordinators do (hosts from_roles
// resolved, the password secret delivered).
func exampleBaselineState(t testing.TB, hash string) *hivev1.NodeState {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "examples", "baseline.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := site.Parse("baseline.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := site.Check(s); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	st := state.New()
	if r := st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: site.Hash(s), Site: s}}); r.GetError() != "" {
		t.Fatalf("push: %s", r.GetError())
	}
	for i, n := range []string{"node-1", "node-2", "node-3"} {
		st.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: n, Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}, Ordinal: st.NextOrdinal()})
	}
	sealed, id, err := kr.Seal("ops-password", []byte(hash))
	if err != nil {
		t.Fatal(err)
	}
	st.SetSecret(t0, &hivev1.SecretSetCommand{Name: "ops-password", Sealed: sealed, KeyId: id})
	out, err := render.New(kr).Render(st, render.FactsOf(st.Node("node-1")))
	if err != nil {
		t.Fatal(err)
	}
	return proto.Clone(out.State).(*hivev1.NodeState)
}

// TestExampleBaselineDebianRoot converges the example baseline
// (deploy/examples/baseline.yaml, rendered for one node) into a
// debootstrap root with chrony, openssh-server and sudo installed, through
// the engine and the default providers, and measures the no-op run.
//
// Left out of the root: the two services (no systemd runs in the root, and
// a real chronyd would step the host's clock); sysctls get their
// /etc/sysctl.d file only (the root is not the host, the live kernel is
// left alone); the sshd-check command runs chrooted into the root.
//
// A dry run plans everything and touches nothing, including the directory
// owned by accounts the run creates; the first run changes everything but
// the packages; then every run is all OK. The no-op run time is logged:
//
//	go test -v -run TestExampleBaselineDebianRoot ./converge/providers/
func TestExampleBaselineDebianRoot(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "chroot", "useradd", "groupadd", "chpasswd")
	root := debroot.CopyWith(t, "chrony", "dbus", "openssh-server", "sudo", "systemd")
	hash := "$6$hivesalt$Xq0vPj3v1K5m6m0yZr1m1Zl0bq0m7lH0xJ1m2YH7u5B6oM9k3yC3E9p9pXvH2rj6w0y6l9QZ8c2a2f8k1u4r/."
	st := exampleBaselineState(t, hash)
	var kept []*hivev1.Resource
	for _, r := range st.GetResources() {
		if r.GetService() != nil {
			continue
		}
		if c := r.GetCommand(); c != nil && c.GetName() == "sshd-check" {
			c.Shell = "chroot " + root + " /bin/sh -c '" + c.GetShell() + "'"
		}
		r.Notify = dropServices(r.GetNotify())
		r.Requires = dropServices(r.GetRequires())
		kept = append(kept, r)
	}
	st.Resources = kept
	eng := engine(t, root, providers.DefaultConfig(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	run := func(dry bool) *converge.Report {
		t.Helper()
		rep, err := eng.Run(ctx, st, converge.RunOptions{DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	const packages = "package:chrony package:openssh-server package:sudo"
	rep := run(true)
	want := map[hivev1.Outcome]string{}
	for _, r := range rep.GetResults() {
		want[r.GetOutcome()] += " " + r.GetKey()
	}
	if rep.Failed() || strings.TrimSpace(sortedKeys(want[hivev1.Outcome_OUTCOME_OK])) != packages ||
		rep.Count(hivev1.Outcome_OUTCOME_PLANNED) != len(st.GetResources())-3 {
		t.Fatalf("dry run: %s", results(rep))
	}
	for _, r := range rep.GetResults() {
		if r.GetKey() == "file:/srv/ops" && !strings.Contains(r.GetMessage(), "owner ops (created in this run):admins (created in this run)") {
			t.Errorf("dry run of /srv/ops: %q", r.GetMessage())
		}
	}
	if _, err := os.Stat(filepath.Join(root, "srv/ops")); !os.IsNotExist(err) {
		t.Fatalf("the dry run made /srv/ops: %v", err)
	}

	rep = run(false)
	if rep.Failed() || rep.Count(hivev1.Outcome_OUTCOME_CHANGED) != len(st.GetResources())-3 {
		t.Fatalf("first run: %s", results(rep))
	}
	chroot := func(args ...string) string {
		out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("chroot %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	if got := chroot("id", "-nG", "deploy"); got != "deploy admins\n" {
		t.Errorf("id deploy = %q", got)
	}
	if got := chroot("sudo", "-l", "-U", "ops"); !strings.Contains(got, "NOPASSWD: ALL") {
		t.Errorf("sudo -l -U ops:\n%s", got)
	}
	if got := chroot("/usr/sbin/sshd", "-T"); !strings.Contains(got, "passwordauthentication no") || !strings.Contains(got, "allowgroups admins") {
		t.Errorf("sshd -T lacks the hardening:\n%s", got)
	}
	if got := chroot("getent", "hosts", "node-3"); !strings.HasPrefix(got, "10.0.0.3") {
		t.Errorf("getent hosts node-3 = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(root, "srv/ops")); err != nil {
		t.Error(err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 2001 || st.Gid != 2000 || fi.Mode()&os.ModeSetgid == 0 {
		t.Errorf("/srv/ops: %d:%d %v", st.Uid, st.Gid, fi.Mode())
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/sysctl.d/60-hive.conf")); err != nil || !strings.Contains(string(b), "net.ipv4.tcp_syncookies = 1") {
		t.Errorf("sysctl.d: %q %v", b, err)
	}

	// No-op runs: all OK; the time of each.
	var took []time.Duration
	for range 10 {
		start := time.Now()
		rep = run(false)
		took = append(took, time.Since(start))
		if rep.Count(hivev1.Outcome_OUTCOME_OK) != len(st.GetResources()) {
			t.Fatalf("no-op run: %s", results(rep))
		}
	}
	timing := rep

	// A drop-in sshd rejects: the check fails with sshd's complaint and
	// takes the file away again; sshd's configuration stays valid.
	dropIn := filepath.Join(root, "etc/ssh/sshd_config.d/50-hive-hardening.conf")
	for _, r := range st.GetResources() {
		if f := r.GetFile(); f != nil && strings.HasSuffix(f.GetPath(), "/50-hive-hardening.conf") {
			f.Content += "PermitRootLogin maybe\n"
		}
	}
	rep = run(false)
	for _, r := range rep.GetResults() {
		switch r.GetKey() {
		case "file:/etc/ssh/sshd_config.d/50-hive-hardening.conf":
			if r.GetOutcome() != hivev1.Outcome_OUTCOME_CHANGED {
				t.Errorf("bad drop-in: %v", r)
			}
		case "command:sshd-check":
			if r.GetOutcome() != hivev1.Outcome_OUTCOME_FAILED || !strings.Contains(r.GetDiff(), `unsupported option "maybe"`) {
				t.Errorf("sshd-check of a bad drop-in: %v", r)
			}
		}
	}
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Errorf("the rejected drop-in was left in place: %v", err)
	}
	chroot("/usr/sbin/sshd", "-t")
	rep = timing

	byKind := map[string]time.Duration{}
	for _, r := range rep.GetResults() {
		byKind[converge.KindOf(r.GetKey())] += r.GetDuration().AsDuration()
	}
	var kinds []string
	for k, d := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %v", k, d.Round(time.Millisecond/10)))
	}
	sort.Strings(kinds)
	t.Logf("last no-op run by kind: %s", strings.Join(kinds, ", "))
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("example baseline, %d resources: no-op run min %v, median %v, max %v (10 runs)",
		len(st.GetResources()), took[0].Round(time.Millisecond/10), took[5].Round(time.Millisecond/10), took[9].Round(time.Millisecond/10))
}

func sortedKeys(s string) string {
	f := strings.Fields(s)
	sort.Strings(f)
	return strings.Join(f, " ")
}

func dropServices(keys []string) []string {
	var out []string
	for _, k := range keys {
		if !strings.HasPrefix(k, "service:") {
			out = append(out, k)
		}
	}
	return out
}
