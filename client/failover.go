package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Retry says when a unary call that failed with UNAVAILABLE (the server
// died or went away mid-call, refused the connection, or has no leader)
// is sent again to the next coordinator.
type Retry int

const (
	// RetryAlways: sending the call again has the effect of sending it
	// once (reads; writes the server deduplicates).
	RetryAlways Retry = iota
	// RetryIfNotApplied: sent again only when the server answered that
	// nothing was applied (hivev1.ReasonNotApplied). A call cut off in
	// flight may have been applied and is not sent again.
	RetryIfNotApplied
)

// RetryOf is the rule for one call of CoordinatorService: method is the
// full method name, req the request. It is the one table of which calls
// are safe to send twice:
//
//   - Reads (ListGenerations, GetGeneration, DiffGenerations,
//     GetNodeState, GetStatus, ListMembers, ListSecrets, ListPeers):
//     always.
//   - Push without force: always. It carries base_generation, and the
//     state machine appends a push only when base_generation is the
//     current generation, so two deliveries can create at most one
//     generation: the second finds its own content current (answered
//     unchanged with the first's generation, base+1) or, if another
//     push came in between, is refused as stale. The caller tells these
//     answers apart (ctl: push).
//   - Rollback with a base generation and without force: always, for the
//     same reason (a rollback to content that is current is unchanged).
//   - RevokeNode: always (revoking a revoked certificate is unchanged).
//   - Report: always (reports carry sequence numbers).
//   - Everything else (forced pushes and rollbacks, rollbacks without a
//     base, secrets, labels, peers, tokens, certificates, node removal):
//     only when the server said nothing was applied.
func RetryOf(method string, req any) Retry {
	switch method {
	case hivev1.CoordinatorService_ListGenerations_FullMethodName,
		hivev1.CoordinatorService_GetGeneration_FullMethodName,
		hivev1.CoordinatorService_DiffGenerations_FullMethodName,
		hivev1.CoordinatorService_GetNodeState_FullMethodName,
		hivev1.CoordinatorService_GetStatus_FullMethodName,
		hivev1.CoordinatorService_ListMembers_FullMethodName,
		hivev1.CoordinatorService_ListSecrets_FullMethodName,
		hivev1.CoordinatorService_ListPeers_FullMethodName,
		hivev1.CoordinatorService_RevokeNode_FullMethodName,
		hivev1.CoordinatorService_Report_FullMethodName:
		return RetryAlways
	case hivev1.CoordinatorService_Push_FullMethodName:
		if r, ok := req.(*hivev1.PushRequest); ok && !r.GetForce() {
			return RetryAlways
		}
	case hivev1.CoordinatorService_Rollback_FullMethodName:
		if r, ok := req.(*hivev1.RollbackRequest); ok && !r.GetForce() && r.GetBaseGeneration() != 0 {
			return RetryAlways
		}
	}
	return RetryIfNotApplied
}

// NotApplied reports whether err is a coordinator's answer that the write
// was not applied (UNAVAILABLE with hivev1.ReasonNotApplied).
func NotApplied(err error) bool {
	return hivev1.OutcomeOf(err) == hivev1.OutcomeNotApplied
}

// UncertainError is returned instead of a transport failure of a call
// that may have been applied and is not safe to send again (RetryOf says
// RetryIfNotApplied, and the server did not say nothing was applied).
// status.Code still gives UNAVAILABLE.
type UncertainError struct {
	Addr   string // the coordinator the call was sent to
	Method string // full method name
	Err    error
}

func (e *UncertainError) Error() string {
	return fmt.Sprintf("%s: connection lost during %s, which may or may not have been applied (not sent again): %v", e.Addr, shortMethod(e.Method), e.Err)
}
func (e *UncertainError) Unwrap() error { return e.Err }
func (e *UncertainError) GRPCStatus() *status.Status {
	return status.New(codes.Unavailable, e.Error())
}

func shortMethod(m string) string { return m[strings.LastIndex(m, "/")+1:] }

// failoverBackoff is the pause before the n-th new attempt (n from 1):
// none before the first, which goes to another coordinator (a follower
// holds a write until a new leader is elected, so the client need not
// wait for the election itself), then 50 ms doubling up to 800 ms.
func failoverBackoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	d := 50 * time.Millisecond << min(n-2, 4)
	return min(d, 800*time.Millisecond)
}

// failover is the grpc.ClientConnInterface of a Conn dialled with
// Config.Failover: unary calls go to the current coordinator; one that
// fails with UNAVAILABLE and may be sent again (RetryOf) is sent to the
// next address that answers a health check, up to once per configured
// address plus one. Streams are opened on the current coordinator and are
// not moved. Safe for concurrent use; moving on closes the previous
// connection, so calls in flight on it fail.
type failover struct {
	addrs   []string // normalized
	timeout time.Duration
	opts    []grpc.DialOption

	mu       sync.Mutex
	cc       *grpc.ClientConn
	addr     string
	switches int
	// OnSwitch, when set, is told of each move (from, to, the failure).
	onSwitch func(from, to string, err error)
}

func (f *failover) current() (*grpc.ClientConn, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cc, f.addr
}

func (f *failover) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	var tried []string
	for n := 0; ; n++ {
		cc, addr := f.current()
		err := cc.Invoke(ctx, method, args, reply, opts...)
		if err == nil || status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
		if RetryOf(method, args) != RetryAlways && !NotApplied(err) {
			// Not sent again, but later calls (a check of what happened)
			// go to a coordinator that answers.
			f.moveOn(ctx, cc, addr, err)
			return &UncertainError{Addr: addr, Method: method, Err: cleanErr(err)}
		}
		tried = append(tried, addr)
		if n >= len(f.addrs) {
			return fmt.Errorf("no coordinator completed the call (tried %s); the last said: %w", strings.Join(tried, ", "), cleanErr(err))
		}
		if d := failoverBackoff(n + 1); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		if serr := f.moveOn(ctx, cc, addr, err); serr != nil {
			return fmt.Errorf("%w (then no other coordinator answered: %v)", cleanErr(err), serr)
		}
	}
}

// moveOn replaces the connection cc to addr, which failed with cause, by
// one to the next address that answers (addr itself last). Another caller
// that already moved on wins.
func (f *failover) moveOn(ctx context.Context, cc *grpc.ClientConn, addr string, cause error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cc != cc {
		return nil
	}
	i := 0
	for j, a := range f.addrs {
		if a == addr {
			i = j
		}
	}
	order := append(append([]string{}, f.addrs[i+1:]...), f.addrs[:i+1]...)
	next, err := dialFirst(ctx, order, f.timeout, f.opts)
	if err != nil {
		return err
	}
	old := f.cc
	f.cc, f.addr = next.cc, next.Addr
	f.switches++
	if f.onSwitch != nil {
		f.onSwitch(addr, f.addr, cleanErr(cause))
	}
	old.Close()
	return nil
}

func (f *failover) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc, _ := f.current()
	return cc.NewStream(ctx, desc, method, opts...)
}

func (f *failover) close() error {
	cc, _ := f.current()
	return cc.Close()
}

var errNoFailover = errors.New("connection dialled without Config.Failover")

// Switches returns how often the connection moved on to another
// coordinator, and the coordinator it uses now. It fails for a Conn
// dialled without Config.Failover.
func (c *Conn) Switches() (int, string, error) {
	if c.fo == nil {
		return 0, c.Addr, errNoFailover
	}
	c.fo.mu.Lock()
	defer c.fo.mu.Unlock()
	return c.fo.switches, c.fo.addr, nil
}
