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
	cf    *connFlags
	conn  *client.Conn // current connection
	orig  *client.Conn // the caller's; closed by the caller
	gen   uint64
	nodes []string // nodes the generation applies to; empty: take from status
	out   io.Writer
	tty   bool
	poll  time.Duration
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

func (r waitResult) line(gen uint64) string {
	return fmt.Sprintf("generation %d: %d/%d converged, %d applying, %d failed, %d pending",
		gen, len(r.converged), r.total(), len(r.applying), len(r.failed), len(r.pending)+len(r.missing))
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

// run polls status until every matched node is done or ctx ends. On a
// lost coordinator it dials again (possibly another one) and goes on.
func (w *waiter) run(ctx context.Context) (waitResult, error) {
	var last waitResult
	lastLine := ""
	for {
		cctx, cancel := callCtx(ctx)
		start := time.Now()
		resp, err := w.conn.GetStatus(cctx, &hivev1.GetStatusRequest{})
		took := time.Since(start)
		cancel()
		switch {
		case err == nil:
			last = classify(resp, w.gen, w.nodes)
			if last.total() == 0 {
				fmt.Fprintf(w.out, "generation %d applies to no node: nothing to wait for\n", w.gen)
				return last, nil
			}
			line := last.line(w.gen)
			if line != lastLine {
				if w.tty {
					// The redraw is ours; the line holds only numbers.
					fmt.Fprintf(rawWriter(w.out), "\r\033[K%s", esc(line))
				} else {
					fmt.Fprintln(w.out, line)
				}
				lastLine = line
			}
			if last.done() {
				if w.tty {
					fmt.Fprintln(w.out)
				}
				return last, nil
			}
		case ctx.Err() != nil:
		case status.Code(err) == codes.Unavailable:
			// The coordinator went away: find another one.
			if c, derr := w.cf.dial(ctx); derr == nil {
				if w.conn != w.orig {
					w.conn.Close()
				}
				w.conn = c
			}
		default:
			return last, rpcError("status", err, false)
		}
		select {
		case <-ctx.Done():
			if w.tty && lastLine != "" {
				fmt.Fprintln(w.out)
			}
			return last, ctx.Err()
		case <-time.After(pollDelay(w.poll, took)):
		}
	}
}

// pollDelay is the pause before the next status poll: the base interval,
// or four times what the last answer took when that is longer, so that a
// large fleet's status (one answer lists every node) costs a coordinator at
// most a fifth of its time, capped at 10s.
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
