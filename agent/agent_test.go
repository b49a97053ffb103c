package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/gossip"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

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

func testLogger(t testing.TB) *slog.Logger {
	w := &tlog{t: t, on: true}
	t.Cleanup(func() { w.mu.Lock(); w.on = false; w.mu.Unlock() })
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelError
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// fakeEngine records runs; it can block runs on a gate and fail the first
// runs.
type fakeEngine struct {
	mu         sync.Mutex
	running    int
	maxRunning int
	runs       []time.Time
	failFirst  int
	gate       chan struct{} // when non-nil, each run waits for a receive
	ctxErrs    []error
}

func (f *fakeEngine) Run(ctx context.Context, st *hivev1.NodeState, _ converge.RunOptions) (*converge.Report, error) {
	f.mu.Lock()
	f.running++
	f.maxRunning = max(f.maxRunning, f.running)
	n := len(f.runs)
	f.runs = append(f.runs, time.Now())
	gate := f.gate
	f.mu.Unlock()
	var ctxErr error
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			ctxErr = ctx.Err()
		}
	}
	f.mu.Lock()
	f.running--
	f.ctxErrs = append(f.ctxErrs, ctxErr)
	f.mu.Unlock()
	outcome := hivev1.Outcome_OUTCOME_OK
	if n < f.failFirst {
		outcome = hivev1.Outcome_OUTCOME_FAILED
	}
	rep := &converge.Report{}
	for _, r := range st.GetResources() {
		rep.Results = append(rep.Results, &hivev1.ResourceResult{Key: "file:" + r.GetFile().GetPath(), Outcome: outcome})
	}
	if ctxErr != nil {
		return rep, ctxErr
	}
	return rep, nil
}

func (f *fakeEngine) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.runs)
}

func testState(gen uint64, paths ...string) *hivev1.NodeState {
	st := &hivev1.NodeState{Node: "n1", Generation: gen, Hash: "hash-" + string(rune('a'+gen))}
	for _, p := range paths {
		st.Resources = append(st.Resources, &hivev1.Resource{Kind: &hivev1.Resource_File{File: &hivev1.File{Path: p, Content: "x"}}})
	}
	return st
}

func testConfig(t *testing.T, dir string) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Name = "n1"
	cfg.DataDir = dir
	cfg.Dev = true
	cfg.Gossip = nil
	cfg.Coordinators = []string{"127.0.0.1:1"} // nobody listens
	cfg.Interval = time.Hour
	cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 80*time.Millisecond
	cfg.ReconnectMin, cfg.ReconnectMax = 50*time.Millisecond, 200*time.Millisecond
	cfg.ReconnectSpread = 100 * time.Millisecond
	cfg.StopGrace = time.Second
	cfg.Logger = testLogger(t)
	return cfg
}

// startAgent runs an agent whose cache already holds st.
func startAgent(t *testing.T, cfg agent.Config, eng agent.Engine, st *hivev1.NodeState) (*agent.Agent, func()) {
	t.Helper()
	if st != nil {
		c, err := agent.OpenCache(cfg.DataDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SaveState(st); err != nil {
			t.Fatal(err)
		}
	}
	a, err := agent.New(cfg, agent.Deps{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("agent did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStartupFromCacheAndNoConcurrentRuns(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{gate: make(chan struct{})}
	a, _ := startAgent(t, testConfig(t, dir), eng, testState(1, "/etc/a"))

	waitFor(t, "startup run", 5*time.Second, func() bool { return eng.count() == 1 })
	// Many triggers during a run: coalesced into one next run.
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); a.Trigger(agent.TriggerSignal) }()
	}
	wg.Wait()
	eng.gate <- struct{}{} // finish the startup run
	select {
	case <-a.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after the first run")
	}
	waitFor(t, "the coalesced run", 5*time.Second, func() bool { return eng.count() == 2 })
	eng.gate <- struct{}{}
	time.Sleep(100 * time.Millisecond)
	if n := eng.count(); n != 2 {
		t.Fatalf("runs = %d, want 2 (startup + one coalesced)", n)
	}
	eng.mu.Lock()
	if eng.maxRunning != 1 {
		t.Errorf("max concurrent runs = %d", eng.maxRunning)
	}
	eng.mu.Unlock()
	if s := a.Stats(); s.LastTrigger != agent.TriggerSignal || s.Runs != 2 {
		t.Errorf("stats = %+v", s)
	}

	// SIGHUP-style trigger while idle runs at once.
	close(eng.gate)
	a.Trigger(agent.TriggerSignal)
	waitFor(t, "signal run", 5*time.Second, func() bool { return eng.count() == 3 })
}

func TestFailedRunRetriedWithBackoff(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{failFirst: 3}
	cfg := testConfig(t, dir)
	a, _ := startAgent(t, cfg, eng, testState(1, "/etc/a"))
	waitFor(t, "three retries", 5*time.Second, func() bool { return eng.count() >= 4 })
	time.Sleep(200 * time.Millisecond)
	if n := eng.count(); n != 4 {
		t.Fatalf("runs = %d, want 4 (fail, retry x2 failing, retry ok, then quiet)", n)
	}
	eng.mu.Lock()
	runs := append([]time.Time(nil), eng.runs...)
	eng.mu.Unlock()
	// Delays are jittered in [d/2, d] with d doubling from RetryMin.
	for i, d := range []time.Duration{cfg.RetryMin, 2 * cfg.RetryMin, 4 * cfg.RetryMin} {
		gap := runs[i+1].Sub(runs[i])
		if gap < d/2 || gap > d+time.Second { // generous upper bound: shared CI machines
			t.Errorf("retry %d after %v, want within [%v, %v]", i+1, gap, d/2, d)
		}
	}
	if s := a.Stats(); s.FailedRuns != 3 || s.LastTrigger != agent.TriggerRetry {
		t.Errorf("stats = %+v", s)
	}
}

func TestIntervalRunsAndQueuedReports(t *testing.T) {
	dir := t.TempDir()
	eng := &fakeEngine{}
	cfg := testConfig(t, dir)
	cfg.Interval = 40 * time.Millisecond
	a, stop := startAgent(t, cfg, eng, testState(2, "/etc/a", "/etc/b"))
	waitFor(t, "drift-check runs", 5*time.Second, func() bool { return eng.count() >= 4 })
	stop()
	if s := a.Stats(); s.LastTrigger != agent.TriggerInterval {
		t.Errorf("last trigger %q", s.LastTrigger)
	}

	// No coordinator: every report waits on disk, in sequence order.
	c, _ := agent.OpenCache(dir, nil)
	seqs, err := c.Queued()
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != eng.count() {
		t.Fatalf("queued %d reports for %d runs", len(seqs), eng.count())
	}
	for i, s := range seqs {
		r, err := c.Peek(s)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetSeq() != uint64(i+1) || r.GetGeneration() != 2 || r.GetPhase() != hivev1.Phase_PHASE_CONVERGED || len(r.GetResults()) != 2 {
			t.Fatalf("report %d = %v", i, r)
		}
		if i > 0 && (!r.GetDriftCheck() || r.GetTrigger() != agent.TriggerInterval) {
			t.Errorf("report %d trigger %q drift_check %v", i, r.GetTrigger(), r.GetDriftCheck())
		}
	}
	ap, err := c.LoadApplied()
	if err != nil || ap.Generation != 2 || ap.Seq != uint64(len(seqs)) {
		t.Fatalf("applied = %+v, %v", ap, err)
	}

	// Sequence numbers keep growing across a restart.
	eng2 := &fakeEngine{}
	cfg.Interval = time.Hour
	_, stop2 := startAgent(t, cfg, eng2, nil)
	waitFor(t, "startup run after restart", 5*time.Second, func() bool { return eng2.count() == 1 })
	stop2()
	seqs2, _ := c.Queued()
	if last := seqs2[len(seqs2)-1]; last != uint64(len(seqs)+1) {
		t.Fatalf("seq after restart = %d, want %d", last, len(seqs)+1)
	}
}

func TestStopGrace(t *testing.T) {
	// A run in progress when the agent is stopped may finish within
	// StopGrace; past it, its context is cancelled.
	for _, tc := range []struct {
		name    string
		grace   time.Duration
		release time.Duration
		wantErr error
	}{
		{"finishes", 2 * time.Second, 50 * time.Millisecond, nil},
		{"aborted", 30 * time.Millisecond, 5 * time.Second, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := &fakeEngine{gate: make(chan struct{})}
			cfg := testConfig(t, t.TempDir())
			cfg.StopGrace = tc.grace
			_, stop := startAgent(t, cfg, eng, testState(1, "/etc/a"))
			waitFor(t, "run", 5*time.Second, func() bool { return eng.count() == 1 })
			go func() {
				time.Sleep(tc.release)
				select {
				case eng.gate <- struct{}{}:
				case <-time.After(time.Second):
				}
			}()
			time.Sleep(10 * time.Millisecond)
			stop()
			eng.mu.Lock()
			defer eng.mu.Unlock()
			if len(eng.ctxErrs) != 1 || !errors.Is(eng.ctxErrs[0], tc.wantErr) && eng.ctxErrs[0] != tc.wantErr {
				t.Fatalf("run ctx errors = %v, want [%v]", eng.ctxErrs, tc.wantErr)
			}
		})
	}
}

func TestCacheRoundTripAndAtomicity(t *testing.T) {
	dir := t.TempDir()
	c, err := agent.OpenCache(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.LoadState(); st != nil || err != nil {
		t.Fatalf("empty cache: %v, %v", st, err)
	}
	big := testState(3)
	for i := range 200 {
		big.Resources = append(big.Resources, &hivev1.Resource{Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/f" + string(rune('a'+i%26)), Content: strings.Repeat("x", 500)}}})
	}
	// Readers running beside a writer never see a torn file.
	var stop atomic.Bool
	var readers sync.WaitGroup
	var bad atomic.Value
	if err := c.SaveState(testState(1)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for !stop.Load() {
				st, err := c.LoadState()
				if err != nil || st == nil {
					bad.Store(errors.Join(err, errors.New("nil state")))
					return
				}
			}
		}()
	}
	for i := range 50 {
		st := testState(1)
		if i%2 == 1 {
			st = big
		}
		if err := c.SaveState(st); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	readers.Wait()
	if v := bad.Load(); v != nil {
		t.Fatalf("a reader saw a bad cache: %v", v)
	}
	got, err := c.LoadState()
	if err != nil || !proto.Equal(got, big) {
		t.Fatalf("load = %v (equal %v)", err, proto.Equal(got, big))
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, agent.StateFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600 (it may hold secrets)", fi.Mode().Perm())
	}
}

func TestCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	c, _ := agent.OpenCache(dir, nil)
	c.SaveState(testState(1, "/etc/a"))
	// A crash between create and rename leaves a temporary file; the
	// cache is still whole and the leftover is removed at the next open.
	left := filepath.Join(dir, "."+agent.StateFile+".tmp-123")
	os.WriteFile(left, []byte("half"), 0o600)
	c, _ = agent.OpenCache(dir, nil)
	if _, err := os.Stat(left); err == nil {
		t.Error("leftover temporary file kept")
	}
	if st, err := c.LoadState(); err != nil || st.GetGeneration() != 1 {
		t.Fatalf("state after crash: %v, %v", st, err)
	}
}

func TestCorruptCacheIgnored(t *testing.T) {
	good := testState(4, "/etc/a")
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)-3] }},
		{"flipped byte", func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-2] ^= 0x40; return b }},
		{"garbage", func([]byte) []byte { return []byte("\x00\x01 not a cache") }},
		{"empty", func([]byte) []byte { return nil }},
		{"bare protobuf", func([]byte) []byte { b, _ := proto.Marshal(good); return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c, _ := agent.OpenCache(dir, nil)
			if err := c.SaveState(good); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, agent.StateFile)
			raw, _ := os.ReadFile(p)
			if err := os.WriteFile(p, tc.damage(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := c.LoadState()
			if st != nil || !errors.Is(err, agent.ErrCorrupt) {
				t.Fatalf("load = %v, %v; want ErrCorrupt", st, err)
			}
			if _, err := os.Stat(p + ".corrupt"); err != nil {
				t.Errorf("corrupt file not moved aside: %v", err)
			}
			// The agent starts anyway, with no state (nothing to run).
			if err := os.WriteFile(p, tc.damage(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, agent.AppliedFile), []byte("{"), 0o600)
			eng := &fakeEngine{}
			a, stop := startAgent(t, testConfig(t, dir), eng, nil)
			time.Sleep(50 * time.Millisecond)
			stop()
			if eng.count() != 0 || a.Stats().Runs != 0 {
				t.Fatalf("agent ran %d times from a corrupt cache", eng.count())
			}
		})
	}
}

func TestReportQueueCap(t *testing.T) {
	c, _ := agent.OpenCache(t.TempDir(), nil)
	for i := uint64(1); i <= 7; i++ {
		if err := c.Enqueue(&hivev1.Report{Node: "n1", Seq: i}, 5); err != nil {
			t.Fatal(err)
		}
	}
	seqs, _ := c.Queued()
	if len(seqs) != 5 || seqs[0] != 3 || seqs[4] != 7 {
		t.Fatalf("queue = %v, want the newest five", seqs)
	}
	c.Dequeue(3)
	if seqs, _ = c.Queued(); seqs[0] != 4 {
		t.Fatalf("after dequeue: %v", seqs)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := agent.DefaultConfig()
	cfg.Name = "bad name!"
	cfg.DataDir = "relative"
	cfg.Root = "also-relative"
	cfg.Labels = map[string]string{"tier": "a\nb"}
	cfg.Addresses = []string{"0.0.0.0/0"}
	err := cfg.Validate()
	for _, want := range []string{"name", "data dir", "root", "mutual TLS", `labels: invalid label: value of tier, "a\nb"`, `address "0.0.0.0/0"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want mention of %q", err, want)
		}
	}
}

// FuzzCacheFile feeds arbitrary bytes as the cached state: loading never
// panics, and anything that loads was sealed by SaveState (so it
// round-trips).
func FuzzCacheFile(f *testing.F) {
	dir := f.TempDir()
	c, _ := agent.OpenCache(dir, nil)
	c.SaveState(testState(1, "/etc/a"))
	good, _ := os.ReadFile(filepath.Join(dir, agent.StateFile))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("hive-agent-cache/1 " + strings.Repeat("0", 64) + "\n"))
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		c, _ := agent.OpenCache(dir, nil)
		os.WriteFile(filepath.Join(dir, agent.StateFile), data, 0o600)
		st, err := c.LoadState()
		if err != nil {
			if !errors.Is(err, agent.ErrCorrupt) {
				t.Fatalf("error is not ErrCorrupt: %v", err)
			}
			return
		}
		if st == nil {
			t.Fatal("no error and no state for an existing file")
		}
		if err := c.SaveState(st); err != nil {
			t.Fatal(err)
		}
		again, err := c.LoadState()
		if err != nil || !proto.Equal(st, again) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// Labels too large for gossip metadata do not stop the agent.
func TestLabelsTooLargeForGossip(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	g := gossip.DefaultConfig()
	g.BindAddr = "127.0.0.1:0"
	cfg.Gossip = &g
	cfg.Labels = map[string]string{}
	for i := range 30 {
		cfg.Labels[fmt.Sprintf("label-%02d", i)] = strings.Repeat("v", 40)
	}
	a, err := agent.New(cfg, agent.Deps{Engine: &fakeEngine{}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Gossip().Close()
	for _, m := range a.Gossip().Members() {
		if m.Self && (m.Meta.GetKind() != hivev1.MemberKind_MEMBER_KIND_AGENT || len(m.Meta.GetLabels()) != 0) {
			t.Fatalf("self meta = %v", m.Meta)
		}
	}
}
