package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	backoff := 10 * time.Millisecond
	for {
		idx, err := s.readIndexOnce(ctx)
		if err == nil {
			if err := s.fsm.WaitApplied(ctx, idx); err != nil {
				return fmt.Errorf("wait for index %d: %w", idx, err)
			}
			return nil
		}
		// No leader yet, a leader that has not recorded its address, or one
		// that just lost leadership: retry like a write does.
		if !errors.Is(err, ErrNoLeader) && status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.Unavailable {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%v)", err, ctx.Err())
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

// readIndexOnce asks the current leader for a read index.
func (s *Server) readIndexOnce(ctx context.Context) (uint64, error) {
	var idx uint64
	if s.raft.State() == raft.Leader {
		resp, err := (&cluster{s: s}).ReadIndex(ctx, &hivev1.ReadIndexRequest{})
		if err != nil {
			return 0, err
		}
		idx = resp.GetIndex()
	} else {
		_, id := s.raft.LeaderWithID()
		if id == "" {
			return 0, fmt.Errorf("%w: consistent read", ErrNoLeader)
		}
		conn, err := s.leaderConn(string(id))
		if err != nil {
			return 0, err
		}
		// Bounded per attempt, so a leader whose host vanished does not
		// hold the read until the deadline.
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := hivev1.NewClusterServiceClient(conn).ReadIndex(actx, &hivev1.ReadIndexRequest{})
		acancel()
		if err != nil {
			if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
				return 0, fmt.Errorf("%w: leader %s did not answer", ErrNoLeader, id)
			}
			return 0, fmt.Errorf("read index from leader %s: %w", id, err)
		}
		idx = resp.GetIndex()
	}
	return idx, nil
}
