package agent_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/converge/confirm"
)

// fakeWindow is an open firewall window whose ConfirmWith blocks until
// end is called.
type fakeWindow struct {
	calls atomic.Int32
	once  sync.Once
	done  chan struct{}
	state confirm.State
}

func (w *fakeWindow) ConfirmWith(ctx context.Context, _ time.Duration, _ func(context.Context) error) confirm.State {
	w.calls.Add(1)
	select {
	case <-ctx.Done():
		return confirm.Open
	case <-w.done:
		return w.state
	}
}

func (w *fakeWindow) end(st confirm.State) {
	w.once.Do(func() { w.state = st; close(w.done) })
}

// TestOneProberPerWindow: runs during an open window start one prober for
// it, not one each (issue 12: 5–6 "confirm window ended" per window); a
// rollback triggers a run at once, which reports it.
func TestOneProberPerWindow(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	c, err := agent.OpenCache(cfg.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SaveState(testState(1, "/etc/a")); err != nil {
		t.Fatal(err)
	}
	w := &fakeWindow{done: make(chan struct{})}
	var open atomic.Bool
	open.Store(true)
	eng := &fakeEngine{}
	a, err := agent.New(cfg, agent.Deps{Engine: eng, OpenWindow: func() agent.Window {
		if open.Load() {
			return w
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = a.Run(ctx) }()
	defer func() { cancel(); <-stopped }()

	waitFor(t, "startup run", 5*time.Second, func() bool { return eng.count() == 1 })
	for i := 2; i <= 6; i++ {
		a.Trigger(agent.TriggerSignal)
		waitFor(t, "signal run", 5*time.Second, func() bool { return eng.count() == i })
	}
	time.Sleep(50 * time.Millisecond)
	if n := w.calls.Load(); n != 1 {
		t.Fatalf("%d probers for one window over 6 runs, want 1", n)
	}
	open.Store(false)
	w.end(confirm.RolledBack)
	waitFor(t, "run after the rollback", 5*time.Second, func() bool { return a.Stats().LastTrigger == agent.TriggerRollback })
}
