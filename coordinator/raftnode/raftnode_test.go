package raftnode

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestOutcomeRoundTrip: every apply error maps to one gRPC answer, and
// the follower reading that answer gets the same outcome back (from the
// ErrorInfo reason, never the message).
func TestOutcomeRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want hivev1.ApplyOutcome
	}{
		{ErrNotLeader, hivev1.OutcomeNotApplied},
		{fmt.Errorf("%w: waiting for an election", ErrNoLeader), hivev1.OutcomeNotApplied},
		{fmt.Errorf("raft apply: %w", ErrUncertain), hivev1.OutcomeUnknown},
		{fmt.Errorf("%w: deadline (%w)", ErrNoLeader, ErrMaybeApplied), hivev1.OutcomeUnknown},
		{errors.New("boom"), hivev1.OutcomeNone},
		{context.Canceled, hivev1.OutcomeNone},
		{nil, hivev1.OutcomeNone},
	} {
		if got := Outcome(tt.err); got != tt.want {
			t.Errorf("Outcome(%v) = %v, want %v", tt.err, got, tt.want)
		}
		st, ok := Status(tt.err)
		if ok != (tt.want != hivev1.OutcomeNone) {
			t.Errorf("Status(%v): ok %v", tt.err, ok)
			continue
		}
		if !ok {
			continue
		}
		if st.Code() != codes.Unavailable || hivev1.OutcomeOf(st.Err()) != tt.want {
			t.Errorf("Status(%v) = %v (outcome %v), want UNAVAILABLE with %v", tt.err, st, hivev1.OutcomeOf(st.Err()), tt.want)
		}
		// A message that names another outcome changes nothing.
		back := FromStatus("c1", st.Err())
		if got := Outcome(back); got != tt.want {
			t.Errorf("FromStatus(Status(%v)) = %v: outcome %v, want %v", tt.err, back, got, tt.want)
		}
	}
	for _, tt := range []struct {
		err  error
		want hivev1.ApplyOutcome
	}{
		// Leaders of earlier versions said "not the leader" so.
		{status.Error(codes.FailedPrecondition, ErrNotLeader.Error()), hivev1.OutcomeNotApplied},
		// A call cut off in flight may have reached the leader, whatever
		// its message says.
		{status.Error(codes.Unavailable, "not the raft leader"), hivev1.OutcomeUnknown},
		{status.Error(codes.DeadlineExceeded, "deadline"), hivev1.OutcomeUnknown},
		{status.Error(codes.InvalidArgument, "bad"), hivev1.OutcomeNone},
	} {
		if got := Outcome(FromStatus("c1", tt.err)); got != tt.want {
			t.Errorf("Outcome(FromStatus(%v)) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestReadLoopSharesRounds: readers that arrive while a round is in
// flight wait for the next one, which serves them all; every round
// starts after its readers arrived.
func TestReadLoopSharesRounds(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var rounds int
	l := &readLoop{round: func() (uint64, error) {
		rounds++
		if rounds == 1 {
			close(started)
			<-release
		}
		return uint64(rounds), nil
	}}
	first := make(chan uint64)
	go func() { idx, _ := l.wait(context.Background()); first <- idx }()
	<-started
	// 10 readers arrive during round 1: they share round 2.
	res := make(chan uint64, 10)
	for i := 0; i < 10; i++ {
		go func() { idx, _ := l.wait(context.Background()); res <- idx }()
	}
	waitJoined(t, l, 10)
	close(release)
	if idx := <-first; idx != 1 {
		t.Fatalf("first reader got round %d", idx)
	}
	for i := 0; i < 10; i++ {
		if idx := <-res; idx != 2 {
			t.Fatalf("a reader that arrived during round 1 got round %d, want 2", idx)
		}
	}
	if rounds != 2 {
		t.Fatalf("%d rounds for 11 readers, want 2", rounds)
	}
}

// waitJoined waits until n readers joined the next round.
func waitJoined(t *testing.T, l *readLoop, n int) {
	t.Helper()
	for i := 0; i < 5000; i++ {
		l.mu.Lock()
		joined := l.next != nil && l.next.readers == n
		l.mu.Unlock()
		if joined {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("readers did not join")
}
