// Package confirm is the confirm window shared by every kind that takes
// `confirm:`: a change is kept only if the agent reaches a coordinator
// before a deadline; otherwise it is rolled back by itself.
//
// It holds the window's states, the prober loop (Probe) that ties a window
// to coordinator reachability, and Window, a window whose rollback is a
// function: the agent's window over the resources with a confirm window
// (file, sysctl: their before-state is restored through the providers'
// converge.Snapshotter) is one. The firewall provider keeps its own window
// type (its rollback is tied to its rules lock, its hold and its state
// file) but shares the states and the prober loop.
//
// A Window ends exactly once: Confirm, the deadline's rollback (from the
// timer's goroutine) and Rollback are serialised; a rollback in progress
// makes Confirm wait and then fail with ErrClosed. Nothing here blocks but
// the rollback function and the probe.
package confirm

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// State is where a confirm window stands.
type State int

// Window states. A window starts Open and ends exactly once in one of the
// other states.
const (
	Open State = iota
	// Confirmed: confirmed before the deadline; the change stays.
	Confirmed
	// RolledBack: the deadline passed (or Rollback was called) and the
	// state before the change was restored.
	RolledBack
	// RollbackFailed: restoring failed; the change may still be in place.
	RollbackFailed
	// Superseded: a newer change opened its own window, which took over
	// the state to restore.
	Superseded
)

func (s State) String() string {
	return [...]string{"open", "confirmed", "rolled back", "rollback failed", "superseded"}[s]
}

// ErrClosed is returned by Confirm and Rollback when the window has
// already ended.
var ErrClosed = errors.New("confirm window already closed")

// Probe calls probe every interval, each call bounded by deadline, until
// it succeeds, then calls confirm; it returns the window's state (from
// state) when the window ends (done is closed), after confirm, or when
// ctx is done. The probe must show that a coordinator answers now, over
// the network as it is after the change.
func Probe(ctx context.Context, deadline time.Time, done <-chan struct{}, interval time.Duration,
	probe func(context.Context) error, confirm func() error, state func() State) State {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		err := probe(pctx)
		cancel()
		if err == nil {
			_ = confirm()
			return state()
		}
		select {
		case <-ctx.Done():
			return state()
		case <-done:
			return state()
		case <-t.C:
		}
	}
}

// Window is a confirm window whose rollback is a function. It is safe for
// concurrent use.
type Window struct {
	deadline time.Time
	rollback func(context.Context) error
	done     chan struct{}
	probing  atomic.Bool
	ops      sync.Mutex // held by Confirm and Rollback for their whole decision

	mu    sync.Mutex // guards the fields below
	state State
	err   error
	ended time.Time
	timer *time.Timer
}

// New opens a window that calls rollback (once) unless confirmed before
// deadline. rollback runs on the timer's goroutine with a one-minute
// context, or on the caller's of Rollback; it must not call the window's
// methods.
func New(deadline time.Time, rollback func(context.Context) error) *Window {
	w := &Window{deadline: deadline, rollback: rollback, done: make(chan struct{})}
	w.mu.Lock()
	w.timer = time.AfterFunc(time.Until(deadline), w.expire)
	w.mu.Unlock()
	return w
}

// Deadline is when the window rolls back unless confirmed.
func (w *Window) Deadline() time.Time { return w.deadline }

// Done is closed when the window ends.
func (w *Window) Done() <-chan struct{} { return w.done }

// State returns the state, when the window ended (zero while open) and
// the rollback error (RollbackFailed).
func (w *Window) State() (State, time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.ended, w.err
}

func (w *Window) st() State { s, _, _ := w.State(); return s }

// Confirm keeps the change; it waits for a rollback in progress and
// fails with ErrClosed (wrapped, with the state) once the window ended.
func (w *Window) Confirm() error {
	w.ops.Lock()
	defer w.ops.Unlock()
	if s := w.st(); s != Open {
		return fmt.Errorf("%w: %s", ErrClosed, s)
	}
	w.end(Confirmed, nil)
	return nil
}

// Supersede ends an open window without rolling back: a newer window took
// over what it would restore.
func (w *Window) Supersede() error {
	w.ops.Lock()
	defer w.ops.Unlock()
	if s := w.st(); s != Open {
		return fmt.Errorf("%w: %s", ErrClosed, s)
	}
	w.end(Superseded, nil)
	return nil
}

// Rollback restores now what the deadline would.
func (w *Window) Rollback(ctx context.Context) error {
	w.ops.Lock()
	defer w.ops.Unlock()
	if s := w.st(); s != Open {
		return fmt.Errorf("%w: %s", ErrClosed, s)
	}
	if err := w.rollback(ctx); err != nil {
		w.end(RollbackFailed, err)
		return err
	}
	w.end(RolledBack, nil)
	return nil
}

// ConfirmWith ties the window to reachability (see Probe). A window has
// at most one prober: a second ConfirmWith waits for the window to end
// (or ctx) without probing.
func (w *Window) ConfirmWith(ctx context.Context, interval time.Duration, probe func(context.Context) error) State {
	if !w.probing.CompareAndSwap(false, true) {
		select {
		case <-ctx.Done():
		case <-w.done:
		}
		return w.st()
	}
	defer w.probing.Store(false)
	return Probe(ctx, w.deadline, w.done, interval, probe, w.Confirm, w.st)
}

func (w *Window) end(s State, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state, w.err, w.ended = s, err, time.Now()
	if w.timer != nil {
		w.timer.Stop()
	}
	close(w.done)
}

func (w *Window) expire() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = w.Rollback(ctx)
}
