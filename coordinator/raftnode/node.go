// Package raftnode is the coordinator's raft-node layer, below the API
// handlers: it applies commands on the leader or forwards them to it,
// serves consistent reads, tells of leader changes, and judges the
// server's health. It knows nothing of the commands' meaning.
//
//   - Apply commits a command: locally on the leader, otherwise through
//     the leader's ClusterService.Apply (the Forwarder). Its errors carry
//     a typed outcome (Outcome: not applied, or uncertain), mapped to the
//     gRPC answer in one place (Status, FromStatus over
//     hivev1.OutcomeStatus / hivev1.OutcomeOf).
//   - Changed returns a channel closed at the next leadership or leader
//     change (raft's observer): waiting code selects on it instead of
//     polling raft.
//   - ConsistentRead makes the local state include every write committed
//     before the call. On the leader it costs a leadership check
//     (VerifyLeader: one heartbeat round, no log entry) plus one raft
//     barrier per term (after a barrier of its term the leader's state
//     machine holds every committed entry of earlier terms, and every
//     later write is acknowledged only once applied there). Concurrent
//     reads share rounds: readers that arrive while a round is in flight
//     wait for the next one, which serves all of them. A follower asks
//     the leader (ClusterService.ReadIndex, itself a shared round on
//     both sides) and waits until its state has applied that index.
//   - Health is the /healthz verdict: a leader is known, a follower heard
//     from it lately, and the state lags by at most MaxLag entries.
package raftnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hivefleet/hive/coordinator/fsm"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// FSM is what the node needs of the state machine.
type FSM interface {
	// Applied is the raft index of the last command applied.
	Applied() uint64
	// WaitApplied blocks until Applied() >= index or ctx ends.
	WaitApplied(ctx context.Context, index uint64) error
}

// Forwarder reaches the leader's ClusterService.
type Forwarder interface {
	// Apply sends c to the leader with id; errors are gRPC errors or
	// ErrNoLeader-wrapped (the leader's address is not known yet).
	Apply(ctx context.Context, leaderID string, c *hivev1.Command) (*hivev1.ApplyResponse, error)
	// ReadIndex asks the leader with id for a read index.
	ReadIndex(ctx context.Context, leaderID string) (uint64, error)
	// StateIndex asks the leader with id for its state's applied index
	// (RaftStats state_index, or raft's applied index for old leaders:
	// then own is the local raft applied index to compare with).
	StateIndex(ctx context.Context, leaderID string) (leader uint64, raftIndex bool, err error)
}

// Config configures a Node.
type Config struct {
	// LocalID is this server's raft id.
	LocalID string
	// ApplyTimeout bounds one apply or consistent read (including the
	// wait for a leader).
	ApplyTimeout time.Duration
	// HealthMaxLag and HealthMaxContact are Health's bounds.
	HealthMaxLag     uint64
	HealthMaxContact time.Duration
	// Prepare, when set, is called on the leader just before a command
	// is proposed (it stamps the time and proposed values).
	Prepare func(*hivev1.Command)
	// Encode, when set, encodes a command for the log instead of
	// fsm.Encode (the server packs report batches: fsm.EncodePacked).
	Encode func(*hivev1.Command) ([]byte, error)
	// Retryable reports whether applying c twice has the effect of once:
	// such a command is sent again after a forward whose outcome is
	// unknown.
	Retryable func(*hivev1.Command) bool
	// OnApplied observes the local commit latency of each apply, and
	// OnForward each forward (metrics); both optional.
	OnApplied func(time.Duration)
	OnForward func()
	// LeaderRefuses reports whether the leader's raft address refuses
	// connections now (its process is gone), and Campaign makes this
	// server start an election at once; both optional (LeaderGone).
	LeaderRefuses func(addr string) bool
	Campaign      func() error
	Logger        *slog.Logger
}

// Node is the raft-node layer of one coordinator.
type Node struct {
	raft *raft.Raft
	fsm  FSM
	fwd  Forwarder
	cfg  Config
	log  *slog.Logger

	chMu    sync.Mutex
	changed chan struct{}

	// barrierTerm is the term in which this server, as leader, last
	// committed a barrier.
	barrierTerm atomic.Uint64
	leaderReads *readLoop // rounds on this server as leader
	remoteReads *readLoop // rounds asking the leader (follower)

	observations chan raft.Observation
	observer     *raft.Observer
	stop         chan struct{}
	stopped      chan struct{}
	rounds       atomic.Uint64 // leader read rounds run (tests)
	barriers     atomic.Uint64 // barriers those rounds committed (tests)

	// Commit notices (NotifyCommit).
	noticeMu                     sync.Mutex
	noticeRunning, noticePending bool
	noticed                      atomic.Uint64 // commit index sent with the last notice
	notices                      atomic.Uint64

	probing   atomic.Bool   // a LeaderGone probe runs
	campaigns atomic.Uint64 // elections started by LeaderGone
}

// New returns the node over r. Start must be called once before use.
func New(r *raft.Raft, sm FSM, fwd Forwarder, cfg Config) *Node {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Retryable == nil {
		cfg.Retryable = func(*hivev1.Command) bool { return false }
	}
	n := &Node{raft: r, fsm: sm, fwd: fwd, cfg: cfg, log: cfg.Logger,
		changed: make(chan struct{}), stop: make(chan struct{}), stopped: make(chan struct{})}
	n.leaderReads = &readLoop{round: n.leaderRound}
	n.remoteReads = &readLoop{round: n.remoteRound}
	// Leader and state observations only; never blocks raft (a full
	// buffer drops observations, and any one delivered is a change).
	n.observations = make(chan raft.Observation, 64)
	n.observer = raft.NewObserver(n.observations, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(n.observer)
	go n.run()
	return n
}

// Close stops the observer (raft itself is shut down by its owner).
func (n *Node) Close() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
		n.raft.DeregisterObserver(n.observer)
	}
	<-n.stopped
}

func (n *Node) run() {
	defer close(n.stopped)
	for {
		select {
		case <-n.stop:
			return
		case <-n.observations:
			n.notify()
		}
	}
}

// notify closes the current change channel.
func (n *Node) notify() {
	n.chMu.Lock()
	close(n.changed)
	n.changed = make(chan struct{})
	n.chMu.Unlock()
}

// Changed returns a channel closed at the next change of this server's
// raft state or of the leader it knows. Take it before looking at the
// state, then wait on it: no change in between is missed.
func (n *Node) Changed() <-chan struct{} {
	n.chMu.Lock()
	defer n.chMu.Unlock()
	return n.changed
}

// IsLeader reports whether this server is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the id of the leader this server knows, or "".
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// WaitLeader blocks until a leader is known or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		ch := n.Changed()
		if n.Leader() != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// ApplyLocal proposes c on this server, which must be the leader, and
// waits for the commit and the local state machine's apply.
func (n *Node) ApplyLocal(c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	if n.cfg.Prepare != nil {
		n.cfg.Prepare(c)
	}
	encode := fsm.Encode
	if n.cfg.Encode != nil {
		encode = n.cfg.Encode
	}
	b, err := encode(c)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	f := n.raft.Apply(b, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		return nil, 0, fromRaft("raft apply", err)
	}
	if n.cfg.OnApplied != nil {
		n.cfg.OnApplied(time.Since(start))
	}
	res, _ := f.Response().(*hivev1.CommandResult)
	if res == nil {
		res = &hivev1.CommandResult{}
	}
	return res, f.Index(), nil
}

// backoffMax caps the pause between attempts while the leader is known
// but does not answer (it died and raft has not noticed yet); a leader
// change ends the pause at once.
const backoffMax = 100 * time.Millisecond

// Apply commits c through the leader: locally when this server leads,
// otherwise forwarded. It waits for a leader (woken by Changed) and
// retries while the command was certainly not appended, or its outcome
// is unknown but c is retryable, until ctx or the apply timeout ends.
// Errors carry their outcome (Outcome).
func (n *Node) Apply(ctx context.Context, c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	var last error = ErrNoLeader
	maybe := false // an earlier attempt may have been appended
	for {
		changed := n.Changed()
		var err error
		if n.raft.State() == raft.Leader {
			var res *hivev1.CommandResult
			var idx uint64
			res, idx, err = n.ApplyLocal(c)
			if err == nil {
				return res, idx, nil
			}
		} else if id := n.Leader(); id != "" {
			var res *hivev1.CommandResult
			var idx uint64
			res, idx, err = n.forwardWhileLeader(ctx, changed, id, c)
			if err == nil {
				return res, idx, nil
			}
		} else {
			err = fmt.Errorf("%w: waiting for an election", ErrNoLeader)
		}
		switch Outcome(err) {
		case hivev1.OutcomeNotApplied:
		case hivev1.OutcomeUnknown:
			if !n.cfg.Retryable(c) || ctx.Err() != nil {
				return nil, 0, err
			}
			maybe = true
		default:
			return nil, 0, err
		}
		last = err
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if maybe && Outcome(last) != hivev1.OutcomeUnknown {
				return nil, 0, fmt.Errorf("%w: %v (%w)", last, ctx.Err(), ErrMaybeApplied)
			}
			return nil, 0, fmt.Errorf("%w: %v", last, ctx.Err())
		case <-changed:
			backoff = 5 * time.Millisecond
		case <-t.C:
			backoff = min(2*backoff, backoffMax)
		}
		t.Stop()
	}
}

// forwardWhileLeader forwards c to the leader with id, abandoning the call
// as soon as raft names another leader (changed is the notifier channel
// taken before id was read): a leader whose host was cut off silently
// would otherwise hold the call until the deadline. An abandoned or cut
// off call may still have been appended (ErrMaybeApplied).
func (n *Node) forwardWhileLeader(ctx context.Context, changed <-chan struct{}, id string, c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	attempt, replaced, stop := n.whileLeader(ctx, changed, id)
	defer stop()
	if n.cfg.OnForward != nil {
		n.cfg.OnForward()
	}
	resp, err := n.fwd.Apply(attempt, id, c)
	if err == nil {
		return resp.GetResult(), resp.GetIndex(), nil
	}
	if replaced.Load() {
		n.log.Info("leader changed during a forwarded write", "old_leader", id)
		return nil, 0, fmt.Errorf("leader %s replaced while forwarding (%w)", id, ErrMaybeApplied)
	}
	if errors.Is(err, ErrNoLeader) {
		return nil, 0, err
	}
	if ctx.Err() != nil {
		return nil, 0, fmt.Errorf("forward to leader %s: %v (%w)", id, ctx.Err(), ErrMaybeApplied)
	}
	return nil, 0, FromStatus(id, err)
}

// whileLeader returns a context of ctx cancelled when raft names a leader
// other than id (replaced is then true), and its stop function.
func (n *Node) whileLeader(ctx context.Context, changed <-chan struct{}, id string) (context.Context, *atomic.Bool, func()) {
	attempt, cancel := context.WithCancel(ctx)
	replaced := &atomic.Bool{}
	go func() {
		ch := changed
		for {
			select {
			case <-attempt.Done():
				return
			case <-ch:
				ch = n.Changed()
				if n.Leader() != id {
					replaced.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	return attempt, replaced, cancel
}

// NotifyCommit makes the leader tell its followers its commit index now:
// raft sends it with the next entry, or after CommitTimeout (50 ms) when
// no entry follows, so a follower that forwarded a write and answers only
// once its own state applied it would wait that long. It appends one
// barrier (no state change; appended at once, replicated with the current
// commit index, not waited for); calls while one is in flight are served
// by one more barrier after it. It does nothing on a follower or when the
// followers were already sent index (the commit index of the last notice).
func (n *Node) NotifyCommit(index uint64) {
	if n.raft.State() != raft.Leader || index <= n.noticed.Load() {
		return
	}
	n.noticeMu.Lock()
	if n.noticeRunning {
		n.noticePending = true
		n.noticeMu.Unlock()
		return
	}
	n.noticeRunning = true
	n.noticeMu.Unlock()
	go func() {
		for {
			n.noticed.Store(n.raft.CommitIndex())
			n.notices.Add(1)
			// Only the append matters; its commit is not waited for
			// beyond the apply timeout.
			_ = n.raft.Barrier(n.cfg.ApplyTimeout).Error()
			n.noticeMu.Lock()
			if !n.noticePending || n.raft.State() != raft.Leader {
				n.noticePending, n.noticeRunning = false, false
				n.noticeMu.Unlock()
				return
			}
			n.noticePending = false
			n.noticeMu.Unlock()
		}
	}()
}

// Stats are counters for tests: leader read rounds run, barriers those
// rounds committed, commit notices sent.
type Stats struct{ ReadRounds, ReadBarriers, CommitNotices, Campaigns uint64 }

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{ReadRounds: n.rounds.Load(), ReadBarriers: n.barriers.Load(), CommitNotices: n.notices.Load(), Campaigns: n.campaigns.Load()}
}
