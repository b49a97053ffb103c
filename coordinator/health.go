package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The /healthz bounds' defaults (Config.HealthMaxLag, HealthMaxContact).
const (
	// DefaultHealthMaxLag: a follower more than this many raft entries
	// behind the leader's applied index is not healthy. Replication keeps
	// a live follower within a few entries (16 is 160 ms at 100 entries a
	// second); a restarted one starts from its last snapshot and its log
	// and can be thousands behind. Every push is at least one entry, so a
	// healthy server is at most 16 generations behind.
	DefaultHealthMaxLag = 16
	// DefaultHealthMaxContact: a follower that has not heard from the
	// leader for this long is not healthy (the election timeout, 1 s by
	// default, normally ends such a silence first).
	DefaultHealthMaxContact = 5 * time.Second
)

// healthProbeTimeout bounds the follower's question to the leader.
const healthProbeTimeout = time.Second

// healthReport is one /healthz answer.
type healthReport struct {
	ok                   bool
	reason               string // why not ok
	state                string // raft state
	leader               string // leader id, "" when unknown
	applied, leaderIndex uint64 // this server's FSM index, the leader's applied index
	generation           uint64
}

func (h healthReport) String() string {
	detail := fmt.Sprintf("state=%s leader=%s index=%d leader_index=%d generation=%d", h.state, h.leader, h.applied, h.leaderIndex, h.generation)
	if h.ok {
		return "ok " + detail
	}
	return "not ok: " + h.reason + " (" + detail + ")"
}

// httpHealth decides whether this server should be sent reads: it knows a
// leader, a follower heard from it within HealthMaxContact, and its state
// is at most HealthMaxLag entries behind the leader's. A follower compares
// the raft index of the last command its state applied with the leader's
// (ClusterService.RaftStats state_index, bounded by healthProbeTimeout):
// state indexes, because barriers (one per consistent read), no-ops and
// configuration entries never reach the state, so raft's applied index
// runs ahead of it on every server alike, and raft's applied index counts
// entries handed to the state machine, not yet applied. The leader
// compares its raft applied index with its commit index. A follower that
// cannot reach the leader or does not know its address (its state does not
// yet hold the leader's record: it is behind) is not healthy. It blocks for
// at most healthProbeTimeout; safe from any goroutine.
func (s *Server) httpHealth(ctx context.Context) healthReport {
	_, id := s.raft.LeaderWithID()
	h := healthReport{state: s.raft.State().String(), leader: string(id), generation: s.fsm.Store().CurrentNumber()}
	fail := func(format string, args ...any) healthReport {
		h.reason = fmt.Sprintf(format, args...)
		if h.applied == 0 {
			h.applied = s.fsm.Applied()
		}
		return h
	}
	if id == "" {
		return fail("no raft leader")
	}
	if s.raft.State() == raft.Leader {
		h.leaderIndex, h.applied = s.raft.CommitIndex(), s.raft.AppliedIndex()
	} else {
		last := s.raft.LastContact()
		if last.IsZero() {
			return fail("no contact with leader %s yet", id)
		}
		if since := time.Since(last); since > s.cfg.HealthMaxContact {
			return fail("no contact with leader %s for %v (bound %v)", id, since.Round(time.Millisecond), s.cfg.HealthMaxContact)
		}
		conn, err := s.leaderConn(string(id))
		if err != nil {
			// Mostly: this server's state predates the leader's record.
			return fail("behind: cannot ask leader %s for its index: %v", id, err)
		}
		ctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
		resp, err := hivev1.NewClusterServiceClient(conn).RaftStats(ctx, &hivev1.RaftStatsRequest{})
		cancel()
		if err != nil {
			return fail("cannot ask leader %s for its index: %v", id, err)
		}
		// Read after the leader answered, so the local index is the
		// fresher one.
		h.leaderIndex, h.applied = resp.GetStateIndex(), s.fsm.Applied()
		if h.leaderIndex == 0 {
			// A leader of an older version: raft's indexes.
			h.leaderIndex, h.applied = resp.GetAppliedIndex(), s.raft.AppliedIndex()
		}
	}
	h.generation = s.fsm.Store().CurrentNumber()
	if h.leaderIndex > h.applied && h.leaderIndex-h.applied > s.cfg.HealthMaxLag {
		return fail("behind: applied index %d is %d entries behind the leader's %d (bound %d)", h.applied, h.leaderIndex-h.applied, h.leaderIndex, s.cfg.HealthMaxLag)
	}
	h.ok = true
	return h
}
