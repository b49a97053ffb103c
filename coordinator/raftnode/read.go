package raftnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// readLoop runs read rounds one at a time and lets concurrent readers
// share them (as etcd's linearizable read loop does): a reader joins the
// next round, which starts once the round in flight (if any) ended, so
// every round began after all its readers arrived, and one round serves
// all of them.
type readLoop struct {
	round func() (uint64, error)

	mu      sync.Mutex
	next    *readRound
	running bool
}

type readRound struct {
	done    chan struct{}
	idx     uint64
	err     error
	readers int
}

// wait joins the next round and returns its index.
func (l *readLoop) wait(ctx context.Context) (uint64, error) {
	l.mu.Lock()
	if l.next == nil {
		l.next = &readRound{done: make(chan struct{})}
	}
	r := l.next
	r.readers++
	if !l.running {
		l.running = true
		go l.run()
	}
	l.mu.Unlock()
	select {
	case <-r.done:
		return r.idx, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (l *readLoop) run() {
	for {
		l.mu.Lock()
		r := l.next
		l.next = nil
		if r == nil {
			l.running = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		r.idx, r.err = l.round()
		close(r.done)
	}
}

// leaderRound is one read round on the leader: a barrier if none was
// committed in the current term yet, else a leadership check; it returns
// the state's applied index, which includes every write acknowledged
// before the round began.
func (n *Node) leaderRound() (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	n.rounds.Add(1)
	term := n.raft.CurrentTerm()
	if n.barrierTerm.Load() != term {
		n.barriers.Add(1)
		if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
			return 0, fromRaft("read barrier", err)
		}
		// Committed in term only if the term did not move meanwhile.
		if n.raft.CurrentTerm() != term {
			return 0, fmt.Errorf("%w: the term changed during the read barrier", ErrNotLeader)
		}
		n.barrierTerm.Store(term)
		return n.fsm.Applied(), nil
	}
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fromRaft("verify leadership", err)
	}
	if n.raft.CurrentTerm() != term {
		return 0, fmt.Errorf("%w: the term changed during the leadership check", ErrNotLeader)
	}
	return n.fsm.Applied(), nil
}

// remoteReadTimeout bounds one question to the leader, so a leader whose
// host vanished does not hold the read until the deadline (a leader
// change ends the question at once).
const remoteReadTimeout = 2 * time.Second

// remoteRound asks the leader for a read index (one question shared by
// the readers of the round).
func (n *Node) remoteRound() (uint64, error) {
	changed := n.Changed()
	id := n.Leader()
	if id == "" {
		return 0, fmt.Errorf("%w: consistent read", ErrNoLeader)
	}
	if id == n.cfg.LocalID {
		return 0, fmt.Errorf("%w: this server was just elected", ErrNotLeader)
	}
	ctx, cancel := context.WithTimeout(context.Background(), remoteReadTimeout)
	defer cancel()
	attempt, replaced, stop := n.whileLeader(ctx, changed, id)
	defer stop()
	idx, err := n.fwd.ReadIndex(attempt, id)
	switch {
	case err == nil:
		return idx, nil
	case replaced.Load():
		return 0, fmt.Errorf("%w: leader %s replaced during the read", ErrNotLeader, id)
	case errors.Is(err, ErrNoLeader):
		return 0, err
	case ctx.Err() != nil:
		return 0, fmt.Errorf("%w: leader %s did not answer the read index within %v", ErrNoLeader, id, remoteReadTimeout)
	}
	// A read appends nothing: whatever the leader said, nothing was
	// applied, and the read may be tried again.
	return 0, fmt.Errorf("%w: read index from leader %s: %v", ErrNotLeader, id, err)
}

// ReadIndex is the leader's answer to a consistent read (its own or a
// follower's): an index that includes every write acknowledged before
// the call. It fails with ErrNotLeader on a follower.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	return n.leaderReads.wait(ctx)
}

// ConsistentRead returns once this server's state includes every write
// committed before the call: it gets a read index (on the leader, a
// shared round; on a follower, from the leader, shared too) and waits
// until the state applied it. It retries across elections (woken by
// Changed) until ctx or the apply timeout ends.
func (n *Node) ConsistentRead(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	backoff := 5 * time.Millisecond
	for {
		changed := n.Changed()
		var idx uint64
		var err error
		if n.raft.State() == raft.Leader {
			idx, err = n.leaderReads.wait(ctx)
		} else {
			idx, err = n.remoteReads.wait(ctx)
		}
		if err == nil {
			if err := n.fsm.WaitApplied(ctx, idx); err != nil {
				return fmt.Errorf("wait for index %d: %w", idx, err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("consistent read: %w", ctx.Err())
		}
		if Outcome(err) == hivev1.OutcomeNone {
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%v)", err, ctx.Err())
		case <-changed:
			backoff = 5 * time.Millisecond
		case <-t.C:
			backoff = min(2*backoff, backoffMax)
		}
		t.Stop()
	}
}
