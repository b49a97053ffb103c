package coordinator

import (
	"testing"
	"time"
)

// BenchmarkIdleCluster measures what a 3-server TLS cluster costs while
// nothing happens: raft's heartbeats and the empty AppendEntries the leader
// sends every CommitTimeout (so that followers learn of commits), gossip,
// the reconcile loop. Each op is one idle second; "cores" is the process's
// CPU time over the wall time of the ops (the three servers together).
func BenchmarkIdleCluster(b *testing.B) {
	quietCluster(b, 3)
	time.Sleep(2 * time.Second) // let the joins and promotions settle
	u := startUsage()
	b.ResetTimer()
	for range b.N {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	u.report(b)
}
