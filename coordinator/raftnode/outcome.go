package raftnode

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The apply outcomes. Every error Apply returns wraps at most one of
// them; Outcome reads it back and Status turns it into the one gRPC
// answer (hivev1.OutcomeStatus), FromStatus turns that answer back.
var (
	// ErrNotLeader: this server is not the leader; the command was not
	// appended (safe to send again anywhere).
	ErrNotLeader = errors.New("not the raft leader")
	// ErrNoLeader: no leader is known (within the apply timeout); the
	// command was not appended.
	ErrNoLeader = errors.New("no raft leader known")
	// ErrUncertain: leadership was lost while the command was in flight;
	// it may or may not have been committed.
	ErrUncertain = errors.New("leadership lost while committing: the command may or may not have been applied")
	// ErrMaybeApplied marks an error after a forward that was abandoned or
	// cut off: the leader may have appended the command. Its outcome is
	// uncertain, whatever else the error wraps.
	ErrMaybeApplied = errors.New("an earlier attempt may have been applied")
)

// Outcome returns what err says about a command's fate:
// hivev1.OutcomeNotApplied (ErrNotLeader, ErrNoLeader),
// hivev1.OutcomeUnknown (ErrUncertain, ErrMaybeApplied), or
// hivev1.OutcomeNone for anything else (nil, a rejection, a context end).
func Outcome(err error) hivev1.ApplyOutcome {
	switch {
	case err == nil:
		return hivev1.OutcomeNone
	case errors.Is(err, ErrUncertain), errors.Is(err, ErrMaybeApplied):
		return hivev1.OutcomeUnknown
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNoLeader):
		return hivev1.OutcomeNotApplied
	}
	return hivev1.OutcomeNone
}

// Status is the gRPC answer for an apply error with an outcome (ok
// false for the others): UNAVAILABLE with the outcome's ErrorInfo reason.
func Status(err error) (*status.Status, bool) {
	o := Outcome(err)
	if o == hivev1.OutcomeNone {
		return nil, false
	}
	return hivev1.OutcomeStatus(o, err.Error()), true
}

// FromStatus turns a leader's answer to a forwarded call back into an
// apply error: the outcome it carries (never read from the message), or,
// for a gRPC failure without one, ErrMaybeApplied (a call cut off in
// flight may have reached the leader). FAILED_PRECONDITION is how leaders
// of earlier versions said "not the leader". A context end of the caller
// is returned as is.
func FromStatus(leaderID string, err error) error {
	if err == nil {
		return nil
	}
	st := status.Convert(err)
	switch hivev1.OutcomeOf(err) {
	case hivev1.OutcomeNotApplied:
		return fmt.Errorf("%w: leader %s: %s", ErrNotLeader, leaderID, st.Message())
	case hivev1.OutcomeUnknown:
		return fmt.Errorf("%w: leader %s: %s", ErrUncertain, leaderID, st.Message())
	}
	switch st.Code() {
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: leader %s: %s", ErrNotLeader, leaderID, st.Message())
	case codes.Canceled:
		return fmt.Errorf("forward to leader %s: %w", leaderID, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("forward to leader %s: %v (%w)", leaderID, context.DeadlineExceeded, ErrMaybeApplied)
	case codes.Unavailable:
		return fmt.Errorf("forward to leader %s: %s (%w)", leaderID, st.Message(), ErrMaybeApplied)
	}
	return fmt.Errorf("forward to leader %s: %w", leaderID, err)
}

// fromRaft maps a raft future's error.
func fromRaft(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%s: %w", op, ErrUncertain)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Never handed to the leader loop: not appended.
		return fmt.Errorf("%s: %w (%v)", op, ErrNotLeader, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
