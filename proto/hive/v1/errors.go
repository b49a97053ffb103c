package hivev1

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error details. A coordinator attaches a google.rpc.ErrorInfo with
// ErrorDomain and one of these reasons to an UNAVAILABLE answer whose
// outcome it knows, so that a client can decide without reading messages
// whether sending the call again elsewhere is safe.
const (
	// ErrorDomain is ErrorInfo.domain of hive's details.
	ErrorDomain = "hivefleet.io"
	// ReasonNotApplied: the write was not appended to the raft log (no
	// leader, or this server is not the leader): nothing was applied, and
	// the call may be sent again to any coordinator.
	ReasonNotApplied = "NOT_APPLIED"
	// ReasonOutcomeUnknown: leadership was lost while the write was in
	// flight; it may or may not have been applied.
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
)

// ApplyOutcome is what a coordinator knows about a write it did not complete:
// the one mapping between an apply outcome and a gRPC status, used by the
// coordinators (answering and forwarding) and by the client (failover).
type ApplyOutcome int

const (
	// OutcomeNone: the error says nothing about an apply (a success, a
	// business rejection, a transport failure without details).
	OutcomeNone ApplyOutcome = iota
	// OutcomeNotApplied: never appended to the raft log; safe to send
	// again to any coordinator (ReasonNotApplied).
	OutcomeNotApplied
	// OutcomeUnknown: may or may not have been applied
	// (ReasonOutcomeUnknown).
	OutcomeUnknown
)

func (o ApplyOutcome) String() string {
	switch o {
	case OutcomeNotApplied:
		return "not applied"
	case OutcomeUnknown:
		return "outcome unknown"
	}
	return "none"
}

// OutcomeStatus returns the UNAVAILABLE status with msg that carries o as
// an ErrorInfo (domain ErrorDomain); OutcomeNone gives a plain
// UNAVAILABLE.
func OutcomeStatus(o ApplyOutcome, msg string) *status.Status {
	st := status.New(codes.Unavailable, msg)
	reason := ""
	switch o {
	case OutcomeNotApplied:
		reason = ReasonNotApplied
	case OutcomeUnknown:
		reason = ReasonOutcomeUnknown
	default:
		return st
	}
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason}); err == nil {
		return d
	}
	return st
}

// OutcomeOf reads the outcome a coordinator attached to a gRPC error
// (OutcomeStatus); any other error is OutcomeNone. Only the code and the
// ErrorInfo are read, never the message.
func OutcomeOf(err error) ApplyOutcome {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return OutcomeNone
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == ErrorDomain {
			switch ei.GetReason() {
			case ReasonNotApplied:
				return OutcomeNotApplied
			case ReasonOutcomeUnknown:
				return OutcomeUnknown
			}
		}
	}
	return OutcomeNone
}
