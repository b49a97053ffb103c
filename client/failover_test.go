package client

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// fakeCoord is a CoordinatorService whose calls either answer or, with
// drop set, cut every connection mid-call (as a coordinator killed -9).
type fakeCoord struct {
	hivev1.UnimplementedCoordinatorServiceServer
	name     string
	drop     atomic.Bool
	notApply atomic.Bool // answer writes UNAVAILABLE + NOT_APPLIED
	pushes   atomic.Int32
	reads    atomic.Int32
	lis      *connTracker
}

func (f *fakeCoord) cut() error {
	f.lis.closeAll()
	return status.Error(codes.Internal, "unreachable: the connection was cut")
}

func (f *fakeCoord) ListGenerations(context.Context, *hivev1.ListGenerationsRequest) (*hivev1.ListGenerationsResponse, error) {
	f.reads.Add(1)
	if f.drop.Load() {
		return nil, f.cut()
	}
	return &hivev1.ListGenerationsResponse{Current: 7}, nil
}

func (f *fakeCoord) Push(_ context.Context, r *hivev1.PushRequest) (*hivev1.PushResponse, error) {
	f.pushes.Add(1)
	if f.drop.Load() {
		return nil, f.cut()
	}
	if f.notApply.Load() {
		st, _ := status.New(codes.Unavailable, "no raft leader known").WithDetails(&errdetails.ErrorInfo{Domain: hivev1.ErrorDomain, Reason: hivev1.ReasonNotApplied})
		return nil, st.Err()
	}
	return &hivev1.PushResponse{Generation: r.GetBaseGeneration() + 1}, nil
}

// connTracker is a listener that can close every connection it accepted.
type connTracker struct {
	net.Listener
	conns chan net.Conn
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.conns <- c:
		default:
		}
	}
	return c, err
}

func (l *connTracker) closeAll() {
	for {
		select {
		case c := <-l.conns:
			c.Close()
		default:
			return
		}
	}
}

func serveFake(t *testing.T, name string) (*fakeCoord, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeCoord{name: name, lis: &connTracker{Listener: lis, conns: make(chan net.Conn, 64)}}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	hivev1.RegisterCoordinatorServiceServer(s, f)
	go s.Serve(f.lis)
	t.Cleanup(s.Stop)
	return f, lis.Addr().String()
}

// TestFailoverRules (issue 12): with Failover, a call whose coordinator
// drops the connection mid-call goes to the next address when RetryOf
// allows it (reads, pushes without force), and is not sent again when it
// may have been applied (a forced push): that one fails with an
// UncertainError naming the address, yet later calls use the next
// coordinator. A forced push answered NOT_APPLIED moves on.
func TestFailoverRules(t *testing.T) {
	a, addrA := serveFake(t, "a")
	b, addrB := serveFake(t, "b")
	var moves []string
	conn, err := Dial(ctx(t), Config{Addrs: []string{addrA, addrB}, Insecure: true, Failover: true,
		OnFailover: func(from, to string, err error) { moves = append(moves, from+">"+to) }})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// A read: a drops it, b answers.
	a.drop.Store(true)
	if r, err := conn.ListGenerations(ctx(t), &hivev1.ListGenerationsRequest{}); err != nil || r.GetCurrent() != 7 {
		t.Fatalf("read through a dying coordinator = %v, %v", r, err)
	}
	if a.reads.Load() != 1 || b.reads.Load() != 1 {
		t.Fatalf("reads: a %d, b %d; want 1, 1", a.reads.Load(), b.reads.Load())
	}
	if n, cur, _ := conn.Switches(); n != 1 || cur != addrB {
		t.Fatalf("switches = %d, now %s; want 1, %s", n, cur, addrB)
	}

	// A push without force: b drops it, a (back) answers.
	a.drop.Store(false)
	b.drop.Store(true)
	if r, err := conn.Push(ctx(t), &hivev1.PushRequest{BaseGeneration: 7}); err != nil || r.GetGeneration() != 8 {
		t.Fatalf("push through a dying coordinator = %v, %v", r, err)
	}
	if a.pushes.Load() != 1 || b.pushes.Load() != 1 {
		t.Fatalf("pushes: a %d, b %d; want 1, 1", a.pushes.Load(), b.pushes.Load())
	}

	// A forced push: a drops it; not sent again.
	a.drop.Store(true)
	b.drop.Store(false)
	_, err = conn.Push(ctx(t), &hivev1.PushRequest{BaseGeneration: 7, Force: true})
	var ue *UncertainError
	if !errors.As(err, &ue) || ue.Addr != addrA || status.Code(err) != codes.Unavailable {
		t.Fatalf("forced push through a dying coordinator = %v; want an UncertainError from %s", err, addrA)
	}
	if a.pushes.Load() != 2 || b.pushes.Load() != 1 {
		t.Fatalf("forced push sent again: a %d, b %d pushes", a.pushes.Load(), b.pushes.Load())
	}
	t.Logf("forced push: %v", err)
	// ... but the next call goes to b.
	if _, err := conn.ListGenerations(ctx(t), &hivev1.ListGenerationsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, cur, _ := conn.Switches(); cur != addrB {
		t.Fatalf("after the uncertain push the connection is on %s, want %s", cur, addrB)
	}

	// A forced push answered NOT_APPLIED moves on to a.
	a.drop.Store(false)
	b.notApply.Store(true)
	if r, err := conn.Push(ctx(t), &hivev1.PushRequest{BaseGeneration: 7, Force: true}); err != nil || r.GetGeneration() != 8 {
		t.Fatalf("forced push answered not applied = %v, %v", r, err)
	}
	if a.pushes.Load() != 3 || b.pushes.Load() != 2 {
		t.Fatalf("pushes: a %d, b %d; want 3, 2", a.pushes.Load(), b.pushes.Load())
	}

	// Every coordinator failing: a clear error naming them, not a raw EOF.
	a.drop.Store(true)
	b.drop.Store(true)
	_, err = conn.ListGenerations(ctx(t), &hivev1.ListGenerationsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("read with every coordinator dropping = %v", err)
	}
	t.Logf("read with every coordinator dropping: %v (moves %v)", err, moves)
}

func TestRetryOf(t *testing.T) {
	for _, tt := range []struct {
		method string
		req    any
		want   Retry
	}{
		{hivev1.CoordinatorService_GetStatus_FullMethodName, &hivev1.GetStatusRequest{}, RetryAlways},
		{hivev1.CoordinatorService_Push_FullMethodName, &hivev1.PushRequest{BaseGeneration: 3}, RetryAlways},
		{hivev1.CoordinatorService_Push_FullMethodName, &hivev1.PushRequest{BaseGeneration: 3, Force: true}, RetryIfNotApplied},
		{hivev1.CoordinatorService_Rollback_FullMethodName, &hivev1.RollbackRequest{Target: 1, BaseGeneration: 3}, RetryAlways},
		{hivev1.CoordinatorService_Rollback_FullMethodName, &hivev1.RollbackRequest{Target: 1}, RetryIfNotApplied},
		{hivev1.CoordinatorService_SetSecret_FullMethodName, &hivev1.SetSecretRequest{}, RetryIfNotApplied},
		{hivev1.CoordinatorService_CreateBootstrapToken_FullMethodName, &hivev1.CreateBootstrapTokenRequest{}, RetryIfNotApplied},
		{"/hive.v1.CoordinatorService/Unknown", nil, RetryIfNotApplied},
	} {
		if got := RetryOf(tt.method, tt.req); got != tt.want {
			t.Errorf("RetryOf(%s, %v) = %v, want %v", tt.method, tt.req, got, tt.want)
		}
	}
}
