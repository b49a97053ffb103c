package ctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// pushResultJSON is the -o json output of push and rollback.
type pushResultJSON struct {
	Generation uint64 `json:"generation"`
	SHA256     string `json:"sha256"`
	Unchanged  bool   `json:"unchanged,omitempty"`
}

func writePushResult(w io.Writer, resp *hivev1.PushResponse) {
	if resp.GetUnchanged() {
		fmt.Fprintf(w, "unchanged: generation %d already has this content (sha256 %s)\n", resp.GetGeneration(), shortHash(resp.GetSha256()))
		return
	}
	fmt.Fprintf(w, "generation %d (sha256 %s) applies to %d node(s)\n", resp.GetGeneration(), shortHash(resp.GetSha256()), len(resp.GetNodes()))
}

// staleOrRPCError explains a refused push or rollback. When the refusal is
// a precondition failure and the current generation is not the one the
// change was based on, it says so in the operator's terms.
func staleOrRPCError(ctx context.Context, c *client.Conn, op string, base uint64, err error) error {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.Aborted:
		cur, cerr := currentGeneration(ctx, c)
		if cerr == nil && cur != base {
			return &cliError{
				msg: fmt.Sprintf("%s: generation %d is current, your change is based on %d: pull and retry, or --force\n"+
					"(see what changed with 'hivectl diff %d %d'; 'hivectl pull' writes the current site file)", op, cur, base, base, cur),
				err: err,
			}
		}
	}
	return rpcError(op, err, true)
}

// waiter follows status until every node of a generation is done.
type waiter struct {
	f     *statusFollower
	gen   uint64
	nodes []string // nodes the generation applies to; empty: take from status
	out   *liveLine
}

// waitResult is the last classification of the matched nodes.
type waitResult struct {
	converged, applying, pending []*hivev1.NodeStatus
	failed                       []*hivev1.NodeStatus
	missing                      []string // matched, but not in status yet
}

func (r waitResult) total() int {
	return len(r.converged) + len(r.applying) + len(r.pending) + len(r.failed) + len(r.missing)
}

func (r waitResult) done() bool { return len(r.applying)+len(r.pending)+len(r.missing) == 0 }

func (r waitResult) counts() fleetCounts {
	return fleetCounts{converged: len(r.converged), applying: len(r.applying), failed: len(r.failed), pending: len(r.pending) + len(r.missing)}
}

func (r waitResult) line(gen uint64) string {
	return fmt.Sprintf("generation %d: %s", gen, r.counts())
}

// pendingDetail names the nodes that are not done (at most 10).
func (r waitResult) pendingDetail() string {
	var names []string
	for _, n := range slices.Concat(r.applying, r.pending) {
		names = append(names, esc(n.GetName())+" ("+phaseName(n.GetPhase())+", "+gossipName(n.GetGossip())+")")
	}
	for _, m := range r.missing {
		names = append(names, esc(m)+" (never reported)")
	}
	s := fmt.Sprintf("%d node(s) not done", len(names))
	if len(names) > 10 {
		names = append(names[:10], fmt.Sprintf("and %d more", len(names)-10))
	}
	if len(names) > 0 {
		s += ": " + strings.Join(names, ", ")
	}
	if len(r.failed) > 0 {
		s += fmt.Sprintf("; %d failed", len(r.failed))
	}
	return s
}

// classify sorts the matched nodes of a status answer by progress on gen.
func classify(resp *hivev1.GetStatusResponse, gen uint64, matched []string) waitResult {
	var r waitResult
	byName := map[string]*hivev1.NodeStatus{}
	for _, n := range resp.GetNodes() {
		byName[n.GetName()] = n
	}
	if len(matched) == 0 {
		for _, n := range resp.GetNodes() {
			if n.GetDesiredGeneration() >= gen {
				matched = append(matched, n.GetName())
			}
		}
	}
	for _, name := range matched {
		n, ok := byName[name]
		if !ok {
			r.missing = append(r.missing, name)
			continue
		}
		switch {
		case n.GetAppliedGeneration() >= gen && n.GetPhase() == hivev1.Phase_PHASE_CONVERGED:
			r.converged = append(r.converged, n)
		case n.GetAppliedGeneration() >= gen && n.GetPhase() == hivev1.Phase_PHASE_FAILED:
			r.failed = append(r.failed, n)
		case n.GetPhase() == hivev1.Phase_PHASE_APPLYING:
			r.applying = append(r.applying, n)
		default:
			r.pending = append(r.pending, n)
		}
	}
	return r
}

// run follows status until every matched node is done or ctx ends,
// showing the progress on each change.
func (w *waiter) run(ctx context.Context) (waitResult, error) {
	var last waitResult
	defer w.out.end()
	for {
		resp, err := w.f.next(ctx)
		if err != nil {
			return last, err
		}
		last = classify(resp, w.gen, w.nodes)
		if last.total() == 0 {
			w.out.end()
			fmt.Fprintf(w.out.w, "generation %d applies to no node: nothing to wait for\n", w.gen)
			return last, nil
		}
		w.out.show(last.line(w.gen), last.counts())
		if last.done() {
			return last, nil
		}
	}
}

// blockWait is the max_wait of each blocking status call: well inside the
// call's timeout (rpcTimeout).
const blockWait = 20 * time.Second

// statusFollower reads status with blocking calls: the first answer at
// once, then each next one as soon as the status changed on the
// coordinator (a report committed, a phase an agent reported, a push), or
// after blockWait without a change. Between calls it pauses a quarter of
// what the quickest answer so far took (at most 250 ms), so a large fleet
// whose status changes all the time costs the coordinator at most about
// four fifths of one core per follower, and only while it changes (a
// longer pause delays the last change as much: see docs/performance.md). A coordinator that does not block (no
// status_index in its answers: an older version) is polled every
// waitPoll, or four times what an answer took. On a lost coordinator it
// dials again (possibly another one) and goes on from the same status
// index, which the next coordinator catches up to first.
type statusFollower struct {
	cf   *connFlags
	conn *client.Conn // current connection
	orig *client.Conn // the caller's; closed by the caller
	node string       // "": every node

	index   uint64        // status_index of the last answer
	cost    time.Duration // how long the quickest answer took
	took    time.Duration // how long the last call took
	last    time.Time     // when the last call returned
	calls   int
	polling bool // the coordinator does not block
	failed  bool // the last call failed
}

func newStatusFollower(cf *connFlags, c *client.Conn, node string) *statusFollower {
	return &statusFollower{cf: cf, conn: c, orig: c, node: node}
}

// close closes a connection the follower dialled itself.
func (f *statusFollower) close() {
	if f.conn != f.orig {
		f.conn.Close()
	}
}

// next returns the next status answer (see statusFollower).
func (f *statusFollower) next(ctx context.Context) (*hivev1.GetStatusResponse, error) {
	for {
		if f.calls > 0 {
			pause := min(f.cost/4, 250*time.Millisecond)
			switch {
			case f.failed:
				pause = waitPoll
			case f.polling:
				pause = pollDelay(waitPoll, f.took)
			}
			if d := time.Until(f.last.Add(pause)); d > 0 {
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(d):
				}
			}
		}
		req := &hivev1.GetStatusRequest{Node: f.node}
		blocking := f.calls > 0 && !f.polling && !pollOnly
		if blocking {
			req.MinIndex, req.MaxWait = f.index, durationpb.New(blockWait)
		}
		cctx, cancel := callCtx(ctx)
		start := time.Now()
		resp, err := f.conn.GetStatus(cctx, req)
		cancel()
		f.last = time.Now()
		f.took = f.last.Sub(start)
		f.calls++
		f.failed = err != nil
		switch {
		case err == nil:
			// The quickest answer bounds what one costs the coordinator
			// (a blocking call's time includes its wait; the first answer
			// right after a push competes with the push's fan-out).
			if f.cost == 0 || f.took < f.cost {
				f.cost = f.took
			}
			f.polling = resp.GetStatusIndex() == 0 || pollOnly
			f.index = max(f.index, resp.GetStatusIndex())
			return resp, nil
		case ctxOver(ctx):
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, context.DeadlineExceeded
		case status.Code(err) == codes.Unavailable:
			// The coordinator went away: find another one, and go on
			// after a pause (so that failures do not spin).
			if c, derr := f.cf.dial(ctx); derr == nil {
				f.close()
				f.conn = c
			}
		default:
			return nil, rpcError("status", err, false)
		}
	}
}

// ctxOver reports whether ctx ended or its deadline passed (a call may
// fail with DeadlineExceeded a moment before ctx.Err() says so).
func ctxOver(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// pollOnly makes every statusFollower poll as against a coordinator that
// cannot block (benchmarks compare the two).
var pollOnly = false

// pollDelay is the pause before the next status poll of a coordinator that
// does not block: the base interval, or four times what the last answer
// took when that is longer, so that a large fleet's status (one answer
// lists every node) costs a coordinator at most a fifth of its time,
// capped at 10s.
func pollDelay(base, took time.Duration) time.Duration {
	return min(max(base, 4*took), 10*time.Second)
}

// isTerminal reports whether w is a character device (a terminal), where
// the progress line is rewritten in place.
func isTerminal(w io.Writer) bool {
	f, ok := rawWriter(w).(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
