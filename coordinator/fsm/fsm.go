// Package fsm is the raft finite state machine of the coordinators: it
// decodes each log entry as a hivev1.Command, dispatches it through a table
// to the state store (package coordinator/state), and snapshots and
// restores that store.
//
// Contract (see hashicorp/raft's FSM):
//   - Apply is called from raft's single FSM goroutine, in log order, and is
//     deterministic: the time and author come from the command (stamped by
//     the leader), never from the clock.
//   - A command whose envelope version or body this server does not know
//     halts the server (panic): replicas that skip different entries would
//     diverge silently, which is worse. Commands marked ignorable are
//     skipped instead, with a warning.
//   - A business rejection (stale base generation, unknown secret, used
//     token) is not an error: it is the *hivev1.CommandResult Apply returns,
//     decided identically on every replica.
//   - Snapshot is quick (copies pointers); the returned FSMSnapshot encodes
//     on raft's snapshot goroutine concurrently with further Applies.
//   - Restore builds a new store and swaps it in; readers holding the old
//     store keep a consistent (older) view.
//
// After every applied command, OnApply (if set) is called on the FSM
// goroutine with what changed; it must not block.
//
// Applied and WaitApplied give read-your-writes on a follower: a server
// that forwarded a write to the leader and got back its raft index waits
// (any goroutine, bounded by its ctx) until its own FSM has applied that
// index before reading its store. The applied index advances after the
// command's effect is in the store, so a reader that saw it sees the write.
package fsm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// CommandVersion is the highest envelope version this server applies:
// 1, a command; 2, a command packed (packed.go). It writes version 1, and
// version 2 for what it packs.
const CommandVersion = packedVersion

// Change tells OnApply listeners what an applied command changed.
type Change uint32

// Change bits.
const (
	ChangeGeneration Change = 1 << iota
	ChangeRegistry
	ChangeStatus
	ChangeSecrets
	ChangeCoordinators
	ChangeTokens
	// ChangeRevocations: the certificate deny list changed.
	ChangeRevocations
	// ChangeRollout: the rollout changed, and with it nodes' target
	// generations (rollout.go).
	ChangeRollout
	// ChangeAll is signalled after a Restore.
	ChangeAll Change = 1<<iota - 1
)

// FSM implements raft.FSM over a state.Store.
type FSM struct {
	store    atomic.Pointer[state.Store]
	log      *slog.Logger
	restores atomic.Uint64

	// OnApply is called after each command (and after Restore with
	// ChangeAll) on the FSM goroutine. It must not block. Set it before
	// raft starts.
	OnApply func(Change)

	// OnCommand, if set, is called on the FSM goroutine before each
	// command applies, with the store as it is before; the function it
	// returns (may be nil) is called after, with the result. Neither may
	// block. Events are derived here (coordinator/events.go). Set it
	// before raft starts.
	OnCommand func(s *state.Store, c *hivev1.Command) func(*hivev1.CommandResult)

	appliedMu sync.Mutex
	applied   uint64
	appliedCh chan struct{} // closed when applied advances; nil: no waiter
}

// Applied returns the raft index of the last command whose effect is in
// the store (0 before any).
func (f *FSM) Applied() uint64 {
	f.appliedMu.Lock()
	defer f.appliedMu.Unlock()
	return f.applied
}

// WaitApplied blocks until Applied() >= index or ctx ends (ctx.Err()).
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.appliedMu.Lock()
		if f.applied >= index {
			f.appliedMu.Unlock()
			return nil
		}
		if f.appliedCh == nil {
			f.appliedCh = make(chan struct{})
		}
		ch := f.appliedCh
		f.appliedMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setApplied records index as applied and wakes the waiters. It never
// blocks.
func (f *FSM) setApplied(index uint64) {
	f.appliedMu.Lock()
	if index > f.applied {
		f.applied = index
	}
	ch := f.appliedCh
	f.appliedCh = nil
	f.appliedMu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// New returns an FSM over an empty store.
func New(log *slog.Logger) *FSM {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FSM{log: log.With("component", "fsm")}
	f.store.Store(state.New())
	return f
}

// Store returns the current store. After a Restore it is a different
// store; callers that need a consistent view read everything they need
// from one returned store.
func (f *FSM) Store() *state.Store { return f.store.Load() }

// Restores returns how many snapshots were restored since New.
func (f *FSM) Restores() uint64 { return f.restores.Load() }

// Encode marshals a command for the raft log, setting the envelope
// version.
func Encode(c *hivev1.Command) ([]byte, error) {
	c.Version, c.Packed = plainVersion, nil
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return b, nil
}

// UnknownCommandError is the panic value for a command this server cannot
// apply.
type UnknownCommandError struct {
	Index  uint64
	Reason string
}

func (e *UnknownCommandError) Error() string {
	return fmt.Sprintf("raft log entry %d: %s: this server cannot apply it; upgrade it before it rejoins", e.Index, e.Reason)
}

type handler func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change)

// handlers is the dispatch table, one entry per body of hivev1.Command.
var handlers = map[string]handler{
	"push": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.Push(t, c.GetPush())
		return r, changedIf(r, ChangeGeneration)
	},
	"rollback": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.Rollback(t, c.GetRollback())
		return r, changedIf(r, ChangeGeneration)
	},
	"node_upsert": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.UpsertNode(t, c.GetNodeUpsert())
		return r, changedIf(r, ChangeRegistry)
	},
	"report_batch": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		return s.ApplyReportsAt(t, c.GetReportBatch()), ChangeStatus
	},
	"secret_set": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.SetSecret(t, c.GetSecretSet())
		return r, changedIf(r, ChangeSecrets)
	},
	"secret_delete": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.DeleteSecret(c.GetSecretDelete())
		return r, changedIf(r, ChangeSecrets)
	},
	"peer_remove": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.RemovePeer(c.GetPeerRemove())
		return r, changedIf(r, ChangeCoordinators)
	},
	"coordinator_upsert": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.UpsertCoordinator(t, c.GetCoordinatorUpsert())
		return r, changedIf(r, ChangeCoordinators)
	},
	"node_label": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.LabelNode(t, c.GetNodeLabel())
		return r, changedIf(r, ChangeRegistry)
	},
	"bootstrap_token_create": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.CreateToken(c.GetBootstrapTokenCreate())
		return r, changedIf(r, ChangeTokens)
	},
	"bootstrap_token_redeem": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.RedeemToken(t, c.GetBootstrapTokenRedeem())
		return r, changedIf(r, ChangeTokens)
	},
	"node_revoke": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.Revoke(t, c.GetNodeRevoke())
		return r, changedIf(r, ChangeRevocations)
	},
	"node_remove": func(s *state.Store, t time.Time, c *hivev1.Command) (*hivev1.CommandResult, Change) {
		r := s.RemoveNode(t, c.GetNodeRemove())
		return r, changedIf(r, ChangeRevocations|ChangeRegistry|ChangeStatus|ChangeSecrets)
	},
}

func changedIf(r *hivev1.CommandResult, c Change) Change {
	if r.GetError() != "" || r.GetUnchanged() {
		return 0
	}
	return c
}

// bodyName returns the oneof field name of the command body, or "".
func bodyName(c *hivev1.Command) string {
	od := c.ProtoReflect().Descriptor().Oneofs().ByName("body")
	fd := c.ProtoReflect().WhichOneof(od)
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// Decode parses a log entry into a command and checks that this server can
// apply it. It returns (nil, nil) for an ignorable command it cannot
// apply, and an *UnknownCommandError for any other command it cannot.
func Decode(index uint64, data []byte) (*hivev1.Command, error) {
	var c hivev1.Command
	// A report batch's results stay encoded (state/results.go).
	if err := state.UnmarshalCommand(data, &c); err != nil {
		return nil, &UnknownCommandError{Index: index, Reason: fmt.Sprintf("undecodable command: %v", err)}
	}
	if c.GetVersion() == packedVersion {
		inner, err := unpack(&c)
		if err == nil {
			c.Reset()
			err = state.UnmarshalCommand(inner, &c)
		}
		if err == nil && c.GetVersion() != plainVersion {
			err = fmt.Errorf("packed command of envelope version %d inside", c.GetVersion())
		}
		if err != nil {
			return nil, &UnknownCommandError{Index: index, Reason: fmt.Sprintf("undecodable packed command: %v", err)}
		}
	}
	reason := ""
	name := bodyName(&c)
	switch {
	case c.GetVersion() == 0 || c.GetVersion() > CommandVersion:
		reason = fmt.Sprintf("command envelope version %d (this server applies 1..%d)", c.GetVersion(), CommandVersion)
	case name == "" && c.GetAudit() != nil:
		// An audit-only entry (audit.go).
	case name == "":
		reason = "command without a known body"
	case handlers[name] == nil:
		reason = fmt.Sprintf("command %q has no handler", name)
	}
	if reason != "" {
		if c.GetIgnorable() {
			return nil, nil
		}
		return nil, &UnknownCommandError{Index: index, Reason: reason}
	}
	return &c, nil
}

// Apply applies one raft log entry. It returns a *hivev1.CommandResult for
// commands, and nil for non-command entries.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := Decode(l.Index, l.Data)
	if err != nil {
		f.log.Error("cannot apply raft log entry; halting", "index", l.Index, "err", err)
		panic(err)
	}
	s := f.Store()
	s.SetIndex(l.Index)
	if c == nil {
		f.log.Warn("skipping ignorable command this server does not know", "index", l.Index)
		f.setApplied(l.Index)
		return &hivev1.CommandResult{Reason: "ignored", Error: "command not known by this server"}
	}
	var after func(*hivev1.CommandResult)
	if f.OnCommand != nil {
		after = f.OnCommand(s, c)
	}
	res, ch := applyCommand(s, c)
	f.setApplied(l.Index)
	if f.OnApply != nil {
		f.OnApply(ch)
	}
	if after != nil {
		after(res)
	}
	return res
}

// Snapshot captures the store for raft.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, index := f.Store().Capture()
	return &fsmSnapshot{snap: snap, index: index}, nil
}

// Restore replaces the store with the snapshot read from rc.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := state.ReadSnapshot(rc)
	if err != nil {
		return fmt.Errorf("restore fsm: %w", err)
	}
	// Counted before the store is swapped in: whoever sees the restored
	// state also sees the count.
	f.restores.Add(1)
	f.store.Store(s)
	f.setApplied(s.Index())
	f.log.Info("restored state from snapshot", "index", s.Index(), "generation", s.CurrentNumber())
	if f.OnApply != nil {
		f.OnApply(ChangeAll)
	}
	return nil
}

type fsmSnapshot struct {
	snap  *hivev1.StateSnapshot
	index uint64
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := state.WriteSnapshot(sink, s.snap, s.index); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
