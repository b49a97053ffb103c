package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// stuckEngine blocks every run of generation 1 until its context ends (a
// resource that never finishes), and records why each run ended.
type stuckEngine struct {
	mu     sync.Mutex
	gens   []uint64
	causes []error
}

func (e *stuckEngine) Run(ctx context.Context, st *hivev1.NodeState, _ converge.RunOptions) (*converge.Report, error) {
	e.mu.Lock()
	e.gens = append(e.gens, st.GetGeneration())
	e.mu.Unlock()
	if st.GetGeneration() == 1 {
		<-ctx.Done()
		e.mu.Lock()
		e.causes = append(e.causes, context.Cause(ctx))
		e.mu.Unlock()
		return &converge.Report{}, ctx.Err()
	}
	return &converge.Report{}, nil
}

func (e *stuckEngine) snapshot() ([]uint64, []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]uint64(nil), e.gens...), append([]error(nil), e.causes...)
}

// TestNewerGenerationSupersedesStuckRun: a run stuck on generation 1 is
// cancelled StopGrace after generation 2 arrives, and generation 2 runs.
// Before, the agent stayed on the stuck run until RunTimeout (an hour).
func TestNewerGenerationSupersedesStuckRun(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name = "n1"
	cfg.DataDir = t.TempDir()
	cfg.Dev = true
	cfg.Gossip = nil
	cfg.Coordinators = []string{"127.0.0.1:1"}
	cfg.StopGrace = 200 * time.Millisecond
	eng := &stuckEngine{}
	a, err := New(cfg, Deps{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	a.deliver(&hivev1.NodeState{Node: "n1", Generation: 1, Hash: "h1"})
	waitUntil(t, func() bool { g, _ := eng.snapshot(); return len(g) == 1 })
	start := time.Now()
	a.deliver(&hivev1.NodeState{Node: "n1", Generation: 2, Hash: "h2"})
	waitUntil(t, func() bool { g, _ := eng.snapshot(); return len(g) == 2 })
	took := time.Since(start)
	gens, causes := eng.snapshot()
	if gens[1] != 2 || len(causes) != 1 || causes[0] == nil || causes[0].Error() != "superseded by generation 2" {
		t.Fatalf("runs %v, causes %v", gens, causes)
	}
	if took < cfg.StopGrace || took > cfg.StopGrace+5*time.Second {
		t.Errorf("generation 2 started %v after it arrived; want about the %v grace", took, cfg.StopGrace)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
