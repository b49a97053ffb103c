package coordinator

import (
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRebootRequiredQueues: the leader's reboot loop queues the nodes whose
// last report says a resource notified reboot, once each, in name order,
// and not a node already queued, in maintenance or removed from the
// registry.
func TestRebootRequiredQueues(t *testing.T) {
	now := time.Date(2026, 12, 4, 6, 0, 0, 0, time.UTC)
	st := state.New()
	for _, n := range []string{"web-3", "web-1", "web-2", "web-4", "web-5"} {
		if r := st.UpsertNode(now, &hivev1.NodeUpsertCommand{Name: n, Addresses: []string{"10.0.0.1"}, Ordinal: st.NextOrdinal()}); r.GetError() != "" {
			t.Fatal(r)
		}
	}
	var reports []*hivev1.Report
	for i, n := range []string{"web-3", "web-1", "web-2", "web-4", "gone"} {
		reports = append(reports, &hivev1.Report{Node: n, Seq: uint64(i + 1), Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, RebootRequired: n != "web-4"})
	}
	reports = append(reports, &hivev1.Report{Node: "web-5", Seq: 9, Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED})
	st.ApplyReports(&hivev1.ReportBatchCommand{Reports: reports})
	if r := st.SetMaintenance(now, &hivev1.MaintenanceSetCommand{Node: "web-2", Author: "op"}); r.GetError() != "" {
		t.Fatal(r)
	}
	if r := st.RequestReboot(now, &hivev1.RebootRequestCommand{Nodes: []string{"web-1"}, Author: "op"}); r.GetError() != "" {
		t.Fatal(r)
	}
	var asked []string
	for _, c := range (&Server{}).rebootCommands(st, now) {
		if rr := c.GetRebootRequest(); rr != nil {
			if rr.GetReason() != "a resource notified reboot" || rr.GetAuthor() != "agent:"+rr.GetNodes()[0] {
				t.Errorf("request %v", rr)
			}
			asked = append(asked, rr.GetNodes()...)
		}
	}
	if len(asked) != 1 || asked[0] != "web-3" {
		t.Fatalf("reboot requests for %v, want web-3 only (web-1 queued, web-2 in maintenance, web-4 and web-5 not asking, gone not registered)", asked)
	}
}
