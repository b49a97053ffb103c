package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// BenchmarkNoopRun100Files measures one agent run over a state of 100 file
// resources that are already converged: the real engine and file provider
// under a sandbox root, plus what the agent does around the engine (report
// built, last-applied record and queued report written with fsync). The
// issue's target is under 20 ms.
func BenchmarkNoopRun100Files(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Name = "bench"
	cfg.DataDir = b.TempDir()
	cfg.Root = b.TempDir()
	cfg.Dev = true
	cfg.Gossip = nil
	cfg.Coordinators = []string{"127.0.0.1:1"}
	cfg.MaxQueuedReports = 1 << 30
	deps, err := NewEngine(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(cfg, deps)
	if err != nil {
		b.Fatal(err)
	}
	st := &hivev1.NodeState{Node: "bench", Generation: 1, Hash: "h1"}
	for i := range 100 {
		st.Resources = append(st.Resources, &hivev1.Resource{
			Key:  fmt.Sprintf("file:/etc/bench/f%03d.conf", i),
			Kind: &hivev1.Resource_File{File: &hivev1.File{Path: fmt.Sprintf("/etc/bench/f%03d.conf", i), Content: fmt.Sprintf("value = %d\n", i), Mode: 0o644}},
		})
	}
	ctx := context.Background()
	if !a.runOnce(ctx, proto.Clone(st).(*hivev1.NodeState), TriggerState) {
		b.Fatal("first run failed")
	}
	var total time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if !a.runOnce(ctx, st, TriggerInterval) {
			b.Fatal("no-op run failed")
		}
		total += time.Since(t0)
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/run")
}
