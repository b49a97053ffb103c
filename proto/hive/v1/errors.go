package hivev1

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
