package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// reporter sends a connection's reports over one ReportStream, opened
// when the first report is sent and again after the stream ended, instead
// of one Report call each (a unary call costs the coordinator a new
// HTTP/2 stream, headers both ways, the interceptors and trailers). A
// coordinator that answers UNIMPLEMENTED (older than the stream) gets
// Report calls from then on, for the life of the connection.
//
// A stream with no report waiting for ReportStreamIdle is closed (the
// coordinator answers what it read, then ends it): an idle agent costs its
// coordinator no stream and no handler goroutine between runs, and the
// next report opens a stream again (an HTTP/2 stream's HEADERS, about what
// one Report call costs).
//
// Report returns what a Report call would: nil once the coordinator
// answered that the report is committed, else a gRPC status error with the
// code the coordinator gave (the caller's keep / retry / drop rules apply
// unchanged), or the stream's own end for every report still waiting.
type reporter struct {
	conn *client.Conn

	mu      sync.Mutex
	unary   bool
	st      *reportStream
	nextSeq uint64
}

// reportStream is one open stream and the reports waiting for an answer.
type reportStream struct {
	st     hivev1.CoordinatorService_ReportStreamClient
	cancel context.CancelFunc
	// pending counts the reports given this stream and not yet done
	// with (answered, failed or given up); idle closes the stream once
	// it has been 0 for ReportStreamIdle. Both guarded by reporter.mu.
	pending int
	idle    *time.Timer

	sendMu  sync.Mutex // gRPC's Send is not safe for concurrent use
	mu      sync.Mutex
	waiting map[uint64]chan error
	err     error // set once the stream ended
}

// ReportStreamIdle is how long a report stream stays open with no report
// waiting on it. Reports come in pairs per run (applying, then the
// result) and runs come every drift interval (minutes) or on a push: a
// stream kept across that gap would hold a coordinator goroutine per agent
// for nothing.
var ReportStreamIdle = 30 * time.Second

func newReporter(conn *client.Conn) *reporter { return &reporter{conn: conn} }

// Report sends r and waits for its answer (or ctx).
func (p *reporter) Report(ctx context.Context, r *hivev1.Report) error {
	p.mu.Lock()
	unary := p.unary
	p.mu.Unlock()
	if !unary {
		err := p.viaStream(ctx, r)
		if status.Code(err) != codes.Unimplemented {
			return err
		}
		p.mu.Lock()
		p.unary = true
		p.mu.Unlock()
	}
	_, err := p.conn.Report(ctx, &hivev1.ReportRequest{Report: r})
	return err
}

// stream returns the open stream, opening one if there is none.
func (p *reporter) stream() (*reportStream, uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextSeq++
	if rs := p.st; rs != nil {
		rs.pending++
		if rs.idle != nil {
			rs.idle.Stop()
			rs.idle = nil
		}
		return rs, p.nextSeq, nil
	}
	// The stream outlives any one report's context; it ends with the
	// connection (Close cancels its streams) or when it fails.
	sctx, cancel := context.WithCancel(context.Background())
	st, err := p.conn.ReportStream(sctx)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	rs := &reportStream{st: st, cancel: cancel, pending: 1, waiting: map[uint64]chan error{}}
	p.st = rs
	go p.receive(rs)
	return rs, p.nextSeq, nil
}

// receive hands each answer to its waiting report until the stream ends,
// then ends every report still waiting with the stream's error.
func (p *reporter) receive(rs *reportStream) {
	var end error
	for {
		resp, err := rs.st.Recv()
		if err != nil {
			end = err
			break
		}
		if resp.GetSeq() == 0 && resp.GetCode() != 0 {
			// The coordinator is stopping: close our side; it answers
			// what it read and ends the stream. The next report opens
			// another stream (after the watch has moved, elsewhere).
			p.forget(rs)
			rs.sendMu.Lock()
			_ = rs.st.CloseSend()
			rs.sendMu.Unlock()
			continue
		}
		var rerr error
		if resp.GetCode() != 0 || !resp.GetAccepted() {
			rerr = status.Error(codes.Code(resp.GetCode()), resp.GetMessage())
		}
		rs.mu.Lock()
		ch := rs.waiting[resp.GetSeq()]
		delete(rs.waiting, resp.GetSeq())
		rs.mu.Unlock()
		if ch != nil {
			ch <- rerr
		}
	}
	if errors.Is(end, context.Canceled) || end == nil {
		end = status.Error(codes.Unavailable, "report stream closed")
	}
	if status.Code(end) == codes.Unknown {
		// io.EOF: the coordinator ended the stream without an error of
		// its own (it was stopping); the reports left were not answered.
		end = status.Error(codes.Unavailable, "report stream ended: "+end.Error())
	}
	p.forget(rs)
	rs.mu.Lock()
	rs.err = end
	for seq, ch := range rs.waiting {
		ch <- end
		delete(rs.waiting, seq)
	}
	rs.mu.Unlock()
	rs.cancel()
}

// done is called once per report stream() gave rs; the last one to finish
// arms the idle close.
func (p *reporter) done(rs *reportStream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs.pending--
	if rs.pending == 0 && p.st == rs {
		rs.idle = time.AfterFunc(ReportStreamIdle, func() { p.closeIdle(rs) })
	}
}

// closeIdle closes rs if it is still the open stream and no report came
// since the timer was armed. No report can be handed rs afterwards
// (forgotten under the same lock), so none is caught by the close.
func (p *reporter) closeIdle(rs *reportStream) {
	p.mu.Lock()
	if p.st != rs || rs.pending > 0 {
		p.mu.Unlock()
		return
	}
	p.st = nil
	p.mu.Unlock()
	rs.sendMu.Lock()
	_ = rs.st.CloseSend()
	rs.sendMu.Unlock()
}

// forget makes the next report open a new stream.
func (p *reporter) forget(rs *reportStream) {
	p.mu.Lock()
	if p.st == rs {
		p.st = nil
	}
	p.mu.Unlock()
}

func (p *reporter) viaStream(ctx context.Context, r *hivev1.Report) error {
	rs, seq, err := p.stream()
	if err != nil {
		return err
	}
	defer p.done(rs)
	ch := make(chan error, 1)
	rs.mu.Lock()
	if rs.err != nil {
		rs.mu.Unlock()
		return rs.err
	}
	rs.waiting[seq] = ch
	rs.mu.Unlock()
	rs.sendMu.Lock()
	err = rs.st.Send(&hivev1.ReportRequest{Seq: seq, Report: r})
	rs.sendMu.Unlock()
	if err != nil {
		// The stream is broken: its real error comes from Recv, which
		// ends every waiting report with it.
		p.forget(rs)
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		rs.mu.Lock()
		delete(rs.waiting, seq)
		rs.mu.Unlock()
		return status.FromContextError(ctx.Err()).Err()
	}
}
