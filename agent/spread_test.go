package agent_test

import (
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
)

// TestSpreads pins the join and restart spreads the docs state
// (docs/agent.md, docs/operations.md): a small fleet waits for nothing,
// a large one spreads its gossip joins and its reconnections after a
// restart over a window that grows with it and stays bounded.
func TestSpreads(t *testing.T) {
	for _, tc := range []struct {
		n             int
		join, restart time.Duration
	}{
		{0, time.Second, 0},
		{64, 1920 * time.Millisecond, 0},
		{65, 1950 * time.Millisecond, 1300 * time.Millisecond},
		{500, 15 * time.Second, 10 * time.Second},
		{1000, 30 * time.Second, 20 * time.Second},
		{100000, time.Minute, 20 * time.Second},
	} {
		if got := agent.JoinSpread(tc.n); got != tc.join {
			t.Errorf("JoinSpread(%d) = %v, want %v", tc.n, got, tc.join)
		}
		if got := agent.RestartSpread(tc.n); got != tc.restart {
			t.Errorf("RestartSpread(%d) = %v, want %v", tc.n, got, tc.restart)
		}
	}
}

// TestPoolSizeRemembered: the pool size survives a reopen of the cache
// (what the next start sizes gossip with); none saved reads as 0.
func TestPoolSizeRemembered(t *testing.T) {
	dir := t.TempDir()
	c, err := agent.OpenCache(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.LoadPoolSize(); n != 0 || err != nil {
		t.Fatalf("empty cache: %d, %v", n, err)
	}
	if err := c.SavePoolSize(503); err != nil {
		t.Fatal(err)
	}
	c2, err := agent.OpenCache(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c2.LoadPoolSize(); n != 503 || err != nil {
		t.Fatalf("reopened: %d, %v; want 503", n, err)
	}
}
