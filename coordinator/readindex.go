package coordinator

import (
	"context"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// ReadIndex answers a follower's consistent read on the leader
// (raftnode.Node.ReadIndex: a leadership check, plus a barrier once per
// term, shared by concurrent readers): the returned index includes every
// write acknowledged before the call. A follower answers UNAVAILABLE with
// reason NOT_APPLIED (leaders of earlier versions: FAILED_PRECONDITION).
func (c *cluster) ReadIndex(ctx context.Context, _ *hivev1.ReadIndexRequest) (*hivev1.ReadIndexResponse, error) {
	idx, err := c.s.node.ReadIndex(ctx)
	if err != nil {
		return nil, applyStatus(err)
	}
	// The follower waits until its state applied idx: tell it the commit
	// now rather than at raft's commit timeout.
	c.s.node.NotifyCommit(idx)
	return &hivev1.ReadIndexResponse{Index: idx}, nil
}

// readIndex makes this server's state include every entry committed before
// the call, for a linearizable read (raftnode.Node.ConsistentRead).
func (s *Server) readIndex(ctx context.Context) error {
	return s.node.ConsistentRead(ctx)
}
