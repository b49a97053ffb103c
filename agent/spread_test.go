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
