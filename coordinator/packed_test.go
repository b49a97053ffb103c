package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/fsm"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func testReportBatch(seq uint64) *hivev1.Command {
	var reports []*hivev1.Report
	for i := 0; i < 50; i++ {
		reports = append(reports, &hivev1.Report{
			Node: fmt.Sprintf("web-%02d", i), Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: seq,
			StateHash: fmt.Sprintf("%064d", i),
			Results: []*hivev1.ResourceResult{
				{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_OK, Duration: durationpb.New(time.Millisecond)},
				{Key: "service:nginx", Outcome: hivev1.Outcome_OUTCOME_OK, Duration: durationpb.New(time.Millisecond)},
			},
		})
	}
	return &hivev1.Command{Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: reports}}}
}

// entryVersion returns the envelope version of the raft entry at index on
// the server n.
func entryVersion(t *testing.T, n *node, index uint64) uint32 {
	t.Helper()
	var l raft.Log
	if err := n.boltStore.GetLog(index, &l); err != nil {
		t.Fatalf("%s: entry %d: %v", n.cfg.Name, index, err)
	}
	var c hivev1.Command
	if err := proto.Unmarshal(l.Data, &c); err != nil {
		t.Fatalf("%s: entry %d: %v", n.cfg.Name, index, err)
	}
	return c.GetVersion()
}

// The leader packs report batches once every server of the configuration
// has recorded that it applies packed entries, and writes them plain
// while one has not (an older coordinator would halt on a packed entry);
// every server applies both alike.
func TestReportBatchesPackedOnlyWhenEveryServerApplies(t *testing.T) {
	nodes, _ := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	waitFor(t, 20*time.Second, "every coordinator's record says it applies packed entries", func() bool {
		for _, n := range nodes {
			if l.fsm.Store().Coordinator(n.cfg.Name).GetCommandVersion() != fsm.CommandVersion {
				return false
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, packedAt, err := l.apply(ctx, testReportBatch(1))
	if err != nil {
		t.Fatal(err)
	}
	// One server's record as an older coordinator writes it: no
	// command_version.
	old := followers(nodes, l)[0]
	if _, _, err := l.apply(ctx, &hivev1.Command{Body: &hivev1.Command_CoordinatorUpsert{CoordinatorUpsert: &hivev1.CoordinatorUpsertCommand{
		Name: old.cfg.Name, GrpcAddr: old.grpcAddr, RaftAddr: old.RaftAddr(), Version: "0.9.0",
	}}}); err != nil {
		t.Fatal(err)
	}
	_, plainAt, err := l.apply(ctx, testReportBatch(2))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, n.cfg.Name+" applied both batches", func() bool { return n.fsm.Store().Index() >= plainAt })
		if v := entryVersion(t, n, packedAt); v != 2 {
			t.Errorf("%s: the batch written while every server applies version 2 has version %d, want 2 (packed)", n.cfg.Name, v)
		}
		if v := entryVersion(t, n, plainAt); v != 1 {
			t.Errorf("%s: the batch written while %s's record lacked version 2 has version %d, want 1 (plain)", n.cfg.Name, old.cfg.Name, v)
		}
		if r := n.fsm.Store().Report("web-49"); r.GetSeq() != 2 || n.fsm.Store().Report("web-00") == nil {
			t.Errorf("%s: report of web-49 is %v, want seq 2", n.cfg.Name, r)
		}
	}
}
