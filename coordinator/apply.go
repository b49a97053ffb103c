package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/fsm"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Sentinel errors of apply.
var (
	// ErrNotLeader: this server is not the leader (the command was not
	// appended; it is safe to retry elsewhere).
	ErrNotLeader = errors.New("not the raft leader")
	// ErrNoLeader: no leader is known within the apply timeout.
	ErrNoLeader = errors.New("no raft leader known")
	// ErrUncertain: leadership was lost while the command was in flight;
	// it may or may not have been committed.
	ErrUncertain = errors.New("leadership lost while committing: the command may or may not have been applied")
	// errMaybeApplied marks an ErrNotLeader or ErrNoLeader after a forward
	// was abandoned on a leader change: the old leader may have appended
	// the command (only retryable commands are forwarded again).
	errMaybeApplied = errors.New("an earlier attempt may have been applied")
)

// applyLocal proposes c on this server, which must be the leader, stamping
// the time (and a node upsert's proposed ordinal), and waits for the
// commit.
func (s *Server) applyLocal(c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	if s.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	c.Time = timestamppb.Now()
	if u := c.GetNodeUpsert(); u != nil {
		u.Ordinal = s.fsm.Store().NextOrdinal()
	}
	b, err := fsm.Encode(c)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	f := s.raft.Apply(b, s.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, 0, ErrNotLeader
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, 0, ErrUncertain
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, 0, fmt.Errorf("raft apply: %w", err)
		}
		return nil, 0, fmt.Errorf("raft apply: %w", err)
	}
	s.metrics.applyLatency.Observe(time.Since(start).Seconds())
	res, _ := f.Response().(*hivev1.CommandResult)
	if res == nil {
		res = &hivev1.CommandResult{}
	}
	return res, f.Index(), nil
}

// apply commits c through the leader: locally when this server leads,
// otherwise forwarded to the leader's ClusterService. It retries while no
// leader is known or the leader changed before appending, until ctx or the
// apply timeout ends.
func (s *Server) apply(ctx context.Context, c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	backoff := 10 * time.Millisecond
	var lastErr error = ErrNoLeader
	maybe := false // an abandoned forward may have been appended
	for {
		if s.raft.State() == raft.Leader {
			res, idx, err := s.applyLocal(c)
			if !errors.Is(err, ErrNotLeader) {
				return res, idx, err
			}
			lastErr = err
		} else if addr, id := s.raft.LeaderWithID(); addr != "" {
			res, idx, err := s.forwardWhileLeader(ctx, string(id), c)
			if err == nil {
				return res, idx, nil
			}
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrNoLeader) {
				return nil, 0, err
			}
			maybe = maybe || errors.Is(err, errMaybeApplied)
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if errors.Is(lastErr, ErrNotLeader) {
				lastErr = ErrNoLeader
			}
			if maybe && !errors.Is(lastErr, errMaybeApplied) {
				return nil, 0, fmt.Errorf("%w: %v (%w)", lastErr, ctx.Err(), errMaybeApplied)
			}
			return nil, 0, fmt.Errorf("%w: %v", lastErr, ctx.Err())
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

// leaderPoll is how often a forward in flight checks whether raft still
// names the leader it was sent to.
const leaderPoll = 100 * time.Millisecond

// forwardWhileLeader forwards c to the leader with id, abandoning the call
// as soon as raft elects someone else: a leader whose host was cut off
// silently would otherwise hold the call until the client's deadline,
// although a new leader answers a second later. An abandoned call may
// still have been appended by the old leader, so it is retried only for
// commands that are idempotent (see retryable); for the others the caller
// learns that the outcome is uncertain.
func (s *Server) forwardWhileLeader(ctx context.Context, leaderID string, c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	attempt, cancel := context.WithCancel(ctx)
	defer cancel()
	changed := make(chan struct{})
	go func() {
		t := time.NewTicker(leaderPoll)
		defer t.Stop()
		for {
			select {
			case <-attempt.Done():
				return
			case <-t.C:
				if _, id := s.raft.LeaderWithID(); string(id) != leaderID {
					close(changed)
					cancel()
					return
				}
			}
		}
	}()
	res, idx, err := s.forward(attempt, leaderID, c)
	if err == nil {
		return res, idx, nil
	}
	select {
	case <-changed:
		if !retryable(c) {
			return nil, 0, ErrUncertain
		}
		s.log.Info("leader changed during a forwarded write: retrying with the new leader", "old_leader", leaderID)
		return nil, 0, fmt.Errorf("%w: leader %s replaced while forwarding (%w)", ErrNotLeader, leaderID, errMaybeApplied)
	default:
		return nil, 0, err
	}
}

// retryable reports whether applying c twice has the same effect as once,
// so a forward abandoned on a leader change may be sent again: a push of
// the same content is a no-op the second time, reports carry sequence
// numbers, and the upserts and secret writes set values.
func retryable(c *hivev1.Command) bool {
	switch c.GetBody().(type) {
	case *hivev1.Command_Push, *hivev1.Command_ReportBatch, *hivev1.Command_NodeUpsert,
		*hivev1.Command_SecretSet, *hivev1.Command_CoordinatorUpsert:
		return true
	}
	return false
}

// forward sends c to the leader with id.
func (s *Server) forward(ctx context.Context, leaderID string, c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	conn, err := s.leaderConn(leaderID)
	if err != nil {
		return nil, 0, err
	}
	s.metrics.forwarded.Inc()
	resp, err := hivev1.NewClusterServiceClient(conn).Apply(ctx, &hivev1.ApplyRequest{Command: c})
	if err != nil {
		st := status.Convert(err)
		switch st.Code() {
		case codes.FailedPrecondition, codes.Unavailable:
			if st.Code() == codes.Unavailable && st.Message() == ErrUncertain.Error() {
				return nil, 0, ErrUncertain
			}
			return nil, 0, fmt.Errorf("%w: forward to %s: %s", ErrNotLeader, leaderID, st.Message())
		}
		return nil, 0, fmt.Errorf("forward to leader %s: %w", leaderID, err)
	}
	return resp.GetResult(), resp.GetIndex(), nil
}

// leaderConn returns the connection to the coordinator with id, from the
// gRPC address it recorded in the replicated state.
func (s *Server) leaderConn(id string) (*grpc.ClientConn, error) {
	rec := s.fsm.Store().Coordinator(id)
	if rec == nil || rec.GetGrpcAddr() == "" {
		return nil, fmt.Errorf("%w: leader %s has not recorded its address yet", ErrNoLeader, id)
	}
	return s.forwardConn(rec.GetGrpcAddr())
}

func (s *Server) forwardConn(addr string) (*grpc.ClientConn, error) {
	s.fwdMu.Lock()
	defer s.fwdMu.Unlock()
	if c, ok := s.fwdConns[addr]; ok {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if s.clientTLS != nil {
		creds = credentials.NewTLS(s.clientTLS)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("dial leader %s: %w", addr, err)
	}
	s.fwdConns[addr] = c
	return c, nil
}

// cluster implements ClusterService.
type cluster struct {
	hivev1.UnimplementedClusterServiceServer
	s *Server
}

// Apply proposes a forwarded command. It answers FailedPrecondition when
// this server is not the leader (the command was not appended).
func (c *cluster) Apply(ctx context.Context, req *hivev1.ApplyRequest) (*hivev1.ApplyResponse, error) {
	if req.GetCommand() == nil {
		return nil, status.Error(codes.InvalidArgument, "apply without a command")
	}
	res, idx, err := c.s.applyLocal(req.GetCommand())
	switch {
	case errors.Is(err, ErrNotLeader):
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrUncertain):
		return nil, status.Error(codes.Unavailable, err.Error())
	case err != nil:
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &hivev1.ApplyResponse{Result: res, Index: idx}, nil
}
