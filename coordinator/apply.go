package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/coordinator/fsm"
	"github.com/hivefleet/hive/coordinator/raftnode"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The apply outcomes (package raftnode): ErrNotLeader and ErrNoLeader say
// the command was not appended (safe to retry anywhere), ErrUncertain and
// errMaybeApplied that it may have been.
var (
	ErrNotLeader    = raftnode.ErrNotLeader
	ErrNoLeader     = raftnode.ErrNoLeader
	ErrUncertain    = raftnode.ErrUncertain
	errMaybeApplied = raftnode.ErrMaybeApplied
)

// newNode returns the raft-node layer over s.raft (server.go calls it once
// raft runs).
func (s *Server) newNode() *raftnode.Node {
	return raftnode.New(s.raft, s.fsm, forwarder{s}, raftnode.Config{
		LocalID:          s.cfg.Name,
		ApplyTimeout:     s.cfg.ApplyTimeout,
		HealthMaxLag:     s.cfg.HealthMaxLag,
		HealthMaxContact: s.cfg.HealthMaxContact,
		Prepare: func(c *hivev1.Command) {
			// Stamp the time (and a node upsert's proposed ordinal).
			c.Time = timestamppb.Now()
			if u := c.GetNodeUpsert(); u != nil {
				u.Ordinal = s.fsm.Store().NextOrdinal()
			}
		},
		Encode:        s.encodeCommand,
		Retryable:     retryable,
		OnApplied:     func(d time.Duration) { s.metrics.applyLatency.Observe(d.Seconds()) },
		OnForward:     func() { s.metrics.forwarded.Inc() },
		LeaderRefuses: leaderRefuses,
		Campaign:      s.campaign,
		Logger:        s.log,
	})
}

// encodeCommand packs report batches (fsm.EncodePacked) while every server
// of the raft configuration, including one being added, has recorded that
// it applies packed commands; a coordinator that has not would halt on the
// entry. Everything else is encoded plain.
func (s *Server) encodeCommand(c *hivev1.Command) ([]byte, error) {
	if c.GetReportBatch() != nil && s.serversApplyPacked() {
		return fsm.EncodePacked(c)
	}
	return fsm.Encode(c)
}

// serversApplyPacked reports whether every server of the latest raft
// configuration (an atomic read in raft) has a coordinator record saying
// it applies envelope version 2.
func (s *Server) serversApplyPacked() bool {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	st := s.fsm.Store()
	for _, srv := range f.Configuration().Servers {
		if st.Coordinator(string(srv.ID)).GetCommandVersion() < fsm.CommandVersion {
			return false
		}
	}
	return true
}

// applyLocal proposes c on this server, which must be the leader, and
// waits for the commit.
func (s *Server) applyLocal(c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	return s.node.ApplyLocal(c)
}

// apply commits c through the leader (raftnode.Node.Apply): locally when
// this server leads, otherwise forwarded to the leader's ClusterService.
// A write of an API call carries its audit record (audit.go).
func (s *Server) apply(ctx context.Context, c *hivev1.Command) (*hivev1.CommandResult, uint64, error) {
	withAudit(ctx, c)
	return s.node.Apply(ctx, c)
}

// retryable reports whether applying c twice has the same effect as once,
// so a forward whose outcome is unknown (abandoned on a leader change, cut
// off) may be sent again: a push of the same content is a no-op the second
// time (and a push's base generation refuses a second different one),
// reports carry sequence numbers, and the upserts and secret writes set
// values.
func retryable(c *hivev1.Command) bool {
	switch c.GetBody().(type) {
	case *hivev1.Command_Push, *hivev1.Command_ReportBatch, *hivev1.Command_NodeUpsert,
		*hivev1.Command_SecretSet, *hivev1.Command_CoordinatorUpsert,
		// Rollout commands: a second delivery finds the state already
		// changed and is unchanged (rollout.go).
		*hivev1.Command_RolloutPush, *hivev1.Command_RolloutWave, *hivev1.Command_RolloutPause,
		*hivev1.Command_RolloutResume, *hivev1.Command_RolloutRollback, *hivev1.Command_RolloutComplete:
		return true
	}
	return false
}

// forwarder reaches the leader's ClusterService for the raft node.
type forwarder struct{ s *Server }

func (f forwarder) Apply(ctx context.Context, leaderID string, c *hivev1.Command) (*hivev1.ApplyResponse, error) {
	conn, err := f.s.leaderConn(leaderID)
	if err != nil {
		return nil, err
	}
	return hivev1.NewClusterServiceClient(conn).Apply(ctx, &hivev1.ApplyRequest{Command: c})
}

func (f forwarder) ReadIndex(ctx context.Context, leaderID string) (uint64, error) {
	conn, err := f.s.leaderConn(leaderID)
	if err != nil {
		return 0, err
	}
	resp, err := hivev1.NewClusterServiceClient(conn).ReadIndex(ctx, &hivev1.ReadIndexRequest{})
	return resp.GetIndex(), err
}

func (f forwarder) StateIndex(ctx context.Context, leaderID string) (uint64, bool, error) {
	conn, err := f.s.leaderConn(leaderID)
	if err != nil {
		// Mostly: this server's state predates the leader's record.
		return 0, false, err
	}
	resp, err := hivev1.NewClusterServiceClient(conn).RaftStats(ctx, &hivev1.RaftStatsRequest{})
	if err != nil {
		return 0, false, err
	}
	if resp.GetStateIndex() == 0 {
		// A leader of an older version: raft's indexes.
		return resp.GetAppliedIndex(), true, nil
	}
	return resp.GetStateIndex(), false, nil
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

// forwardConn returns the cached connection to the coordinator at addr. A
// connection that failed (the coordinator was down: gRPC waits up to a
// second or more before dialling again) is told to dial again at once, so
// a coordinator that restarted and was just elected is reached without
// that wait.
func (s *Server) forwardConn(addr string) (*grpc.ClientConn, error) {
	s.fwdMu.Lock()
	defer s.fwdMu.Unlock()
	if c, ok := s.fwdConns[addr]; ok {
		if c.GetState() == connectivity.TransientFailure {
			c.ResetConnectBackoff()
		}
		return c, nil
	}
	creds := insecure.NewCredentials()
	if s.clientTLS != nil {
		creds = credentials.NewTLS(s.clientTLS)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: forwardBackoff, MinConnectTimeout: 2 * time.Second}))
	if err != nil {
		return nil, fmt.Errorf("dial leader %s: %w", addr, err)
	}
	s.fwdConns[addr] = c
	return c, nil
}

// forwardBackoff paces the redials of a coordinator that is down: from
// 50 ms up to a second (gRPC's default starts at 1 s and grows to 2 min).
var forwardBackoff = backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}

// cluster implements ClusterService.
type cluster struct {
	hivev1.UnimplementedClusterServiceServer
	s *Server
}

// Apply proposes a forwarded command on the leader. Its failures are
// answered as raftnode.Status maps them (UNAVAILABLE with the outcome's
// ErrorInfo), read back by the follower with raftnode.FromStatus.
func (c *cluster) Apply(ctx context.Context, req *hivev1.ApplyRequest) (*hivev1.ApplyResponse, error) {
	if req.GetCommand() == nil {
		return nil, status.Error(codes.InvalidArgument, "apply without a command")
	}
	res, idx, err := c.s.node.ApplyLocal(req.GetCommand())
	if err != nil {
		return nil, applyStatus(err)
	}
	if _, report := req.GetCommand().GetBody().(*hivev1.Command_ReportBatch); !report {
		// The follower answers once its own state applied the entry:
		// tell it the commit now rather than at raft's commit timeout.
		c.s.node.NotifyCommit(idx)
	}
	return &hivev1.ApplyResponse{Result: res, Index: idx}, nil
}

// applyStatus is the ClusterService answer for an apply or read error.
func applyStatus(err error) error {
	if raftnode.Outcome(err) == hivev1.OutcomeUnknown {
		// The sentinel's own text: followers of earlier versions
		// recognised an uncertain outcome by it.
		return hivev1.OutcomeStatus(hivev1.OutcomeUnknown, ErrUncertain.Error()).Err()
	}
	if st, ok := raftnode.Status(err); ok {
		return st.Err()
	}
	return status.Error(codes.Unavailable, err.Error())
}

// leaderRefuses reports whether the raft address addr refuses or drops
// connections: nothing listens there, or a process that is dying accepted
// the connection in the kernel and it is reset or closed. A raft server
// says nothing on a new connection (it waits for the TLS hello and an RPC):
// a connection that stays open and silent for probeSilence is a live one.
func leaderRefuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(probeSilence))
	_, err = c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// probeSilence is how long leaderRefuses waits on an accepted connection.
const probeSilence = 200 * time.Millisecond

// campaign makes this server a candidate at once: raft's TimeoutNow,
// which a leader sends in a leadership transfer, sent to itself.
func (s *Server) campaign() error {
	id, addr := raft.ServerID(s.cfg.Name), s.transport.LocalAddr()
	req := &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: s.transport.EncodePeer(id, addr),
	}}
	return s.transport.TimeoutNow(id, addr, req, &raft.TimeoutNowResponse{})
}
