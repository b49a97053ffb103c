package firewall

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/confirm"
)

// WindowState is where a confirm window stands: the states every confirm
// window shares (package confirm).
type WindowState = confirm.State

// Window states. A window starts Open and ends exactly once in one of the
// other states (see package confirm).
const (
	WindowOpen           = confirm.Open
	WindowConfirmed      = confirm.Confirmed
	WindowRolledBack     = confirm.RolledBack
	WindowRollbackFailed = confirm.RollbackFailed
	WindowSuperseded     = confirm.Superseded
)

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
// A window's state belongs to its provider: every transition (open,
// confirm, rollback, supersede) happens under the provider's ops lock,
// together with the provider's open window, its hold and the state file,
// so no caller ever sees one changed without the others.
//
// All methods are safe for concurrent use. Only Rollback (and the
// deadline's own rollback) runs iptables; Confirm waits for a table change
// in progress (an apply or a rollback) and then decides.
type Window struct {
	p        *Provider
	deadline time.Time
	hash     string              // desired rules that were applied
	snapshot map[Family]*Ruleset // rules before the change
	runner   converge.Runner
	done     chan struct{}
	probing  atomic.Bool // a ConfirmWith is probing

	// Guarded by p.mu; changed only with p.ops held too.
	state WindowState
	err   error
	ended time.Time
	timer *time.Timer
}

// Deadline is when the window rolls back unless confirmed.
func (w *Window) Deadline() time.Time { return w.deadline }

// Done is closed when the window ends.
func (w *Window) Done() <-chan struct{} { return w.done }

// State returns the current state, when the window ended (zero while
// open) and the rollback error (for WindowRollbackFailed).
func (w *Window) State() (WindowState, time.Time, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.state, w.ended, w.err
}

// Confirm keeps the new rules. It returns ErrWindowClosed (wrapped, with
// the state) when the window already ended. It waits for a table change
// in progress, so it never confirms a window that a rollback is undoing.
func (w *Window) Confirm() error {
	p := w.p
	p.ops.Lock()
	defer p.ops.Unlock()
	if st, _, _ := w.State(); st != WindowOpen {
		return fmt.Errorf("%w: %s", ErrWindowClosed, st)
	}
	p.commitLocked(nil, p.holdNow(), func() { p.endLocked(w, WindowConfirmed, nil) })
	p.log.Info("firewall change confirmed", "rules", short(w.hash))
	return nil
}

// Rollback restores the previous rules now. It is what the deadline does
// by itself; the agent may call it early, e.g. when it knows the
// coordinators are unreachable through the new rules.
func (w *Window) Rollback(ctx context.Context) error {
	w.p.ops.Lock()
	defer w.p.ops.Unlock()
	return w.p.rollbackLocked(ctx, w)
}

// ConfirmWith calls probe every interval until it succeeds, then confirms;
// it returns when the window ends or ctx is done. This is the usual way for
// the agent to tie the window to coordinator reachability: probe dials a
// coordinator (or sends the report) and returns nil on success.
//
// A window has at most one prober: a ConfirmWith called while another
// one runs on the same window does not probe; it waits for the window to
// end (or ctx) like the first.
func (w *Window) ConfirmWith(ctx context.Context, interval time.Duration, probe func(context.Context) error) WindowState {
	if !w.probing.CompareAndSwap(false, true) {
		select {
		case <-ctx.Done():
		case <-w.done:
		}
		st, _, _ := w.State()
		return st
	}
	defer w.probing.Store(false)
	return confirm.Probe(ctx, w.deadline, w.done, interval, probe, w.Confirm, func() WindowState {
		st, _, _ := w.State()
		return st
	})
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
