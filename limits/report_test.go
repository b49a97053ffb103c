package limits

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var now = time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)

func goodReport() *hivev1.Report {
	return &hivev1.Report{
		Node: "web-1", Generation: 3, StateHash: strings.Repeat("ab", 32), Phase: hivev1.Phase_PHASE_CONVERGED,
		AgentVersion: "v1.2.0-3-gabcdef", Trigger: "state", Seq: 7,
		Uptime:  durationpb.New(time.Hour),
		Started: timestamppb.New(now.Add(-time.Second)), Finished: timestamppb.New(now),
		Results: []*hivev1.ResourceResult{
			{Key: "file:/etc/nginx/nginx.conf", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Message: "content", Diff: "-a\n+b\n", Duration: durationpb.New(time.Millisecond)},
			{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_OK},
		},
		PublishedSecrets: map[string][]byte{"join-token": []byte("SWMTKN-1-x")},
	}
}

// TestCheckReport: each bound refuses with an error naming the field, the
// size and the limit; a normal report passes.
func TestCheckReport(t *testing.T) {
	if err := CheckReport(goodReport(), now); err != nil {
		t.Fatalf("normal report refused: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(r *hivev1.Report)
		field string
		want  string
	}{
		{"whole report", func(r *hivev1.Report) { r.Results[0].Diff = strings.Repeat("x", MaxReportBytes) }, "report", fmt.Sprintf("the limit is %d bytes", MaxReportBytes)},
		{"message", func(r *hivev1.Report) { r.Results[1].Message = strings.Repeat("m", MaxMessageBytes+1) }, "report.results[1].message", fmt.Sprintf("is %d bytes; the limit is %d bytes", MaxMessageBytes+1, MaxMessageBytes)},
		{"diff", func(r *hivev1.Report) { r.Results[0].Diff = strings.Repeat("d", MaxDiffBytes+1) }, "report.results[0].diff", fmt.Sprintf("the limit is %d bytes", MaxDiffBytes)},
		{"results", func(r *hivev1.Report) {
			for range MaxResults {
				r.Results = append(r.Results, &hivev1.ResourceResult{Key: "k"})
			}
		}, "report.results", fmt.Sprintf("is %d entries; the limit is %d entries", MaxResults+2, MaxResults)},
		{"key empty", func(r *hivev1.Report) { r.Results[0].Key = "" }, "report.results[0].key", "is required"},
		{"key long", func(r *hivev1.Report) { r.Results[0].Key = "file:/" + strings.Repeat("a", MaxKeyBytes) }, "report.results[0].key", fmt.Sprintf("the limit is %d bytes", MaxKeyBytes)},
		{"key control", func(r *hivev1.Report) { r.Results[0].Key = "file:/etc/\x1b[2J" }, "report.results[0].key", "control characters"},
		{"outcome", func(r *hivev1.Report) { r.Results[0].Outcome = 99 }, "report.results[0].outcome", "99 is not a known value"},
		{"result duration", func(r *hivev1.Report) { r.Results[0].Duration = durationpb.New(-time.Second) }, "report.results[0].duration", "negative"},
		{"node", func(r *hivev1.Report) { r.Node = "web 1" }, "report.node", "web 1"},
		{"services", func(r *hivev1.Report) {
			for range MaxServices + 1 {
				r.Services = append(r.Services, &hivev1.SwarmServiceStatus{Name: "s"})
			}
		}, "report.services", fmt.Sprintf("the limit is %d entries", MaxServices)},
		{"service name", func(r *hivev1.Report) { r.Services = []*hivev1.SwarmServiceStatus{{Name: strings.Repeat("s", 64)}} }, "report.services[0].name", "1 to 63 bytes"},
		{"service image", func(r *hivev1.Report) {
			r.Services = []*hivev1.SwarmServiceStatus{{Name: "web", Image: strings.Repeat("i", MaxServiceImage+1)}}
		}, "report.services[0].image", fmt.Sprintf("the limit is %d bytes", MaxServiceImage)},
		{"phase", func(r *hivev1.Report) { r.Phase = 42 }, "report.phase", "42 is not a known value"},
		{"state hash", func(r *hivev1.Report) { r.StateHash = "zz" }, "report.state_hash", "64 lowercase hex digits"},
		{"agent version long", func(r *hivev1.Report) { r.AgentVersion = strings.Repeat("1", 65) }, "report.agent_version", "is 65 bytes; the limit is 64 bytes"},
		{"agent version chars", func(r *hivev1.Report) { r.AgentVersion = "1.0\n<script>" }, "report.agent_version", `'\n' at offset 3`},
		{"trigger", func(r *hivev1.Report) { r.Trigger = "State" }, "report.trigger", "'S' at offset 0"},
		{"boot id chars", func(r *hivev1.Report) { r.BootId = "abc\n" }, "report.boot_id", `'\n' at offset 3`},
		{"boot id long", func(r *hivev1.Report) { r.BootId = strings.Repeat("a", MaxBootIDBytes+1) }, "report.boot_id", "the limit is 64 bytes"},
		{"uptime", func(r *hivev1.Report) { r.Uptime = durationpb.New(-time.Hour) }, "report.uptime", "negative"},
		{"finished future", func(r *hivev1.Report) { r.Finished = timestamppb.New(now.Add(2 * time.Hour)) }, "report.finished", "more than 1h0m0s ahead"},
		{"started ancient", func(r *hivev1.Report) { r.Started = timestamppb.New(time.Unix(0, 0)) }, "report.started", "before 2000-01-01"},
		{"started invalid", func(r *hivev1.Report) { r.Started = &timestamppb.Timestamp{Seconds: 1 << 50} }, "report.started", "not a valid timestamp"},
		{"finished before started", func(r *hivev1.Report) { r.Finished = timestamppb.New(now.Add(-time.Minute)) }, "report.finished", "before report.started"},
		{"published count", func(r *hivev1.Report) {
			for i := range MaxPublishedSecrets {
				r.PublishedSecrets[fmt.Sprint("s", i)] = []byte("v")
			}
		}, "report.published_secrets", fmt.Sprintf("is %d entries; the limit is %d entries", MaxPublishedSecrets+1, MaxPublishedSecrets)},
		{"published size", func(r *hivev1.Report) { r.PublishedSecrets["join-token"] = make([]byte, MaxPublishedSecretBytes+1) }, `report.published_secrets["join-token"]`, fmt.Sprintf("the limit is %d bytes", MaxPublishedSecretBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := goodReport()
			tc.edit(r)
			err := CheckReport(r, now)
			var le *Error
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want an *Error", err)
			}
			if le.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q (field %q), want field %q and %q", err, le.Field, tc.field, tc.want)
			}
		})
	}
}

// TestFitReport: whatever an honest agent's engine produced, the fitted
// report passes CheckReport, cuts are marked, and failures survive.
func TestFitReport(t *testing.T) {
	t.Run("untouched", func(t *testing.T) {
		r := goodReport()
		want := proto.Clone(r)
		if FitReport(r) || !proto.Equal(r, want) {
			t.Fatalf("a normal report was changed: %v", r)
		}
	})
	t.Run("long fields", func(t *testing.T) {
		r := goodReport()
		r.Results[0].Message = strings.Repeat("é", MaxMessageBytes) // 2 bytes each
		r.Results[0].Diff = strings.Repeat("+x\n", MaxDiffBytes)
		r.Results[1].Key = "file:/" + strings.Repeat("a", MaxKeyBytes)
		if !FitReport(r) {
			t.Fatal("FitReport changed nothing")
		}
		if err := CheckReport(r, now); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{r.Results[0].Message, r.Results[0].Diff, r.Results[1].Key} {
			if !strings.Contains(s, "…[truncated: ") {
				t.Errorf("no truncation marker at the end of %q", s[max(0, len(s)-60):])
			}
		}
	})
	t.Run("huge site", func(t *testing.T) {
		r := goodReport()
		r.Results = nil
		for i := range 3 * MaxResults {
			x := &hivev1.ResourceResult{Key: fmt.Sprintf("file:/srv/data/%06d", i), Outcome: hivev1.Outcome_OUTCOME_OK,
				Message: strings.Repeat("m", 2000), Diff: strings.Repeat("d", 4000)}
			if i%1000 == 7 {
				x.Outcome = hivev1.Outcome_OUTCOME_FAILED
			}
			r.Results = append(r.Results, x)
		}
		FitReport(r)
		if err := CheckReport(r, now); err != nil {
			t.Fatal(err)
		}
		failed, last := 0, r.Results[len(r.Results)-1]
		for _, x := range r.Results {
			if x.Outcome == hivev1.Outcome_OUTCOME_FAILED && x.Key != SummaryKey {
				failed++
			}
		}
		if failed != 15 {
			t.Errorf("%d failed results kept, want all 15", failed)
		}
		if last.Key != SummaryKey || !strings.Contains(last.Message, "results not sent") {
			t.Errorf("last result %v, want the summary", last)
		}
		t.Logf("%d results, %d bytes; summary: %s", len(r.Results), proto.Size(r), last.Message)
	})
}

// BenchmarkCheckReport: the cost the coordinator adds to each report (the
// five-result report of coordinator's BenchmarkReports).
func BenchmarkCheckReport(b *testing.B) {
	r := &hivev1.Report{Node: "node-00001", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1, Finished: timestamppb.New(now),
		Results: []*hivev1.ResourceResult{
			{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_OK},
			{Key: "file:/etc/nginx/nginx.conf", Outcome: hivev1.Outcome_OUTCOME_OK},
			{Key: "service:nginx", Outcome: hivev1.Outcome_OUTCOME_OK},
			{Key: "firewall:filter", Outcome: hivev1.Outcome_OUTCOME_OK},
			{Key: "package:chrony", Outcome: hivev1.Outcome_OUTCOME_CHANGED},
		}}
	for b.Loop() {
		if err := CheckReport(r, now); err != nil {
			b.Fatal(err)
		}
	}
}
