package agent

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// fakeReports is a coordinator's report side: Report calls always, and
// ReportStream unless old (a coordinator from before the stream, which
// answers it UNIMPLEMENTED). A report whose node is "refuse" is answered
// INVALID_ARGUMENT; answers on the stream come in reverse order of pairs.
type fakeReports struct {
	hivev1.UnimplementedCoordinatorServiceServer
	old bool

	unary, streamed, streamsOpened, streamsEnded atomic.Int64
}

func (f *fakeReports) Report(_ context.Context, req *hivev1.ReportRequest) (*hivev1.ReportResponse, error) {
	f.unary.Add(1)
	if req.GetReport().GetNode() == "refuse" {
		return nil, status.Error(codes.InvalidArgument, "refused")
	}
	return &hivev1.ReportResponse{Accepted: true}, nil
}

func (f *fakeReports) ReportStream(st hivev1.CoordinatorService_ReportStreamServer) error {
	if f.old {
		return f.UnimplementedCoordinatorServiceServer.ReportStream(st)
	}
	f.streamsOpened.Add(1)
	defer f.streamsEnded.Add(1)
	var held *hivev1.ReportRequest
	answer := func(req *hivev1.ReportRequest) error {
		f.streamed.Add(1)
		resp := &hivev1.ReportResponse{Seq: req.GetSeq(), Accepted: true}
		if req.GetReport().GetNode() == "refuse" {
			resp = &hivev1.ReportResponse{Seq: req.GetSeq(), Code: uint32(codes.InvalidArgument), Message: "refused"}
		}
		return st.Send(resp)
	}
	for {
		req, err := st.Recv()
		if err != nil {
			if held != nil {
				return answer(held)
			}
			return nil
		}
		if held == nil {
			// Hold the first of a pair until the second arrives, but
			// not for long: a lone report is answered at once.
			held = req
			if req.GetReport().GetNode() != "pair" {
				if err := answer(held); err != nil {
					return err
				}
				held = nil
			}
			continue
		}
		if err := answer(req); err != nil {
			return err
		}
		if err := answer(held); err != nil {
			return err
		}
		held = nil
	}
}

func startFake(t *testing.T, f *fakeReports) *client.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hivev1.RegisterCoordinatorServiceServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{ln.Addr().String()}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestReporterStream: reports go over one stream, opened once; answers
// out of order reach the right report; a refused report gets the
// coordinator's code (and the stream goes on).
func TestReporterStream(t *testing.T) {
	f := &fakeReports{}
	p := newReporter(startFake(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Report(ctx, &hivev1.Report{Node: "web-1", Seq: 1}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() { errs[i] = p.Report(ctx, &hivev1.Report{Node: "pair", Seq: uint64(2 + i)}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("pipelined report %d: %v", i, err)
		}
	}
	err := p.Report(ctx, &hivev1.Report{Node: "refuse", Seq: 4})
	if status.Code(err) != codes.InvalidArgument || status.Convert(err).Message() != "refused" {
		t.Errorf("refused report: %v", err)
	}
	if err := p.Report(ctx, &hivev1.Report{Node: "web-1", Seq: 5}); err != nil {
		t.Errorf("report after a refused one: %v", err)
	}
	if s, o, u := f.streamed.Load(), f.streamsOpened.Load(), f.unary.Load(); s != 5 || o != 1 || u != 0 {
		t.Errorf("%d reports streamed over %d streams, %d Report calls; want 5 over 1, none", s, o, u)
	}
}

// TestReporterFallback: against a coordinator without ReportStream
// (UNIMPLEMENTED), the report that found out is sent with a Report call,
// and so is every later one, without trying the stream again.
func TestReporterFallback(t *testing.T) {
	f := &fakeReports{old: true}
	var tried atomic.Int64
	p := newReporter(startFake(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := uint64(1); i <= 3; i++ {
		if err := p.Report(ctx, &hivev1.Report{Node: "web-1", Seq: i}); err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		if p.st != nil {
			tried.Add(1)
		}
	}
	err := p.Report(ctx, &hivev1.Report{Node: "refuse", Seq: 4})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("refused report over Report calls: %v", err)
	}
	if u := f.unary.Load(); u != 4 {
		t.Errorf("%d Report calls, want 4", u)
	}
	if !p.unary || tried.Load() != 0 {
		t.Errorf("reporter unary %v, stream left open %d times", p.unary, tried.Load())
	}
}

// TestReporterIdleClose: a stream with no report waiting for
// ReportStreamIdle is closed, the coordinator's side ends, and the next
// report opens another; a report waiting longer than that (the
// coordinator holding its answer) keeps the stream open.
func TestReporterIdleClose(t *testing.T) {
	old := ReportStreamIdle
	ReportStreamIdle = 50 * time.Millisecond
	t.Cleanup(func() { ReportStreamIdle = old })
	f := &fakeReports{}
	p := newReporter(startFake(t, f))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The first of a pair is held until the second arrives: it waits
	// four idle periods with the stream open.
	first := make(chan error, 1)
	go func() { first <- p.Report(ctx, &hivev1.Report{Node: "pair", Seq: 1}) }()
	time.Sleep(4 * ReportStreamIdle)
	if e := f.streamsEnded.Load(); e != 0 {
		t.Fatalf("stream ended with a report waiting on it (%d ended)", e)
	}
	if err := p.Report(ctx, &hivev1.Report{Node: "pair", Seq: 2}); err != nil {
		t.Fatalf("second of the pair: %v", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first of the pair: %v", err)
	}

	waitFor(t, func() bool { return f.streamsEnded.Load() == 1 }, "the idle stream to end on the coordinator")
	p.mu.Lock()
	st := p.st
	p.mu.Unlock()
	if st != nil {
		t.Error("reporter still holds the closed stream")
	}
	if err := p.Report(ctx, &hivev1.Report{Node: "web-1", Seq: 3}); err != nil {
		t.Fatalf("report after the idle close: %v", err)
	}
	if o, s, u := f.streamsOpened.Load(), f.streamed.Load(), f.unary.Load(); o != 2 || s != 3 || u != 0 {
		t.Errorf("%d streams opened, %d reports streamed, %d Report calls; want 2, 3, 0", o, s, u)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
