package raftnode

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// HealthProbeTimeout bounds a follower's question to the leader in Health.
const HealthProbeTimeout = time.Second

// Health is one health verdict.
type Health struct {
	OK     bool
	Reason string // why not OK
	State  string // raft state
	Leader string // leader id, "" when unknown
	// Applied is this server's index, LeaderIndex the leader's (state
	// indexes, see Health).
	Applied, LeaderIndex uint64
}

// Health decides whether this server should be sent reads: it knows a
// leader, a follower heard from it within HealthMaxContact, and its state
// is at most HealthMaxLag entries behind the leader's. A follower compares
// the raft index of the last command its state applied with the leader's
// (Forwarder.StateIndex, bounded by HealthProbeTimeout): state indexes,
// because barriers, no-ops and configuration entries never reach the
// state, so raft's applied index runs ahead of it on every server alike.
// The leader compares its raft applied index with its commit index. A
// follower that cannot reach the leader or does not know its address (its
// state does not hold the leader's record yet: it is behind) is not
// healthy. It blocks for at most HealthProbeTimeout.
func (n *Node) Health(ctx context.Context) Health {
	id := n.Leader()
	h := Health{State: n.raft.State().String(), Leader: id}
	fail := func(format string, args ...any) Health {
		h.Reason = fmt.Sprintf(format, args...)
		if h.Applied == 0 {
			h.Applied = n.fsm.Applied()
		}
		return h
	}
	if id == "" {
		return fail("no raft leader")
	}
	if n.raft.State() == raft.Leader {
		h.LeaderIndex, h.Applied = n.raft.CommitIndex(), n.raft.AppliedIndex()
	} else {
		last := n.raft.LastContact()
		if last.IsZero() {
			return fail("no contact with leader %s yet", id)
		}
		if since := time.Since(last); since > n.cfg.HealthMaxContact {
			return fail("no contact with leader %s for %v (bound %v)", id, since.Round(time.Millisecond), n.cfg.HealthMaxContact)
		}
		ctx, cancel := context.WithTimeout(ctx, HealthProbeTimeout)
		idx, raftIndex, err := n.fwd.StateIndex(ctx, id)
		cancel()
		if err != nil {
			return fail("behind or cut off: cannot ask leader %s for its index: %v", id, err)
		}
		// Read after the leader answered, so the local index is the
		// fresher one.
		h.LeaderIndex, h.Applied = idx, n.fsm.Applied()
		if raftIndex {
			h.Applied = n.raft.AppliedIndex()
		}
	}
	if h.LeaderIndex > h.Applied && h.LeaderIndex-h.Applied > n.cfg.HealthMaxLag {
		return fail("behind: applied index %d is %d entries behind the leader's %d (bound %d)", h.Applied, h.LeaderIndex-h.Applied, h.LeaderIndex, n.cfg.HealthMaxLag)
	}
	h.OK = true
	return h
}
