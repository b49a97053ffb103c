package coordinator

import (
	"context"
	"errors"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// batcher group-commits agents' reports: the first report waiting starts a
// batch at once (no fixed delay), and while up to four batches are being
// committed further reports queue up and go together into the next
// ReportBatchCommand (at most max per entry). Light load gets commit
// latency; heavy load gets large batches. Report calls wait for the commit
// of their batch, so an accepted report is durable.
type batcher struct {
	in    chan *pendingReport
	max   int
	apply func(context.Context, []*hivev1.Report) error
	sem   chan struct{}
}

type pendingReport struct {
	r    *hivev1.Report
	done chan error
}

// errStopping is returned for reports queued when the server stops.
var errStopping = errors.New("coordinator is stopping")

func newBatcher(max int, apply func(context.Context, []*hivev1.Report) error) *batcher {
	return &batcher{in: make(chan *pendingReport, 4*max), max: max, apply: apply, sem: make(chan struct{}, 4)}
}

// submit queues r and waits for its batch's commit.
func (b *batcher) submit(ctx context.Context, r *hivev1.Report) error {
	p := &pendingReport{r: r, done: make(chan error, 1)}
	select {
	case b.in <- p:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher) run(ctx context.Context) {
	defer func() {
		for {
			select {
			case p := <-b.in:
				p.done <- errStopping
			default:
				return
			}
		}
	}()
	for {
		var first *pendingReport
		select {
		case first = <-b.in:
		case <-ctx.Done():
			return
		}
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			first.done <- errStopping
			return
		}
		batch := []*pendingReport{first}
	drain:
		for len(batch) < b.max {
			select {
			case p := <-b.in:
				batch = append(batch, p)
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
				p.done <- err
			}
		}(batch)
	}
}
