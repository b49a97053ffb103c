package coordinator

import (
	"context"
	"errors"
	"io"
	"sync"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ReportStreamInflight is how many reports of one ReportStream the
// coordinator reads ahead of their answers. The next message is not read
// until one of them is answered, so a stream holds at most this many
// reports (plus what HTTP/2 flow control lets the agent buffer in the
// connection's window), however fast the agent sends.
const ReportStreamInflight = 8

// ReportStream takes an agent's reports over one stream: the stream
// interceptors authenticated the caller once and check every message's
// size (methodMaxBytes); each report then passes acceptReport, exactly as
// a Report call does, and is answered with its seq once committed. A
// refused report is answered with its code and the stream goes on; the
// stream ends, after every report read before is answered, when the
// caller may no longer report on it (another node than the certificate's,
// the certificate revoked or expired meanwhile) or a message could not be
// read (over its size: it was not decoded, so there is no seq to answer).
//
// No goroutine waits per report: the batcher calls back when a batch is
// committed, and the answers are written by a goroutine that runs only
// while some are waiting (ackWriter). An idle stream costs its handler's
// goroutine alone.
func (a *api) ReportStream(stream hivev1.CoordinatorService_ReportStreamServer) error {
	s := a.s
	ctx := stream.Context()
	w := &ackWriter{stream: stream, slots: make(chan struct{}, ReportStreamInflight)}
	// A stream's handler waits in Recv, where the server stopping cannot
	// reach it: then it tells the agent instead (a response with seq 0
	// and UNAVAILABLE), which closes its side and reports elsewhere; the
	// reports read before are answered first.
	stopStopping := context.AfterFunc(s.ctx, func() {
		w.push(&hivev1.ReportResponse{Code: uint32(codes.Unavailable), Message: errStopping.Error()}, false)
	})
	defer stopStopping()
	var end error
	for end == nil {
		select {
		case w.slots <- struct{}{}:
		case <-ctx.Done():
			end = toStatus(ctx.Err())
			continue
		}
		req, err := stream.Recv()
		if err != nil {
			<-w.slots
			end = err
			continue
		}
		seq := req.GetSeq()
		answer := func(err error) { w.answer(seq, err) }
		// Revoked or expired since the stream was opened: the auth
		// interceptors saw the certificate once (a watch checks on every
		// wake-up, a stream on every message).
		if err := s.checkCert(ctx, callerFrom(ctx)); err != nil {
			<-w.slots
			end = err
			continue
		}
		if err := s.acceptReport(ctx, req.GetReport(), answer); err != nil {
			if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
				<-w.slots
				end = err
				continue
			}
			answer(err)
		}
	}
	// Answer every report read before ending the stream: wait until each
	// slot is free again (the batcher answers every report it took, on
	// commit or when the server stops). Once the server has stopped
	// altogether, nothing is left to answer with.
	for range cap(w.slots) {
		select {
		case w.slots <- struct{}{}:
		case <-s.done:
			w.close()
			return status.Error(codes.Unavailable, errStopping.Error())
		}
	}
	w.close()
	if err := w.sendErr(); err != nil {
		return err
	}
	if errors.Is(end, io.EOF) {
		return nil
	}
	return end
}

// ackWriter writes a report stream's answers. Answers come from the
// batcher's commit goroutines, which must not block on one agent's
// stream, so answer only queues; a goroutine started when the queue
// becomes non-empty writes it and exits once it is empty. Each answer
// written frees a slot of the stream's read-ahead.
type ackWriter struct {
	stream hivev1.CoordinatorService_ReportStreamServer
	slots  chan struct{}

	mu      sync.Mutex
	queue   []ack
	running bool
	err     error // the first failed Send; later answers are dropped

	// sendMu is held around each Send and by close, after which nothing
	// is sent (the handler has returned).
	sendMu sync.Mutex
	closed bool
}

type ack struct {
	resp *hivev1.ReportResponse
	slot bool // it answers a report: frees a read-ahead slot once written
}

// answer queues the answer to report seq (err nil: accepted).
func (w *ackWriter) answer(seq uint64, err error) {
	resp := &hivev1.ReportResponse{Seq: seq, Accepted: err == nil}
	if err != nil {
		st := status.Convert(toStatus(err))
		resp.Code, resp.Message = uint32(st.Code()), st.Message()
	}
	w.push(resp, true)
}

func (w *ackWriter) push(resp *hivev1.ReportResponse, slot bool) {
	w.mu.Lock()
	w.queue = append(w.queue, ack{resp: resp, slot: slot})
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go w.drain()
	}
}

func (w *ackWriter) drain() {
	for {
		w.mu.Lock()
		q := w.queue
		w.queue = nil
		if len(q) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		for _, a := range q {
			w.send(a.resp)
			if a.slot {
				<-w.slots
			}
		}
	}
}

func (w *ackWriter) send(resp *hivev1.ReportResponse) {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	if w.closed || w.sendErr() != nil {
		return
	}
	if err := w.stream.Send(resp); err != nil {
		w.mu.Lock()
		w.err = err
		w.mu.Unlock()
	}
}

// close stops all sending: the handler is about to return.
func (w *ackWriter) close() {
	w.sendMu.Lock()
	w.closed = true
	w.sendMu.Unlock()
}

func (w *ackWriter) sendErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
