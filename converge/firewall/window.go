package firewall

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hivefleet/hive/converge"
)

// WindowState is where a confirm window stands.
type WindowState int

// Window states. A window starts Open and ends exactly once in one of the
// other states.
const (
	WindowOpen WindowState = iota
	// WindowConfirmed: Confirm was called before the deadline; the new
	// rules stay.
	WindowConfirmed
	// WindowRolledBack: the deadline passed (or Rollback was called) and
	// the previous rules were restored.
	WindowRolledBack
	// WindowRollbackFailed: restoring the previous rules failed; Err says
	// why. The new rules may still be in place.
	WindowRollbackFailed
	// WindowSuperseded: a newer change opened its own window, which took
	// over the snapshot of the rules before this one.
	WindowSuperseded
)

func (s WindowState) String() string {
	return [...]string{"open", "confirmed", "rolled back", "rollback failed", "superseded"}[s]
}

// ErrWindowClosed is returned by Confirm and Rollback when the window has
// already ended (confirmed, rolled back or superseded).
var ErrWindowClosed = errors.New("firewall confirm window already closed")

// Window is the confirm window of one applied firewall change. After Apply
// changes the rules, the provider opens a Window holding the rules as they
// were before. The agent must call Confirm once it has reached a
// coordinator (e.g. its next Report was accepted); if the deadline passes
// first, the window restores the previous rules by itself, from its own
// goroutine, and ends WindowRolledBack. The next Plan then reports the
// rollback as a failed result and holds the rolled-back rules back (see
// Config.HoldBack).
//
// All methods are safe for concurrent use. Only Rollback (and the
// deadline's own rollback) runs iptables; Confirm may wait for a rollback
// in progress and then reports ErrWindowClosed.
type Window struct {
	deadline time.Time
	hash     string              // desired rules that were applied
	snapshot map[Family]*Ruleset // rules before the change
	runner   converge.Runner
	log      *slog.Logger
	onEnd    func(*Window)
	ops      *sync.Mutex // the provider's: serialises iptables changes

	mu    sync.Mutex
	state WindowState
	err   error
	ended time.Time
	timer *time.Timer
	done  chan struct{}
}

// Deadline is when the window rolls back unless confirmed.
func (w *Window) Deadline() time.Time { return w.deadline }

// Done is closed when the window ends.
func (w *Window) Done() <-chan struct{} { return w.done }

// State returns the current state, when the window ended (zero while
// open) and the rollback error (for WindowRollbackFailed).
func (w *Window) State() (WindowState, time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.ended, w.err
}

// Confirm keeps the new rules. It returns ErrWindowClosed (wrapped, with
// the state) when the window already ended.
func (w *Window) Confirm() error {
	w.mu.Lock()
	if w.state != WindowOpen {
		st := w.state
		w.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrWindowClosed, st)
	}
	w.end(WindowConfirmed, nil)
	w.mu.Unlock()
	w.log.Info("firewall change confirmed", "rules", short(w.hash))
	w.onEnd(w)
	return nil
}

// Rollback restores the previous rules now. It is what the deadline does
// by itself; the agent may call it early, e.g. when it knows the
// coordinators are unreachable through the new rules.
func (w *Window) Rollback(ctx context.Context) error {
	// Never interleave with an Apply of the provider (lock order: ops,
	// then the window).
	w.ops.Lock()
	defer w.ops.Unlock()
	w.mu.Lock()
	if w.state != WindowOpen {
		st := w.state
		w.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrWindowClosed, st)
	}
	// Hold the lock through the restore so that Confirm cannot interleave.
	err := restoreSnapshot(ctx, w.runner, w.snapshot)
	if err != nil {
		w.end(WindowRollbackFailed, err)
	} else {
		w.end(WindowRolledBack, nil)
	}
	w.mu.Unlock()
	if err != nil {
		w.log.Error("firewall rollback failed: the unconfirmed rules may still be in place", "rules", short(w.hash), "err", err)
	} else {
		w.log.Warn("firewall change not confirmed in time: previous rules restored", "rules", short(w.hash))
	}
	w.onEnd(w)
	return err
}

// ConfirmWith calls probe every interval until it succeeds, then confirms;
// it returns when the window ends or ctx is done. This is the usual way for
// the agent to tie the window to coordinator reachability: probe dials a
// coordinator (or sends the report) and returns nil on success.
func (w *Window) ConfirmWith(ctx context.Context, interval time.Duration, probe func(context.Context) error) WindowState {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithDeadline(ctx, w.deadline)
		err := probe(pctx)
		cancel()
		if err == nil {
			_ = w.Confirm()
			st, _, _ := w.State()
			return st
		}
		select {
		case <-ctx.Done():
			st, _, _ := w.State()
			return st
		case <-w.done:
			st, _, _ := w.State()
			return st
		case <-t.C:
		}
	}
}

// end must be called with mu held.
func (w *Window) end(s WindowState, err error) {
	w.state, w.err, w.ended = s, err, time.Now()
	if w.timer != nil {
		w.timer.Stop()
	}
	close(w.done)
}

// supersede ends an open window without touching the rules; returns the
// snapshot it held, or nil when it was no longer open.
func (w *Window) supersede() map[Family]*Ruleset {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != WindowOpen {
		return nil
	}
	w.end(WindowSuperseded, nil)
	return w.snapshot
}

func (w *Window) expire() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = w.Rollback(ctx)
}

// restoreSnapshot brings each family back to its snapshot.
func restoreSnapshot(ctx context.Context, r converge.Runner, snap map[Family]*Ruleset) error {
	var errs []error
	for _, f := range Families {
		want, ok := snap[f]
		if !ok {
			continue
		}
		filter, err := observe(ctx, r, f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p := Diff(f, filter, want)
		if p.Empty() {
			continue
		}
		if err := restore(ctx, r, f, p.Restore); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
