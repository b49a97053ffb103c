package agent

import (
	"testing"
	"time"
)

// TestAttemptTimeoutGrows: each watch dial that reached no coordinator
// doubles the time the next one gives a handshake, so an agent on a host
// too slow to finish one in 3 s still connects, within a bound.
func TestAttemptTimeoutGrows(t *testing.T) {
	want := []time.Duration{3 * time.Second, 6 * time.Second, 12 * time.Second, 24 * time.Second, 30 * time.Second, 30 * time.Second}
	for fails, w := range want {
		if got := attemptTimeout(fails); got != w {
			t.Errorf("attemptTimeout(%d) = %v, want %v", fails, got, w)
		}
	}
	if got := attemptTimeout(1000); got != 30*time.Second {
		t.Errorf("attemptTimeout(1000) = %v, want the 30s cap", got)
	}
}
