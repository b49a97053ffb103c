package coordinator

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// ReadIndex answers a follower's consistent read: on the leader, a raft
// barrier makes every entry committed before the call (including those of
// earlier terms, which a new leader commits with its first entry) applied
// here, and the applied index is returned. It answers FailedPrecondition
// on a follower.
func (c *cluster) ReadIndex(ctx context.Context, _ *hivev1.ReadIndexRequest) (*hivev1.ReadIndexResponse, error) {
	s := c.s
	if s.raft.State() != raft.Leader {
		return nil, status.Error(codes.FailedPrecondition, ErrNotLeader.Error())
	}
	if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "barrier: %v", err)
	}
	return &hivev1.ReadIndexResponse{Index: s.fsm.Applied()}, nil
}

// readIndex makes this server's state include every entry committed before
// the call, for a linearizable read: it asks the leader (itself or through
// ClusterService.ReadIndex) for a read index and waits until the local FSM
// has applied it.
func (s *Server) readIndex(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	var idx uint64
	if s.raft.State() == raft.Leader {
		resp, err := (&cluster{s: s}).ReadIndex(ctx, &hivev1.ReadIndexRequest{})
		if err != nil {
			return err
		}
		idx = resp.GetIndex()
	} else {
		_, id := s.raft.LeaderWithID()
		if id == "" {
			return fmt.Errorf("%w: consistent read", ErrNoLeader)
		}
		rec := s.fsm.Store().Coordinator(string(id))
		if rec == nil || rec.GetGrpcAddr() == "" {
			return fmt.Errorf("%w: leader %s has not recorded its address yet", ErrNoLeader, id)
		}
		conn, err := s.forwardConn(rec.GetGrpcAddr())
		if err != nil {
			return err
		}
		resp, err := hivev1.NewClusterServiceClient(conn).ReadIndex(ctx, &hivev1.ReadIndexRequest{})
		if err != nil {
			return fmt.Errorf("read index from leader %s: %w", id, err)
		}
		idx = resp.GetIndex()
	}
	if err := s.fsm.WaitApplied(ctx, idx); err != nil {
		return fmt.Errorf("wait for index %d: %w", idx, err)
	}
	return nil
}
