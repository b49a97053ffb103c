package firewall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
)

// This file holds the provider's window and hold bookkeeping. Every
// function named …Locked expects p.ops held; each changes the state file
// first and then the memory (window, its state, hold) in one p.mu section.

// holdNow returns the current hold (nil: none).
func (p *Provider) holdNow() *hold {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hold
}

// heldLocked returns the hold when it applies to hash; a hold of other
// rules, or one whose HoldBack passed, is dropped.
func (p *Provider) heldLocked(hash string) *hold {
	p.mu.Lock()
	h := p.hold
	stale := h != nil && (h.hash != hash || (!h.until.IsZero() && p.now().After(h.until)))
	p.mu.Unlock()
	if !stale {
		return h
	}
	p.commitLocked(p.Window(), nil, nil)
	return nil
}

// commitLocked persists (open window w, hold h), then, in one p.mu
// section, runs change (may be nil) and sets the hold. A failed write is
// logged: the change already happened to the tables and memory must say
// so.
func (p *Provider) commitLocked(w *Window, h *hold, change func()) {
	if err := p.persistLocked(w, h); err != nil {
		p.log.Error("firewall window state not persisted: a restart would not know it", "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if change != nil {
		change()
	}
	p.hold = h
}

// endLocked ends w in state st; p.mu held.
func (p *Provider) endLocked(w *Window, st WindowState, err error) {
	w.state, w.err, w.ended = st, err, p.now()
	if w.timer != nil {
		w.timer.Stop()
	}
	close(w.done)
	if p.window == w {
		p.window = nil
	}
}

// rollbackLocked restores w's snapshot and ends it; on success the rules
// of w are held back from then on (same moment, same lock).
func (p *Provider) rollbackLocked(ctx context.Context, w *Window) error {
	if st, _, _ := w.State(); st != WindowOpen {
		return fmt.Errorf("%w: %s", ErrWindowClosed, st)
	}
	if err := restoreSnapshot(ctx, w.runner, w.snapshot); err != nil {
		p.commitLocked(nil, p.holdNow(), func() { p.endLocked(w, WindowRollbackFailed, err) })
		p.log.Error("firewall rollback failed: the unconfirmed rules may still be in place", "rules", short(w.hash), "err", err)
		return err
	}
	h := &hold{hash: w.hash, at: p.now()}
	if p.cfg.HoldBack > 0 {
		h.until = h.at.Add(p.cfg.HoldBack)
	}
	p.commitLocked(nil, h, func() { p.endLocked(w, WindowRolledBack, nil) })
	p.log.Warn("firewall change not confirmed in time: previous rules restored", "rules", short(w.hash), "deadline", w.deadline.UTC().Format(time.RFC3339Nano))
	return nil
}

// savedState is the state file's content: the open window (hash,
// deadline, snapshot; absent when none) and the hold. Files written before
// the hold was kept have the window fields only.
type savedState struct {
	Hash     string              `json:"hash,omitempty"`
	Deadline time.Time           `json:"deadline"`
	Snapshot map[Family]*Ruleset `json:"snapshot,omitempty"`
	Hold     *savedHold          `json:"hold,omitempty"`
}

type savedHold struct {
	Hash  string    `json:"hash"`
	At    time.Time `json:"at"`
	Until time.Time `json:"until"`
}

// persistLocked replaces the state file with (w, h); with neither, the
// file is removed. Both are durable when it returns (atomicfile).
func (p *Provider) persistLocked(w *Window, h *hold) error {
	if p.cfg.StateFile == "" {
		return nil
	}
	if w == nil && h == nil {
		err := os.Remove(p.cfg.StateFile)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("remove firewall window state: %w", err)
		}
		return atomicfile.SyncDir(filepath.Dir(p.cfg.StateFile))
	}
	var s savedState
	if w != nil {
		s.Hash, s.Deadline, s.Snapshot = w.hash, w.deadline, w.snapshot
	}
	if h != nil {
		s.Hold = &savedHold{Hash: h.hash, At: h.at, Until: h.until}
	}
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return atomicfile.Write(p.cfg.StateFile, data, atomicfile.Options{Perm: 0o600, MkdirPerm: 0o700})
}

// recoverLocked reopens, once per provider, a window left open by a
// previous agent process and its hold (see Config.StateFile). The window
// keeps its deadline, but ends no later than ConfirmWindow from now; one
// whose deadline passed while the agent was down rolls back at once.
func (p *Provider) recoverLocked(env *converge.Env) error {
	if p.recovered || p.cfg.StateFile == "" {
		return nil
	}
	p.recovered = true
	data, err := os.ReadFile(p.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read firewall window state: %w", err)
	}
	var s savedState
	if err := json.Unmarshal(data, &s); err != nil || (s.Snapshot == nil && s.Hold == nil) {
		return fmt.Errorf("firewall window state %s is corrupt (%v): remove it after checking the rules", p.cfg.StateFile, err)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.Hold != nil && (s.Hold.Until.IsZero() || now.Before(s.Hold.Until)) {
		p.hold = &hold{hash: s.Hold.Hash, at: s.Hold.At, until: s.Hold.Until}
	}
	if s.Snapshot == nil || p.window != nil {
		return nil
	}
	deadline := s.Deadline
	if limit := now.Add(p.cfg.ConfirmWindow); deadline.IsZero() || limit.Before(deadline) {
		deadline = limit
	}
	w := &Window{p: p, deadline: deadline, hash: s.Hash, snapshot: s.Snapshot, runner: env.Runner, done: make(chan struct{})}
	w.timer = time.AfterFunc(max(0, deadline.Sub(now)), w.expire)
	p.window, p.last = w, w
	p.log.Warn("unconfirmed firewall change found from before a restart: confirm window reopened", "rules", short(s.Hash), "deadline", deadline.UTC().Format(time.RFC3339Nano))
	return nil
}
