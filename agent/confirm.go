package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/confirm"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// ConfirmFile is the confirm journal in the data directory: the state
// from before the run of every unconfirmed resource with a confirm window
// (see confirmer), and the hold after a rollback. It may hold the old
// content of a file that rendered secrets: mode 0600, like the cache.
const ConfirmFile = "confirm-window.json"

// Restorer is what the agent needs of an engine for confirm windows
// (*converge.Engine): without it, resources with a confirm window are
// applied without one.
type Restorer interface {
	Restore(ctx context.Context, st *hivev1.NodeState, saved []converge.Saved, targets []*hivev1.Resource) *converge.Report
}

// journal is ConfirmFile's content.
type journal struct {
	// Generation is the newest generation whose run saved an entry.
	Generation uint64    `json:"generation,omitempty"`
	Deadline   time.Time `json:"deadline,omitzero"`
	Entries    []entry   `json:"entries,omitempty"`
	// Targets are the resources the entries notify (protobuf), run again
	// after a rollback.
	Targets [][]byte `json:"targets,omitempty"`
	Hold    *hold    `json:"hold,omitempty"`
}

type entry struct {
	Key      string `json:"key"`
	Resource []byte `json:"resource"` // protobuf
	Before   []byte `json:"before"`   // the provider's snapshot
	// Pending: saved since the open window opened (not covered by it).
	Pending bool `json:"pending,omitempty"`
}

// hold is what a rollback leaves: the keys it restored are not applied
// again while the node's state is the generation that was rolled back.
type hold struct {
	Generation uint64            `json:"generation"`
	At         time.Time         `json:"at"`
	Keys       map[string]string `json:"keys"` // key → the failure message reported
}

// confirmer is the agent's confirm window over every resource with one
// (converge.Confirmer). The engine calls Save during a run, before it
// applies such a resource; after the run, openWindow opens (or renews) the
// window that the agent probes (confirmWindow); if the window expires,
// rollback restores every saved resource through the engine, runs their
// notifications and leaves a hold, and the next run reports it.
//
// Locking: mu guards the journal and the open window, and is never held
// while calling the engine or the window (the engine's run lock and the
// window's lock are taken in that order by a rollback; Save runs inside
// a run and takes only mu).
type confirmer struct {
	path string
	log  *slog.Logger
	eng  Restorer
	now  func() time.Time
	// state returns the node state now (facts and secrets of a rollback).
	state func() *hivev1.NodeState

	mu  sync.Mutex
	j   journal
	win *confirm.Window // open window, or nil
	run *hivev1.NodeState
}

func newConfirmer(path string, eng Restorer, log *slog.Logger, state func() *hivev1.NodeState) (*confirmer, error) {
	c := &confirmer{path: path, log: log, eng: eng, now: time.Now, state: state}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read confirm journal: %w", err)
	}
	if err := json.Unmarshal(b, &c.j); err != nil {
		return nil, fmt.Errorf("confirm journal %s is corrupt (%v): check the resources it names and remove it", path, err)
	}
	return c, nil
}

// persistLocked writes the journal, or removes it when empty.
func (c *confirmer) persistLocked() error {
	if len(c.j.Entries) == 0 && c.j.Hold == nil {
		if err := os.Remove(c.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove confirm journal: %w", err)
		}
		return nil
	}
	b, err := json.Marshal(&c.j)
	if err != nil {
		return err
	}
	return atomicfile.Write(c.path, b, atomicfile.Options{Perm: 0o600, MkdirPerm: 0o700})
}

// Held implements converge.Confirmer: it records the state the run
// converges (for the notify targets of what it saves) and returns the
// keys held back in it.
func (c *confirmer) Held(st *hivev1.NodeState) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.run = st
	h := c.j.Hold
	if h == nil {
		return nil
	}
	if st.GetGeneration() > h.Generation {
		// A new generation: the operator's answer to the rollback.
		c.j.Hold = nil
		if err := c.persistLocked(); err != nil {
			c.log.Error("confirm journal not updated", "err", err)
		}
		c.log.Info("confirm hold cleared by a new generation", "held", h.Generation, "generation", st.GetGeneration())
		return nil
	}
	if st.GetGeneration() < h.Generation {
		return nil
	}
	return h.Keys
}

// Save implements converge.Confirmer: the entries are on disk before the
// engine applies their changes. A key already saved keeps its older
// before-state (a rollback returns to the last confirmed state).
func (c *confirmer) Save(ctx context.Context, saved []converge.Saved) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.j
	prev.Entries = append([]entry(nil), c.j.Entries...)
	have := map[string]int{}
	for i, e := range c.j.Entries {
		have[e.Key] = i
	}
	maxWin := time.Duration(0)
	for _, s := range saved {
		maxWin = max(maxWin, time.Duration(s.Resource.GetConfirmSeconds())*time.Second)
		rb, err := proto.Marshal(s.Resource)
		if err != nil {
			return err
		}
		if i, ok := have[s.Key]; ok {
			// Changed again: the newer definition, the older before-state,
			// and covered by the next window.
			c.j.Entries[i].Resource, c.j.Entries[i].Pending = rb, true
			continue
		}
		c.j.Entries = append(c.j.Entries, entry{Key: s.Key, Resource: rb, Before: s.Before, Pending: true})
		have[s.Key] = len(c.j.Entries) - 1
	}
	c.j.Generation = max(c.j.Generation, c.run.GetGeneration())
	// A crash before the run ends rolls back at this deadline; the window
	// opened after the run counts from its end.
	if d := c.now().Add(maxWin); d.After(c.j.Deadline) {
		c.j.Deadline = d
	}
	c.j.Targets = targetsOf(c.run, c.j.Entries, c.j.Targets)
	if err := c.persistLocked(); err != nil {
		c.j = prev
		return err
	}
	return nil
}

// targetsOf returns the resources of st that entries notify, plus those
// kept from before that st no longer has.
func targetsOf(st *hivev1.NodeState, entries []entry, kept [][]byte) [][]byte {
	want := map[string]bool{}
	for _, e := range entries {
		var r hivev1.Resource
		if proto.Unmarshal(e.Resource, &r) == nil {
			for _, n := range r.GetNotify() {
				want[n] = true
			}
		}
	}
	out := [][]byte{}
	seen := map[string]bool{}
	for _, r := range st.GetResources() {
		if want[r.GetKey()] {
			if b, err := proto.Marshal(r); err == nil {
				out = append(out, b)
				seen[r.GetKey()] = true
			}
		}
	}
	for _, b := range kept {
		var r hivev1.Resource
		if proto.Unmarshal(b, &r) == nil && want[r.GetKey()] && !seen[r.GetKey()] {
			out = append(out, b)
			seen[r.GetKey()] = true
		}
	}
	return out
}

// window returns the window to probe after a run, opening one over the
// entries saved since the last (and superseding an open one, which they
// join), or nil.
func (c *confirmer) window() *confirm.Window {
	c.mu.Lock()
	pending := false
	for _, e := range c.j.Entries {
		pending = pending || e.Pending
	}
	old := c.win
	c.mu.Unlock()
	if !pending {
		return old
	}
	if old != nil {
		// Waits for a rollback in progress, which restores the pending
		// entries too (and clears them).
		_ = old.Supersede()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.win != old && c.win != nil {
		return c.win // opened meanwhile by another caller
	}
	var maxWin time.Duration
	for i, e := range c.j.Entries {
		var r hivev1.Resource
		if proto.Unmarshal(e.Resource, &r) == nil {
			maxWin = max(maxWin, time.Duration(r.GetConfirmSeconds())*time.Second)
		}
		c.j.Entries[i].Pending = false
	}
	if len(c.j.Entries) == 0 {
		c.win = nil
		return nil
	}
	c.j.Deadline = c.now().Add(maxWin)
	if err := c.persistLocked(); err != nil {
		c.log.Error("confirm journal not updated: a restart rolls back at the earlier deadline", "err", err)
	}
	c.win = confirm.New(c.j.Deadline, c.rollback)
	c.log.Info("changes with a confirm window applied; waiting for a coordinator", "keys", c.keysLocked(), "deadline", c.j.Deadline.UTC().Format(time.RFC3339Nano))
	return c.win
}

// recover reopens the window of a journal left by a previous process: it
// rolls back at the deadline unless confirmed (the caller rolls back at
// once when it passed). It returns the window, or nil (none, or c nil).
func (c *confirmer) recover() *confirm.Window {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	if len(c.j.Entries) == 0 || c.win != nil {
		c.mu.Unlock()
		return nil
	}
	for i := range c.j.Entries {
		c.j.Entries[i].Pending = false
	}
	deadline := c.j.Deadline
	c.win = confirm.New(deadline, c.rollback)
	w := c.win
	c.log.Warn("unconfirmed changes found from before a restart: confirm window reopened", "keys", c.keysLocked(), "deadline", deadline.UTC().Format(time.RFC3339Nano))
	c.mu.Unlock()
	return w
}

// confirmed drops the entries w covered (those saved since stay for the
// next window).
func (c *confirmer) confirmed(w *confirm.Window) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.win != w {
		return
	}
	c.win = nil
	keep := c.j.Entries[:0]
	var done []string
	for _, e := range c.j.Entries {
		if e.Pending {
			keep = append(keep, e)
		} else {
			done = append(done, e.Key)
		}
	}
	c.j.Entries = keep
	if len(keep) == 0 {
		c.j.Targets, c.j.Deadline = nil, time.Time{}
	}
	if err := c.persistLocked(); err != nil {
		c.log.Error("confirm journal not updated: a restart would reopen a confirmed window", "err", err)
	}
	c.log.Info("changes confirmed by a coordinator", "keys", done)
}

// rollback is the window's rollback: restore every saved resource, run
// their notifications, hold them back for the generation, and record it.
// It runs on the window's goroutine with the window's lock held.
func (c *confirmer) rollback(ctx context.Context) error {
	c.mu.Lock()
	j := c.j
	var saved []converge.Saved
	for _, e := range j.Entries {
		var r hivev1.Resource
		if err := proto.Unmarshal(e.Resource, &r); err != nil {
			c.mu.Unlock()
			return fmt.Errorf("confirm journal entry %s: %w", e.Key, err)
		}
		saved = append(saved, converge.Saved{Key: e.Key, Resource: &r, Before: e.Before})
	}
	var targets []*hivev1.Resource
	for _, b := range j.Targets {
		var r hivev1.Resource
		if proto.Unmarshal(b, &r) == nil {
			targets = append(targets, &r)
		}
	}
	window := time.Duration(0)
	for _, s := range saved {
		window = max(window, time.Duration(s.Resource.GetConfirmSeconds())*time.Second)
	}
	// Hold first: a run that takes the engine's lock between the restore
	// and the final hold below must not put the change back.
	pre := &hold{Generation: j.Generation, At: c.now(), Keys: map[string]string{}}
	for _, s := range saved {
		pre.Keys[s.Key] = fmt.Sprintf("being rolled back: no coordinator confirmed generation %d within the %v confirm window", j.Generation, window)
	}
	c.j.Hold = pre
	if err := c.persistLocked(); err != nil {
		c.log.Error("confirm journal not updated before the rollback", "err", err)
	}
	c.mu.Unlock()

	rep := c.eng.Restore(ctx, c.state(), saved, targets)
	at := c.now()
	var notes []string
	var failed []error
	restored := map[string]bool{}
	for _, r := range rep.GetResults() {
		switch {
		case r.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED:
			failed = append(failed, fmt.Errorf("%s: %s", r.GetKey(), r.GetMessage()))
			notes = append(notes, r.GetKey()+" failed: "+r.GetMessage())
		case isSaved(saved, r.GetKey()):
			restored[r.GetKey()] = true
		default:
			notes = append(notes, fmt.Sprintf("notified %s: %s", r.GetKey(), strings.ToLower(strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))))
		}
	}
	h := &hold{Generation: j.Generation, At: at, Keys: map[string]string{}}
	for _, s := range saved {
		msg := fmt.Sprintf("rolled back at %s: no coordinator confirmed generation %d within the %v confirm window; the state from before it was restored",
			at.UTC().Format(time.RFC3339), j.Generation, window)
		if !restored[s.Key] {
			msg = fmt.Sprintf("rollback at %s after no coordinator confirmed generation %d within %v failed",
				at.UTC().Format(time.RFC3339), j.Generation, window)
		}
		if len(notes) > 0 {
			msg += " (" + strings.Join(notes, "; ") + ")"
		}
		h.Keys[s.Key] = msg + "; held back until a new generation"
	}

	c.mu.Lock()
	// Entries saved meanwhile (a run in progress when the window expired)
	// stay: the window opened after that run covers them.
	keep := c.j.Entries[:0]
	for _, e := range c.j.Entries {
		if !isSaved(saved, e.Key) {
			keep = append(keep, e)
		}
	}
	c.j.Entries = keep
	if len(keep) == 0 {
		c.j.Targets, c.j.Deadline = nil, time.Time{}
	}
	c.j.Hold = h
	c.win = nil
	if err := c.persistLocked(); err != nil {
		c.log.Error("confirm journal not updated after the rollback", "err", err)
	}
	keys := make([]string, 0, len(saved))
	for _, s := range saved {
		keys = append(keys, s.Key)
	}
	c.mu.Unlock()
	sort.Strings(keys)
	if len(failed) > 0 {
		c.log.Error("changes not confirmed in time: rollback failed", "keys", keys, "err", errors.Join(failed...))
		return errors.Join(failed...)
	}
	c.log.Warn("changes not confirmed in time: previous state restored", "keys", keys, "generation", j.Generation, "notes", notes)
	return nil
}

func isSaved(saved []converge.Saved, key string) bool {
	for _, s := range saved {
		if s.Key == key {
			return true
		}
	}
	return false
}

func (c *confirmer) keysLocked() []string {
	out := make([]string, 0, len(c.j.Entries))
	for _, e := range c.j.Entries {
		out = append(out, e.Key)
	}
	return out
}
