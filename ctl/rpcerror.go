package ctl

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// cliError is an error with a message meant for the operator that still
// unwraps to the underlying (gRPC status) error.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// writeHint is appended to PermissionDenied answers to write calls.
const writeHint = "pushes, rollbacks and secret writes need an admin certificate (hivectl tls cert create --admin NAME)"

// readHint is appended to PermissionDenied answers to read calls.
const readHint = "hivectl needs an admin certificate; agent certificates may only watch and report as their node"

// rpcError turns a gRPC error from call op into a clear message. write
// says whether op changes state (for the permission hint).
func rpcError(op string, err error, write bool) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	msg := esc(st.Message())
	var out string
	switch st.Code() {
	case codes.Unauthenticated:
		out = fmt.Sprintf("%s: not authenticated: %s (give a client certificate signed by the site's CA with --cert/--key or %s/%s)", op, msg, envCert, envKey)
	case codes.PermissionDenied:
		out = fmt.Sprintf("%s: permission denied: %s", op, msg)
		if write {
			out += " (" + writeHint + ")"
		} else {
			out += " (" + readHint + ")"
		}
	case codes.InvalidArgument:
		out = fmt.Sprintf("%s: rejected: %s", op, msg)
	case codes.NotFound, codes.FailedPrecondition, codes.Aborted, codes.AlreadyExists, codes.OutOfRange:
		out = fmt.Sprintf("%s: %s", op, msg)
	case codes.ResourceExhausted:
		out = fmt.Sprintf("%s: too large or too many requests: %s", op, msg)
	case codes.Unavailable:
		out = fmt.Sprintf("%s: coordinator unavailable: %s (with several --addr, hivectl moves on to the next for calls that are safe to send again)", op, msg)
	case codes.DeadlineExceeded:
		out = fmt.Sprintf("%s: no answer in time: %s", op, msg)
	case codes.Canceled:
		out = fmt.Sprintf("%s: canceled", op)
	case codes.Unimplemented:
		out = fmt.Sprintf("%s: this coordinator does not implement the call (older version?): %s", op, msg)
	default:
		out = fmt.Sprintf("%s: %s (%s)", op, msg, st.Code())
	}
	return &cliError{msg: out, err: err}
}
