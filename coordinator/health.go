package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/hivefleet/hive/coordinator/raftnode"
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

// healthReport is one /healthz answer.
type healthReport struct {
	raftnode.Health
	generation uint64
}

func (h healthReport) String() string {
	detail := fmt.Sprintf("state=%s leader=%s index=%d leader_index=%d generation=%d", h.State, h.Leader, h.Applied, h.LeaderIndex, h.generation)
	if h.OK {
		return "ok " + detail
	}
	return "not ok: " + h.Reason + " (" + detail + ")"
}

// httpHealth decides whether this server should be sent reads
// (raftnode.Node.Health: a leader is known, a follower heard from it
// within HealthMaxContact, its state is at most HealthMaxLag entries
// behind the leader's). It blocks for at most raftnode.HealthProbeTimeout;
// safe from any goroutine.
func (s *Server) httpHealth(ctx context.Context) healthReport {
	h := s.node.Health(ctx)
	return healthReport{Health: h, generation: s.fsm.Store().CurrentNumber()}
}
