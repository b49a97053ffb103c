package sysctl

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func res(key, value string) *hivev1.Resource {
	return &hivev1.Resource{Key: "sysctl:" + key, Kind: &hivev1.Resource_Sysctl{Sysctl: &hivev1.Sysctl{Key: key, Value: value}}}
}

// inNetns runs fn on a locked OS thread that entered a fresh network
// namespace, so /proc/sys/net is that namespace's; the thread is thrown
// away afterwards. fn must not start goroutines that touch /proc/sys nor
// call t.Fatal (use t.Errorf and return).
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.RequireRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare network namespace: %v", err)
			return
		}
		fn()
	}()
	<-done
}

func hostValue(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(key, ".", "/"))
	if err != nil {
		t.Fatal(err)
	}
	return Normalize(string(b))
}

func outcomes(rep *converge.Report) string {
	var b strings.Builder
	for _, r := range rep.GetResults() {
		fmt.Fprintf(&b, "%s=%s ", r.GetKey(), strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	}
	return strings.TrimSpace(b.String())
}

// TestNetnsTimeline converges net.* keys in a fresh network namespace
// through the engine: dry run, from empty, no-op, live drift, file drift,
// an unknown key and a refused value (each fails alone and changes
// nothing), pruning back to the values from before; the host's own values
// never move.
func TestNetnsTimeline(t *testing.T) {
	keys := []string{"net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter", "net.core.somaxconn"}
	hostBefore := map[string]string{}
	for _, k := range keys {
		hostBefore[k] = hostValue(t, k)
	}
	root := t.TempDir()
	conf := filepath.Join(root, ConfFile)
	inNetns(t, func() {
		reg, err := converge.NewRegistry(New(Config{ProcSys: "/proc/sys"}))
		if err != nil {
			t.Error(err)
			return
		}
		eng, err := converge.New(converge.Config{Root: root, Runner: converge.ExecRunner{}, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}, reg)
		if err != nil {
			t.Error(err)
			return
		}
		live := func(k string) string {
			v, err := New(Config{ProcSys: "/proc/sys"}).readLive(&converge.Env{Root: root}, k)
			if err != nil {
				t.Errorf("read %s: %v", k, err)
			}
			return v
		}
		before := map[string]string{}
		for _, k := range keys {
			before[k] = live(k)
		}
		// Desired values differ from the namespace's (a new namespace may
		// inherit the host's, see net.core.devconf_inherit_init_net).
		fwd, rpf := "1", "2"
		if before["net.ipv4.ip_forward"] == "1" {
			fwd = "0"
		}
		if before["net.ipv4.conf.all.rp_filter"] == "2" {
			rpf = "1"
		}
		run := func(step string, dry bool, want string, rs ...*hivev1.Resource) *converge.Report {
			rep, err := eng.Run(context.Background(), &hivev1.NodeState{Resources: rs}, converge.RunOptions{DryRun: dry})
			if err != nil {
				t.Errorf("%s: run: %v", step, err)
				return rep
			}
			if got := outcomes(rep); got != want {
				t.Errorf("%s: outcomes\n got %s\nwant %s", step, got, want)
			}
			return rep
		}
		desired := []*hivev1.Resource{res("net.ipv4.ip_forward", fwd), res("net.ipv4.conf.all.rp_filter", rpf), res("net.core.somaxconn", "1024")}

		fp := convergetest.Tree(t, root)
		run("dry run", true, "sysctl:net.ipv4.ip_forward=PLANNED sysctl:net.ipv4.conf.all.rp_filter=PLANNED sysctl:net.core.somaxconn=PLANNED", desired...)
		if got := convergetest.Tree(t, root); got != fp || live("net.ipv4.ip_forward") != before["net.ipv4.ip_forward"] {
			t.Errorf("dry run changed the machine")
		}
		run("from empty", false, "sysctl:net.ipv4.ip_forward=CHANGED sysctl:net.ipv4.conf.all.rp_filter=CHANGED sysctl:net.core.somaxconn=CHANGED", desired...)
		for k, v := range map[string]string{"net.ipv4.ip_forward": fwd, "net.ipv4.conf.all.rp_filter": rpf, "net.core.somaxconn": "1024"} {
			if got := live(k); got != v {
				t.Errorf("live %s = %q, want %q", k, got, v)
			}
		}
		b, _ := os.ReadFile(conf)
		for _, line := range []string{"net.ipv4.ip_forward = " + fwd + "\n", "# before: net.ipv4.ip_forward = " + before["net.ipv4.ip_forward"] + "\n", "net.core.somaxconn = 1024\n"} {
			if !strings.Contains(string(b), line) {
				t.Errorf("%s lacks %q:\n%s", ConfFile, line, b)
			}
		}
		run("no-op", false, "sysctl:net.ipv4.ip_forward=OK sysctl:net.ipv4.conf.all.rp_filter=OK sysctl:net.core.somaxconn=OK", desired...)

		if err := writeProc("/proc/sys/net/ipv4/ip_forward", before["net.ipv4.ip_forward"]); err != nil {
			t.Error(err)
		}
		rep := run("live drift", false, "sysctl:net.ipv4.ip_forward=CHANGED sysctl:net.ipv4.conf.all.rp_filter=OK sysctl:net.core.somaxconn=OK", desired...)
		if msg := rep.GetResults()[0].GetMessage(); msg != "set net.ipv4.ip_forward "+before["net.ipv4.ip_forward"]+" → "+fwd {
			t.Errorf("drift message %q", msg)
		}
		b, _ = os.ReadFile(conf)
		if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "somaxconn = 1024", "somaxconn = 10", 1)), 0o644); err != nil {
			t.Error(err)
		}
		run("file drift", false, "sysctl:net.ipv4.ip_forward=OK sysctl:net.ipv4.conf.all.rp_filter=OK sysctl:net.core.somaxconn=CHANGED", desired...)

		// Bad input: each fails alone; the rest stays as it was.
		fpBad := convergetest.Tree(t, root)
		bad := []*hivev1.Resource{res("net.ipv4.ip_forward", "banana"), res("net.ipv4.conf.all.rp_filter", rpf), res("net.core.somaxconn", "1024"), res("net.ipv4.no_such_key", "1")}
		rep = run("bad input", false, "sysctl:net.ipv4.ip_forward=FAILED sysctl:net.ipv4.conf.all.rp_filter=OK sysctl:net.core.somaxconn=OK sysctl:net.ipv4.no_such_key=FAILED", bad...)
		for _, r := range rep.GetResults() {
			t.Logf("%s: %s", r.GetKey(), r.GetMessage())
		}
		if m := rep.GetResults()[0].GetMessage(); !strings.Contains(m, `kernel refused the value: net.ipv4.ip_forward = "banana"`) {
			t.Errorf("refused value message %q", m)
		}
		if m := rep.GetResults()[3].GetMessage(); !strings.Contains(m, "no such sysctl on this kernel: net.ipv4.no_such_key") {
			t.Errorf("unknown key message %q", m)
		}
		if live("net.ipv4.ip_forward") != fwd || convergetest.Tree(t, root) != fpBad {
			t.Errorf("bad input changed the machine:\n%s", convergetest.FingerprintDiff(fpBad, convergetest.Tree(t, root)))
		}

		// Pruning: keys that left the state get their old values back.
		rep = run("prune", false, "sysctl:net.core.somaxconn=OK sysctl:net.ipv4.conf.all.rp_filter=CHANGED sysctl:net.ipv4.ip_forward=CHANGED", desired[2])
		t.Logf("prune: %s | %s", rep.GetResults()[1].GetMessage(), rep.GetResults()[2].GetMessage())
		if live("net.ipv4.ip_forward") != before["net.ipv4.ip_forward"] || live("net.ipv4.conf.all.rp_filter") != before["net.ipv4.conf.all.rp_filter"] {
			t.Errorf("prune did not restore the old values")
		}
		b, _ = os.ReadFile(conf)
		if strings.Contains(string(b), "ip_forward") || !strings.Contains(string(b), "somaxconn = 1024") {
			t.Errorf("after prune %s:\n%s", ConfFile, b)
		}
		run("prune all", false, "sysctl:net.core.somaxconn=CHANGED")
		if _, err := os.Stat(conf); !os.IsNotExist(err) {
			t.Errorf("%s left after the last key was pruned: %v", ConfFile, err)
		}
		if live("net.core.somaxconn") != before["net.core.somaxconn"] {
			t.Errorf("somaxconn not restored")
		}
		run("pruned no-op", false, "")
	})
	for _, k := range keys {
		if got := hostValue(t, k); got != hostBefore[k] {
			t.Errorf("host %s changed: %q → %q", k, hostBefore[k], got)
		}
	}
}

func TestValidate(t *testing.T) {
	p := New(Config{})
	for _, tc := range []struct {
		key, value, want string
	}{
		{"net.ipv4.ip_forward", "1", ""},
		{"net.ipv4.conf.eth0/100.rp_filter", "1", ""},
		{"ip_forward", "1", "want a dotted name"},
		{"net.ipv4.../x", "1", "is not a sysctl name"},
		{"net.ipv4.ip_forward", "", "value: required"},
		{"net.ipv4.ip_forward", "1\n2", "one line"},
	} {
		err := p.Validate(res(tc.key, tc.value))
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%q, %q) = %v, want %q", tc.key, tc.value, err, tc.want)
		}
	}
}

// TestRootNotRunningSystem: in a root that is not the host's, only the
// persisted file is written (the running kernel is someone else's).
func TestRootNotRunningSystem(t *testing.T) {
	root := t.TempDir()
	p := New(Config{})
	env := &converge.Env{Root: root}
	rs := []*hivev1.Resource{res("net.ipv4.ip_forward", "1")}
	convergetest.Converge(t, p, env, rs, nil, 1)
	b, err := os.ReadFile(filepath.Join(root, ConfFile))
	if err != nil || !strings.Contains(string(b), "\nnet.ipv4.ip_forward = 1\n") || strings.Contains(string(b), "# before: net") {
		t.Fatalf("%s: %v\n%s", ConfFile, err, b)
	}
	convergetest.Converge(t, p, env, rs, nil, 0)
}

func TestRequiresModules(t *testing.T) {
	mod := &hivev1.Resource{Key: "kernel_module:br_netfilter", Kind: &hivev1.Resource_KernelModule{KernelModule: &hivev1.KernelModule{Name: "br_netfilter"}}}
	s := res("net.bridge.bridge-nf-call-iptables", "1")
	g, err := converge.BuildGraph([]*hivev1.Resource{s, mod}, map[string]converge.Linker{Kind: New(Config{})})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Requires[s.GetKey()]; len(got) != 1 || got[0] != mod.GetKey() {
		t.Fatalf("requires %v", got)
	}
}
