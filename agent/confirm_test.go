package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/command"
	"github.com/hivefleet/hive/converge/file"
	"github.com/hivefleet/hive/converge/hosts"
	"github.com/hivefleet/hive/converge/sysctl"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/kinds"
)

// recEngine is the real converge engine, recording the reports of its runs.
type recEngine struct {
	*converge.Engine
	mu   sync.Mutex
	reps []*converge.Report
}

func (e *recEngine) Run(ctx context.Context, st *hivev1.NodeState, opts converge.RunOptions) (*converge.Report, error) {
	rep, err := e.Engine.Run(ctx, st, opts)
	e.mu.Lock()
	e.reps = append(e.reps, rep)
	e.mu.Unlock()
	return rep, err
}

func (e *recEngine) last() *converge.Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.reps) == 0 {
		return nil
	}
	return e.reps[len(e.reps)-1]
}

func (e *recEngine) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reps)
}

// confirmLab is a machine root with an sshd drop-in, an /etc/hosts
// without hive's block, a fake /proc/sys (one key) and a command standing
// in for "reload sshd": it copies the drop-in to <root>/applied, so what
// it read is visible.
type confirmLab struct {
	root, procSys, dropIn, applied, forward, hosts string
}

func newConfirmLab(t *testing.T) *confirmLab {
	l := &confirmLab{root: t.TempDir(), procSys: t.TempDir()}
	l.dropIn = filepath.Join(l.root, "etc/ssh/sshd_config.d/50-hive.conf")
	l.applied = filepath.Join(l.root, "applied")
	l.forward = filepath.Join(l.procSys, "net/ipv4/ip_forward")
	l.hosts = filepath.Join(l.root, "etc/hosts")
	for p, c := range map[string]string{l.dropIn: "PasswordAuthentication yes\n", l.forward: "0\n", l.hosts: "127.0.0.1\tlocalhost\n"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

func (l *confirmLab) engine(t *testing.T) *recEngine {
	reg, err := converge.NewRegistry(file.New(), command.New(), sysctl.New(sysctl.Config{ProcSys: l.procSys}), hosts.New())
	if err != nil {
		t.Fatal(err)
	}
	cfg := converge.DefaultConfig()
	cfg.Root, cfg.Logger = l.root, testLogger(t)
	e, err := converge.New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return &recEngine{Engine: e}
}

// state: the drop-in says sshd, the sysctl value forward, the hosts block
// names the coordinator "coord-FORWARD", all with a confirm window; the
// drop-in notifies the reload stand-in.
func (l *confirmLab) state(gen uint64, sshd, forward string, window uint32) *hivev1.NodeState {
	res := []*hivev1.Resource{
		{Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/ssh/sshd_config.d/50-hive.conf", Content: "PasswordAuthentication " + sshd + "\n", Mode: 0o644}},
			ConfirmSeconds: window, Notify: []string{"command:reload-sshd"}},
		{Kind: &hivev1.Resource_Sysctl{Sysctl: &hivev1.Sysctl{Key: "net.ipv4.ip_forward", Value: forward}}, ConfirmSeconds: window},
		{Kind: &hivev1.Resource_Hosts{Hosts: &hivev1.Hosts{Entries: []*hivev1.Hosts_Entry{{Address: "10.0.0.1", Names: []string{"coord-" + forward}}}}},
			ConfirmSeconds: window},
		{Kind: &hivev1.Resource_Command{Command: &hivev1.GuardedCommand{Name: "reload-sshd", OnNotify: true,
			Shell: "cp " + l.dropIn + " " + l.applied}}},
	}
	for _, r := range res {
		r.Key = kinds.Key(r)
	}
	return &hivev1.NodeState{Node: "n1", Generation: gen, Hash: "hash-" + string(rune('a'+gen)), Resources: res}
}

func (l *confirmLab) read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimSpace(string(b))
}

func (l *confirmLab) checkBefore(t *testing.T, what string) {
	t.Helper()
	if got := l.read(t, l.dropIn); got != "PasswordAuthentication yes" {
		t.Fatalf("%s: drop-in %q, want the one from before", what, got)
	}
	if fi, err := os.Stat(l.dropIn); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: drop-in mode %v (%v), want 0600 as before", what, fi.Mode(), err)
	}
	if got := l.read(t, l.forward); got != "0" {
		t.Fatalf("%s: ip_forward %q, want 0 as before", what, got)
	}
	if got := l.read(t, filepath.Join(l.root, sysctl.ConfFile)); !strings.Contains(got, "no such file") {
		t.Fatalf("%s: %s still there: %q", what, sysctl.ConfFile, got)
	}
	if got := l.read(t, l.hosts); got != "127.0.0.1\tlocalhost" {
		t.Fatalf("%s: /etc/hosts %q, want it without hive's block as before", what, got)
	}
}

func heldResult(rep *converge.Report, key string) *hivev1.ResourceResult {
	for _, r := range rep.GetResults() {
		if r.GetKey() == key && r.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED && strings.Contains(r.GetMessage(), "rolled back") {
			return r
		}
	}
	return nil
}

// TestConfirmWindowRollsBack: an agent that reaches no coordinator rolls
// back the file and the sysctl of a run with a confirm window by itself
// (content, mode, live value, persisted file), runs the restored drop-in's
// notify (the reload stand-in reads the old content), reports both held
// back, and does not apply the generation again; a new generation applies.
func TestConfirmWindowRollsBack(t *testing.T) {
	l := newConfirmLab(t)
	eng := l.engine(t)
	cfg := testConfig(t, t.TempDir())
	a, stop := startAgent(t, cfg, eng, l.state(1, "no", "1", 1))

	waitFor(t, "the change applied", 5*time.Second, func() bool { return l.read(t, l.applied) == "PasswordAuthentication no" })
	if got := l.read(t, l.forward); got != "1" {
		t.Fatalf("ip_forward %q after the run, want 1", got)
	}
	if got := l.read(t, l.hosts); !strings.Contains(got, "10.0.0.1\tcoord-1") {
		t.Fatalf("/etc/hosts after the run: %q, want hive's block", got)
	}
	waitFor(t, "the rollback reported", 10*time.Second, func() bool {
		return a.Stats().LastTrigger == agent.TriggerConfirmRollback && heldResult(eng.last(), "file:/etc/ssh/sshd_config.d/50-hive.conf") != nil
	})
	l.checkBefore(t, "after the rollback")
	if got := l.read(t, l.applied); got != "PasswordAuthentication yes" {
		t.Fatalf("the reload stand-in read %q after the rollback, want the restored drop-in", got)
	}
	rep := eng.last()
	h := heldResult(rep, "sysctl:net.ipv4.ip_forward")
	if h == nil {
		t.Fatalf("sysctl not reported held back: %v", rep.GetResults())
	}
	if heldResult(rep, "hosts:block") == nil {
		t.Fatalf("hosts block not reported held back: %v", rep.GetResults())
	}
	t.Logf("held: %s", h.GetMessage())
	if !strings.Contains(h.GetMessage(), "notified command:reload-sshd: changed") || !strings.Contains(h.GetMessage(), "generation 1") {
		t.Errorf("held message does not say what ran: %s", h.GetMessage())
	}

	// Later runs of the same generation do not apply it again.
	n := eng.count()
	a.Trigger(agent.TriggerSignal)
	waitFor(t, "a signal run", 5*time.Second, func() bool { return eng.count() > n })
	time.Sleep(1500 * time.Millisecond) // past a second window, had one opened
	l.checkBefore(t, "after a run of the rolled-back generation")
	if heldResult(eng.last(), "sysctl:net.ipv4.ip_forward") == nil {
		t.Fatalf("a later run does not report the hold: %v", eng.last().GetResults())
	}
	stop()
	if _, err := os.Stat(filepath.Join(cfg.DataDir, agent.ConfirmFile)); err != nil {
		t.Fatalf("the hold is not kept on disk: %v", err)
	}

	// A new generation is the operator's answer: it applies (with a window
	// of an hour, which this test leaves open).
	c, err := agent.OpenCache(cfg.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SaveState(l.state(2, "no", "1", 3600)); err != nil {
		t.Fatal(err)
	}
	eng2 := l.engine(t)
	_, stop2 := startAgent(t, cfg, eng2, nil)
	waitFor(t, "generation 2 applied", 5*time.Second, func() bool { return l.read(t, l.applied) == "PasswordAuthentication no" })
	stop2()
	if r := eng2.last(); r.Failed() {
		t.Fatalf("generation 2 failed: %v", r.GetResults())
	}
}

// TestConfirmWindowSurvivesRestart: an agent stopped inside the window
// (the journal on disk) and started after the deadline rolls back before
// its first run, and that run reports the hold.
func TestConfirmWindowSurvivesRestart(t *testing.T) {
	l := newConfirmLab(t)
	cfg := testConfig(t, t.TempDir())
	eng := l.engine(t)
	_, stop := startAgent(t, cfg, eng, l.state(1, "no", "1", 2))
	waitFor(t, "the change applied", 5*time.Second, func() bool { return l.read(t, l.applied) == "PasswordAuthentication no" })
	stop()
	if got := l.read(t, l.dropIn); got != "PasswordAuthentication no" {
		t.Fatalf("drop-in %q after a stop inside the window, want the change still in place", got)
	}
	time.Sleep(2500 * time.Millisecond)
	eng2 := l.engine(t)
	a, _ := startAgent(t, cfg, eng2, nil)
	waitFor(t, "the first run", 5*time.Second, func() bool { return eng2.count() >= 1 })
	l.checkBefore(t, "after the restart")
	if heldResult(eng2.last(), "file:/etc/ssh/sshd_config.d/50-hive.conf") == nil {
		t.Fatalf("the first run after the restart does not report the rollback: %v", eng2.last().GetResults())
	}
	if got := l.read(t, l.applied); got != "PasswordAuthentication yes" {
		t.Fatalf("the reload stand-in read %q after the rollback, want the restored drop-in", got)
	}
	_ = a
}
