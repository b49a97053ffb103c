package memtrim

import (
	"context"
	"runtime"
	"testing"
	"time"
)

func TestWorth(t *testing.T) {
	const mib = 1 << 20
	prev := Sample{Allocs: 1000 * mib, Live: 100 * mib}
	for _, c := range []struct {
		name string
		cur  Sample
		mark uint64 // allocations at the last trim
		want bool
	}{
		{"quiet after a burst", Sample{Allocs: prev.Allocs + mib, Live: 100 * mib}, 900 * mib, true},
		{"busy", Sample{Allocs: prev.Allocs + 10*mib, Live: 100 * mib}, 900 * mib, false},
		{"quiet, too little allocated since the last trim", Sample{Allocs: prev.Allocs + mib, Live: 100 * mib}, 980 * mib, false},
		{"small heap: 16 MiB at least", Sample{Allocs: prev.Allocs, Live: 8 * mib}, 990 * mib, false},
		{"small heap idle: 1 MiB allocated is quiet", Sample{Allocs: prev.Allocs + mib/2, Live: 4 * mib}, 900 * mib, true},
	} {
		if got := Worth(prev, c.cur, c.mark); got != c.want {
			t.Errorf("%s: Worth = %v, want %v", c.name, got, c.want)
		}
	}
}

var sink [][]byte

// TestRunTrims: garbage left by a burst is returned once the process is
// quiet, and a quiet process with nothing to return is left alone.
func TestRunTrims(t *testing.T) {
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil // 64 MiB of garbage
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trims := make(chan Sample, 10)
	go Run(ctx, 50*time.Millisecond, func(before, after Sample) { trims <- after })
	select {
	case after := <-trims:
		if after.Objects > after.Live+minSlack {
			t.Errorf("after the trim: %d bytes of objects, %d live", after.Objects, after.Live)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no trim within 10s after a 64 MiB burst")
	}
	runtime.GC()
	select {
	case <-trims:
		t.Error("trimmed again with nothing to return")
	case <-time.After(300 * time.Millisecond):
	}
}
