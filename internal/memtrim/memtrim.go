// Package memtrim returns a burst's memory to the kernel once the process
// is quiet again.
//
// A coordinator holds thousands of idle watch connections whose live heap
// is steady, and then a push (every watcher renders, encodes and sends) or
// a reconnect storm allocates quickly. Go's collector lets the heap grow to
// GOGC percent above the live heap, and after a burst it keeps that much
// until the next collection (forced only every two minutes when idle)
// and returns the free pages slowly: the resident set stays near its burst
// size while nothing happens. Run checks every interval whether the last
// interval was quiet (it allocated less than a sixteenth of the live heap)
// after the process allocated at least a quarter of the live heap (16 MiB
// at least) since the last trim; if so it collects and returns the free
// memory at once
// (debug.FreeOSMemory: one full collection, which also halves the stacks
// that use less than a quarter of their size). Under steady load nothing
// is trimmed: the collector paces itself as usual.
package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultInterval is how often Run looks.
const DefaultInterval = 10 * time.Second

// minSlack is the least memory worth a full collection.
const minSlack = 16 << 20

// Sample is what Run reads of the runtime each interval.
type Sample struct {
	Allocs  uint64 // bytes allocated since the start (/gc/heap/allocs)
	Live    uint64 // live heap after the last collection (/gc/heap/live)
	Objects uint64 // heap occupied by objects, live or not yet swept (/memory/classes/heap/objects)
	Free    uint64 // free heap not returned to the kernel (/memory/classes/heap/free)
}

// Worth reports whether a trim pays after an interval that went from prev
// to cur: the interval was quiet (it allocated less than a sixteenth of
// the live heap, 1 MiB at least), and since the last trim (mark: the
// allocation count then) the process allocated at least a quarter of the
// live heap, 16 MiB at least: what may be garbage, or free pages kept
// after the collector ran. (The runtime's own figures cannot tell the
// garbage without a collection: its live heap is from the last one, which
// a burst may have caught with its garbage still in use.)
func Worth(prev, cur Sample, mark uint64) bool {
	if cur.Allocs-prev.Allocs >= max(cur.Live/16, 1<<20) {
		return false // busy: the collector paces itself
	}
	return cur.Allocs-mark >= max(cur.Live/4, minSlack)
}

var names = []string{"/gc/heap/allocs:bytes", "/gc/heap/live:bytes", "/memory/classes/heap/objects:bytes", "/memory/classes/heap/free:bytes"}

// Read samples the runtime.
func Read() Sample {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[i].Value.Uint64()
	}
	return Sample{Allocs: v(0), Live: v(1), Objects: v(2), Free: v(3)}
}

// Run trims after every quiet interval that left enough to return, until
// ctx ends. trimmed, if not nil, is called after each trim with the
// samples before and after.
func Run(ctx context.Context, interval time.Duration, trimmed func(before, after Sample)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	prev := Read()
	var mark uint64 // what was allocated before Run counts too (start-up)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := Read()
		if Worth(prev, cur, mark) {
			debug.FreeOSMemory()
			after := Read()
			mark = after.Allocs
			if trimmed != nil {
				trimmed(cur, after)
			}
			cur = after
		}
		prev = cur
	}
}
