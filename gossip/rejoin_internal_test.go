package gossip

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestRejoinBackoff: a seed that stays missing is joined again after a
// random delay within the pool's spread, then with a delay doubling from
// RejoinInterval up to RejoinMax; once alive (here: the address is the
// member itself) it is forgotten.
func TestRejoinBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg := DefaultConfig()
	cfg.Name, cfg.BindAddr, cfg.Profile = "a", "127.0.0.1:0", ProfileLocal
	cfg.Join = []string{dead}
	cfg.RejoinInterval, cfg.RejoinMax = time.Second, 4*time.Second
	cfg.PoolSize = 100 // spread: 100 × 50ms = 5s
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx := context.Background()
	backoff := map[string]*rejoinState{}
	now := time.Now()
	g.rejoinMissing(ctx, backoff, now)
	st := backoff[dead]
	if st == nil {
		t.Fatal("missing seed not tracked")
	}
	if d := st.next.Sub(now); d < 0 || d > 5*time.Second {
		t.Fatalf("first rejoin in %v, want within the 5s spread", d)
	}
	// Due: the join fails (nothing listens), and the delay doubles up to
	// RejoinMax.
	var delays []time.Duration
	for range 4 {
		now = st.next
		g.rejoinMissing(ctx, backoff, now)
		delays = append(delays, st.delay)
		if st.next.Before(now.Add(st.delay * 8 / 10)) {
			t.Fatalf("next rejoin at %v, before the delay %v", st.next.Sub(now), st.delay)
		}
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("delays %v, want %v", delays, want)
		}
	}
	// Not due yet: nothing happens.
	before := *st
	g.rejoinMissing(ctx, backoff, now.Add(time.Millisecond))
	if *st != before {
		t.Fatalf("state changed before due: %+v → %+v", before, *st)
	}
	// An address that is not missing (this member's own) is never
	// tracked, and its earlier backoff is dropped.
	self := g.LocalAddr()
	g.cfg.Join = []string{self}
	backoff[self] = &rejoinState{next: now, delay: time.Minute}
	g.rejoinMissing(ctx, backoff, now)
	if _, ok := backoff[self]; ok {
		t.Fatalf("backoff kept for an address that is not missing: %v", backoff)
	}
}
