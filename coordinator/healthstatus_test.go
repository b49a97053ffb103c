package coordinator

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestHealthStatusAndDrift: a dev coordinator (real raft) shows a node's
// checks, health and health_since in status, keeps health_since while the
// health stays, moves it when the health changes, lists drift repairs (not
// site changes), exports the health metrics, and refuses a report whose
// checks are out of bounds.
func TestHealthStatusAndDrift(t *testing.T) {
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("1.0")}); err != nil {
		t.Fatal(err)
	}
	seq := uint64(0)
	send := func(health hivev1.Health, trigger string, checks []*hivev1.CheckResult, results ...*hivev1.ResourceResult) error {
		seq++
		_, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
			Node: "web-1", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: seq, Finished: timestamppb.Now(),
			Trigger: trigger, Health: health, Checks: checks, Results: results,
		}})
		return err
	}
	pass := []*hivev1.CheckResult{{Name: "web/home", Kind: "http", Passing: true, Time: timestamppb.Now()}}
	fail := []*hivev1.CheckResult{{Name: "web/home", Kind: "http", Passing: false, Failures: 3, Message: "GET http://127.0.0.1/: status 500, want 200", Time: timestamppb.Now()}}
	drift := &hivev1.ResourceResult{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Cause: hivev1.Cause_CAUSE_DRIFT, Message: "content"}
	change := &hivev1.ResourceResult{Key: "file:/etc/app.conf", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Cause: hivev1.Cause_CAUSE_CHANGE}

	if err := send(hivev1.Health_HEALTH_PASSING, "state", pass, change); err != nil {
		t.Fatal(err)
	}
	get := func() *hivev1.NodeStatus {
		t.Helper()
		sr, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
		if err != nil {
			t.Fatal(err)
		}
		return sr.GetNodes()[0]
	}
	s1 := get()
	if s1.GetHealth() != hivev1.Health_HEALTH_PASSING || len(s1.GetChecks()) != 1 || s1.GetHealthSince() == nil {
		t.Fatalf("status = %v", s1)
	}
	time.Sleep(20 * time.Millisecond)
	if err := send(hivev1.Health_HEALTH_PASSING, "interval", pass, drift); err != nil {
		t.Fatal(err)
	}
	if s2 := get(); !s2.GetHealthSince().AsTime().Equal(s1.GetHealthSince().AsTime()) {
		t.Fatalf("health_since moved without a change: %v -> %v", s1.GetHealthSince().AsTime(), s2.GetHealthSince().AsTime())
	}
	if err := send(hivev1.Health_HEALTH_FAILING, "health", fail, drift); err != nil {
		t.Fatal(err)
	}
	s3 := get()
	if s3.GetHealth() != hivev1.Health_HEALTH_FAILING || !s3.GetHealthSince().AsTime().After(s1.GetHealthSince().AsTime()) || s3.GetChecks()[0].GetMessage() == "" {
		t.Fatalf("after failing: %v", s3)
	}

	dr, err := c.ListDriftRepairs(ctx, &hivev1.ListDriftRepairsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dr.GetRepairs()) != 1 || dr.Repairs[0].GetKey() != "file:/etc/motd" || dr.Repairs[0].GetNode() != "web-1" {
		t.Fatalf("drift repairs = %v (the health copy must not count twice, the site change not at all)", dr.GetRepairs())
	}
	if dr, err := c.ListDriftRepairs(ctx, &hivev1.ListDriftRepairsRequest{Since: timestamppb.New(time.Now().Add(time.Hour))}); err != nil || len(dr.GetRepairs()) != 0 {
		t.Fatalf("since the future: %v, %v", dr, err)
	}
	if _, err := c.ListDriftRepairs(ctx, &hivev1.ListDriftRepairsRequest{Node: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown node: %v", err)
	}

	resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`hive_coordinator_nodes_by_health{health="failing"} 1`, `hive_coordinator_check_failing_nodes{check="web/home"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Bounds at the door.
	long := []*hivev1.CheckResult{{Name: strings.Repeat("x", 300), Kind: "http"}}
	if err := send(hivev1.Health_HEALTH_PASSING, "health", long); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "report.checks[0].name") {
		t.Fatalf("long name: %v", err)
	}
	odd := []*hivev1.CheckResult{{Name: "web/x", Kind: "ping"}}
	if err := send(hivev1.Health_HEALTH_PASSING, "health", odd); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "report.checks[0].kind") {
		t.Fatalf("odd kind: %v", err)
	}
}
