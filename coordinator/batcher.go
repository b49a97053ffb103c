package coordinator

import (
	"context"
	"errors"
	"sync/atomic"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// batcher group-commits agents' reports: the first report waiting starts a
// batch at once (no fixed delay), and while up to four batches are being
// committed further reports queue up and go together into the next
// ReportBatchCommand (at most max reports and maxBytes encoded bytes per
// entry: a report that would overflow an entry starts the next one). Light
// load gets commit latency; heavy load gets large batches. Report calls
// wait for the commit of their batch, so an accepted report is durable.
//
// Memory is bounded: the reports held (queued or being committed) may not
// exceed queueMax in number nor queueMaxBytes in encoded bytes; submit
// refuses one more at once with ResourceExhausted instead of waiting.
type batcher struct {
	in       chan *pendingReport
	max      int
	maxBytes int
	apply    func(context.Context, []*hivev1.Report) error
	sem      chan struct{}

	queueMax, queueMaxBytes int64
	held, heldBytes         atomic.Int64
	// onFull, when set, is called for each report refused as the queue
	// is full (metrics); it must not block.
	onFull func()
}

type pendingReport struct {
	r    *hivev1.Report
	size int
	// done is called once with the batch's outcome, on the goroutine that
	// committed the batch: it must not block.
	done func(error)
}

// errStopping is returned for reports queued when the server stops.
var errStopping = errors.New("coordinator is stopping")

// newBatcher returns a batcher of at most max reports and maxBytes bytes
// per entry, holding at most queueMax reports and queueMaxBytes bytes.
func newBatcher(max, maxBytes, queueMax, queueMaxBytes int, apply func(context.Context, []*hivev1.Report) error) *batcher {
	return &batcher{
		in: make(chan *pendingReport, 4*max), max: max, maxBytes: maxBytes, apply: apply, sem: make(chan struct{}, 4),
		queueMax: int64(queueMax), queueMaxBytes: int64(queueMaxBytes),
	}
}

// submit queues r and waits for its batch's commit.
func (b *batcher) submit(ctx context.Context, r *hivev1.Report) error {
	ch := make(chan error, 1)
	if err := b.enqueue(ctx, r, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueue queues r without waiting for its commit: done is called once
// with the outcome of its batch (on the committing goroutine; it must not
// block), unless enqueue returns an error (the queue is full, or ctx ended
// before r was queued), in which case it is never called. A report stream
// hands the batcher a callback instead of parking a goroutine per report.
func (b *batcher) enqueue(ctx context.Context, r *hivev1.Report, done func(error)) error {
	p := &pendingReport{r: r, size: proto.Size(r), done: done}
	if n := b.held.Add(1); n > b.queueMax {
		b.held.Add(-1)
		b.full()
		return status.Errorf(codes.ResourceExhausted, "the coordinator's report queue is full (%d reports; the limit is %d): retry later", n-1, b.queueMax)
	}
	if n := b.heldBytes.Add(int64(p.size)); n > b.queueMaxBytes {
		b.release(p)
		b.full()
		return status.Errorf(codes.ResourceExhausted, "the coordinator's report queue is full (%d bytes queued, this report %d; the limit is %d bytes): retry later", n-int64(p.size), p.size, b.queueMaxBytes)
	}
	select {
	case b.in <- p:
		return nil
	case <-ctx.Done():
		b.release(p)
		return ctx.Err()
	}
}

func (b *batcher) full() {
	if b.onFull != nil {
		b.onFull()
	}
}

// release forgets a report that left the batcher.
func (b *batcher) release(p *pendingReport) {
	b.held.Add(-1)
	b.heldBytes.Add(-int64(p.size))
}

// finish answers p and releases it.
func (b *batcher) finish(p *pendingReport, err error) {
	b.release(p)
	p.done(err)
}

// entrySize is what a report adds to a ReportBatchCommand (field tag and
// length prefix included).
func entrySize(p *pendingReport) int { return p.size + 6 }

func (b *batcher) run(ctx context.Context) {
	var carry *pendingReport // the report that did not fit the last batch
	defer func() {
		if carry != nil {
			b.finish(carry, errStopping)
		}
		for {
			select {
			case p := <-b.in:
				b.finish(p, errStopping)
			default:
				return
			}
		}
	}()
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-b.in:
			case <-ctx.Done():
				return
			}
		}
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			b.finish(first, errStopping)
			return
		}
		batch, size := []*pendingReport{first}, entrySize(first)
	drain:
		for len(batch) < b.max {
			select {
			case p := <-b.in:
				if size+entrySize(p) > b.maxBytes {
					carry = p
					break drain
				}
				batch = append(batch, p)
				size += entrySize(p)
			default:
				break drain
			}
		}
		go func(batch []*pendingReport) {
			defer func() { <-b.sem }()
			reports := make([]*hivev1.Report, len(batch))
			for i, p := range batch {
				reports[i] = p.r
			}
			err := b.apply(ctx, reports)
			for _, p := range batch {
				b.finish(p, err)
			}
		}(batch)
	}
}
