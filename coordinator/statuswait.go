package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/hivefleet/hive/coordinator/fsm"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// MaxStatusWait caps the max_wait of a blocking GetStatus or
// ListGenerations.
const MaxStatusWait = 5 * time.Minute

// localBits is the width of the in-memory part of a status version: the
// raft part is shifted left by it.
const localBits = 20

// statusWatch is what blocking status and history reads wait on, and the
// "applying" phases this server keeps in memory.
//
// An agent's "applying" report (a run for a new state started) is not
// written through raft: the coordinator that receives it keeps it here and
// shows it in its status answers until the node's final report (converged
// or failed, committed through raft with the report batches) supersedes
// it. Other coordinators show such a node as pending (its reported
// generation is behind the desired one) until the final report commits.
//
// Every change a status or history answer may show closes one channel and
// replaces it (a broadcast, as the watch hub does): a blocking read takes
// the channel and the version before it reads the state, and waits on the
// channel with a timer, so waiters cost no goroutine or ticker of their own
// and a change between the read and the wait is never missed.
//
// Versions. A status version is the raft index of the last applied command
// that changed what status shows (shifted left by localBits), plus the
// number of in-memory phase changes since then (saturating at
// 2^localBits-1: beyond that, the next raft change moves it on). The raft
// part is the same on every server for the same log, so a client moving to
// another coordinator can pass the version it has: that server first waits
// until it has applied that raft index. A history version is the raft index
// of the last generation change.
type statusWatch struct {
	mu        sync.Mutex
	ch        chan struct{}
	statusIdx uint64 // raft index of the last applied change status shows
	histIdx   uint64 // raft index of the last generation change
	local     uint64 // in-memory changes since statusIdx
	applying  map[string]*hivev1.Report
}

func newStatusWatch() *statusWatch {
	return &statusWatch{ch: make(chan struct{}), applying: map[string]*hivev1.Report{}}
}

// statusChanges are the FSM changes a status answer shows: generations
// (desired generation, roles), the registry (nodes, labels), reports, and
// restores.
const statusChanges = fsm.ChangeGeneration | fsm.ChangeRegistry | fsm.ChangeStatus | fsm.ChangeRollout

// onApply records an applied command at raft index index and wakes the
// waiters if status or history may show it. It runs on raft's FSM goroutine
// and never blocks.
func (w *statusWatch) onApply(c fsm.Change, index uint64) {
	if c&statusChanges == 0 {
		return
	}
	w.mu.Lock()
	if index > w.statusIdx {
		w.statusIdx, w.local = index, 0
	}
	if c&fsm.ChangeGeneration != 0 && index > w.histIdx {
		w.histIdx = index
	}
	w.broadcastLocked()
	w.mu.Unlock()
}

func (w *statusWatch) broadcastLocked() {
	close(w.ch)
	w.ch = make(chan struct{})
}

func (w *statusWatch) versionLocked() uint64 {
	return w.statusIdx<<localBits | min(w.local, 1<<localBits-1)
}

// setApplying keeps r, an "applying" report, unless the one kept for its
// node is newer (a higher seq), and wakes the waiters.
func (w *statusWatch) setApplying(r *hivev1.Report) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if old, ok := w.applying[r.GetNode()]; ok && old.GetSeq() >= r.GetSeq() {
		return
	}
	w.applying[r.GetNode()] = r
	w.local++
	w.broadcastLocked()
}

// statusView is what a status answer needs from the watch, taken at once:
// the channel closed at the next change, the version, and the applying
// reports kept here.
type statusView struct {
	ch       <-chan struct{}
	version  uint64
	applying map[string]*hivev1.Report
}

// view returns the current view. Take it before reading the store: the
// version then never claims more than the answer shows.
func (w *statusWatch) view() statusView {
	w.mu.Lock()
	defer w.mu.Unlock()
	v := statusView{ch: w.ch, version: w.versionLocked()}
	if len(w.applying) > 0 {
		v.applying = make(map[string]*hivev1.Report, len(w.applying))
		for k, r := range w.applying {
			v.applying[k] = r
		}
	}
	return v
}

// history returns the channel closed at the next change and the history
// version.
func (w *statusWatch) history() (<-chan struct{}, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch, w.histIdx
}

// forget drops the applying reports that stored (the committed reports,
// as this server has applied them) supersede, and those of nodes no longer
// known (removed). Status reads call it, so the map holds at most one
// report per node that reported to this server, and a final report shows
// here only once this server applied it (until then the node stays
// applying, never pending).
func (w *statusWatch) forget(stored map[string]*hivev1.Report, known map[string]*hivev1.NodeRecord) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for n, a := range w.applying {
		r, reported := stored[n]
		_, registered := known[n]
		if (reported && r.GetSeq() >= a.GetSeq()) || (!reported && !registered) {
			delete(w.applying, n)
		}
	}
}

// overlay returns the report status shows for a node: the applying one
// kept in memory when it is newer than the committed one.
func overlay(committed, applying *hivev1.Report) *hivev1.Report {
	if applying != nil && (committed == nil || applying.GetSeq() > committed.GetSeq()) {
		return applying
	}
	return committed
}

// blockingWait returns how long a blocking read may wait: max_wait, capped
// at MaxStatusWait and at nine tenths of what is left of the call's
// deadline (so that the answer arrives before the caller gives up). Zero
// means "answer at once".
func blockingWait(ctx context.Context, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "max_wait: %v", err)
	}
	wait := d.AsDuration()
	if wait < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "max_wait %v: must not be negative", wait)
	}
	wait = min(wait, MaxStatusWait)
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)*9/10)
	}
	return max(wait, 0), nil
}

// blockUntil is the end of a blocking read's wait, and the timer that
// fires then.
type blockUntil struct {
	deadline time.Time
	timer    *time.Timer
}

func newBlockUntil(wait time.Duration) *blockUntil {
	return &blockUntil{deadline: time.Now().Add(wait), timer: time.NewTimer(wait)}
}

func (b *blockUntil) stop() { b.timer.Stop() }

// catchUp waits until this server has applied raft index index (the raft
// part of a version another server may have given), at most until b's
// deadline or until the server stops; a lagging server then answers with
// what it has. Only the caller's ctx ending is an error.
func (s *Server) catchUp(ctx context.Context, index uint64, b *blockUntil) error {
	if index <= s.fsm.Applied() {
		return nil
	}
	wctx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // the server stopping ends the wait
	defer stop()
	if err := s.fsm.WaitApplied(wctx, index); err != nil && ctx.Err() != nil {
		return toStatus(ctx.Err())
	}
	return nil
}

// waitChange waits until ch closes (true), b's timer fires or the server
// stops (false: answer with what there is), or the caller's ctx ends (its
// error).
func (s *Server) waitChange(ctx context.Context, ch <-chan struct{}, b *blockUntil) (bool, error) {
	select {
	case <-ch:
		return true, nil
	case <-b.timer.C:
		return false, nil
	case <-s.ctx.Done():
		return false, nil
	case <-ctx.Done():
		return false, toStatus(ctx.Err())
	}
}
