package state

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// reportFromNewerAgent is a report with three results, a published value
// and a field this coordinator does not know (field 999, as a newer agent
// might send), decoded from the wire as the FSM decodes it.
func reportFromNewerAgent(t testing.TB) *hivev1.Report {
	t.Helper()
	r := &hivev1.Report{
		Node: "n1", Generation: 3, Seq: 7, Phase: hivev1.Phase_PHASE_FAILED,
		Finished: timestamppb.New(time.Unix(1700000000, 0)),
		Results: []*hivev1.ResourceResult{
			{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Duration: durationpb.New(time.Second), Cause: hivev1.Cause_CAUSE_DRIFT},
			{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_FAILED, Message: "permission denied", Diff: "-a\n+b\n"},
			{Key: "service:nginx", Outcome: hivev1.Outcome_OUTCOME_OK},
		},
		PublishedSecrets: map[string][]byte{"token": []byte("plaintext")},
	}
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 999, protowire.BytesType)
	b = protowire.AppendString(b, "from the future")
	var got hivev1.Report
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func TestStoredReportKeepsResultsEncoded(t *testing.T) {
	in := reportFromNewerAgent(t)
	want := proto.Clone(in).(*hivev1.Report)
	s := New()
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{in}})
	if !proto.Equal(in, want) {
		t.Fatal("ApplyReports modified the command's report")
	}
	st := s.Report("n1")
	if st.GetResults() != nil {
		t.Fatalf("stored report keeps decoded results: %v", st.GetResults())
	}
	if st.GetPublishedSecrets() != nil {
		t.Fatal("stored report keeps published plaintext")
	}
	if st.GetPhase() != hivev1.Phase_PHASE_FAILED || st.GetSeq() != 7 || !st.GetFinished().AsTime().Equal(time.Unix(1700000000, 0)) {
		t.Fatalf("stored report lost fields: %v", st)
	}
	got := Results(st)
	if len(got) != 3 {
		t.Fatalf("Results: %d results, want 3", len(got))
	}
	for i := range got {
		if !proto.Equal(got[i], want.GetResults()[i]) {
			t.Errorf("result %d: %v, want %v", i, got[i], want.GetResults()[i])
		}
	}
	c := SummarizeResults(st)
	if c.GetTotal() != 3 || c.GetChanged() != 1 || c.GetFailed() != 1 || c.GetSkipped() != 0 || c.GetPlanned() != 0 {
		t.Fatalf("SummarizeResults: %v", c)
	}
	// A report never stored is read the same way.
	if c2 := SummarizeResults(want); !proto.Equal(c, c2) || len(Results(want)) != 3 {
		t.Fatalf("unstored report: %v, %d results", c2, len(Results(want)))
	}
	if SummarizeResults(nil).GetTotal() != 0 || Results(nil) != nil {
		t.Fatal("nil report has results")
	}

	// Marshaled (into an answer, a snapshot), the stored report is the
	// whole report again: results back in their field, the unknown field
	// kept, only the published values gone.
	b, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back hivev1.Report
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	want.PublishedSecrets = nil
	if !proto.Equal(&back, want) {
		t.Fatalf("stored report marshals to\n%v\nwant\n%v", &back, want)
	}
	// The drift repair was recorded from the decoded results.
	if reps := s.CheckRecord("n1").GetDriftRepairs(); len(reps) != 1 || reps[0].GetKey() != "package:nginx" {
		t.Fatalf("drift repairs: %v", reps)
	}
}

// snapshotBytes is what WriteSnapshot writes of s.
func snapshotBytes(t *testing.T, s *Store) []byte {
	t.Helper()
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestStoredResultsSurviveSnapshot(t *testing.T) {
	s := New()
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{reportFromNewerAgent(t)}})
	s.SetIndex(9)
	data := snapshotBytes(t, s)
	r, err := ReadSnapshot(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	st := r.Report("n1")
	if st.GetResults() != nil {
		t.Fatal("restored report keeps decoded results")
	}
	if got := Results(st); len(got) != 3 || got[1].GetMessage() != "permission denied" || got[1].GetDiff() != "-a\n+b\n" {
		t.Fatalf("restored results: %v", got)
	}
	if !proto.Equal(st, s.Report("n1")) {
		t.Fatalf("restored report differs:\n%v\n%v", st, s.Report("n1"))
	}
	if !bytes.Equal(data, snapshotBytes(t, r)) {
		t.Fatal("snapshot of the restored store differs")
	}
}

// A snapshot written before results were kept encoded holds reports with
// decoded results; restored, they are kept encoded too.
func TestRestorePacksOldReports(t *testing.T) {
	old := reportFromNewerAgent(t)
	old.PublishedSecrets = nil
	snap := &hivev1.StateSnapshot{Version: SnapshotVersion, Reports: []*hivev1.Report{old}}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, 5); err != nil {
		t.Fatal(err)
	}
	r, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	st := r.Report("n1")
	if st.GetResults() != nil || len(Results(st)) != 3 || SummarizeResults(st).GetFailed() != 1 {
		t.Fatalf("restored old report: %v", st)
	}
}

// BenchmarkStoreReports is the FSM's work for one report: decode the log
// entry as Apply does (UnmarshalCommand) and store it.
func BenchmarkStoreReports(b *testing.B) {
	for _, n := range []int{5, 50} {
		b.Run(map[int]string{5: "results=5", 50: "results=50"}[n], func(b *testing.B) {
			r := &hivev1.Report{Node: "n", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Finished: timestamppb.Now()}
			for i := range n {
				r.Results = append(r.Results, &hivev1.ResourceResult{
					Key: "file:/etc/hive/example-" + string(rune('a'+i%26)), Outcome: hivev1.Outcome_OUTCOME_OK,
					Duration: durationpb.New(time.Millisecond), Message: "in sync",
				})
			}
			enc := batchCommand(b, r)
			s := New()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				// As the FSM decodes and applies a log entry.
				var c hivev1.Command
				if err := UnmarshalCommand(enc, &c); err != nil {
					b.Fatal(err)
				}
				c.GetReportBatch().Reports[0].Seq = uint64(i + 1)
				s.ApplyReports(c.GetReportBatch())
			}
		})
	}
}

// BenchmarkStoredReportBytes reports the heap a stored report keeps
// (bytes/report: 10,000 nodes' reports applied, live heap after GC, less
// the heap before), the figure that grows with the fleet on every
// coordinator.
func BenchmarkStoredReportBytes(b *testing.B) {
	const nodes = 10000
	for _, n := range []int{5, 50} {
		b.Run(map[int]string{5: "results=5", 50: "results=50"}[n], func(b *testing.B) {
			batch := make([][]byte, nodes)
			for i := range nodes {
				r := &hivev1.Report{Node: fmt.Sprintf("web-%05d", i), Generation: 1, Seq: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Finished: timestamppb.Now()}
				for j := range n {
					r.Results = append(r.Results, &hivev1.ResourceResult{
						Key: fmt.Sprintf("file:/etc/hive/example-%d.conf", j), Outcome: hivev1.Outcome_OUTCOME_OK,
						Duration: durationpb.New(time.Millisecond), Message: "in sync",
					})
				}
				batch[i] = batchCommand(b, r)
			}
			var per float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s := New()
				for _, enc := range batch {
					var c hivev1.Command
					if err := UnmarshalCommand(enc, &c); err != nil {
						b.Fatal(err)
					}
					s.ApplyReports(c.GetReportBatch())
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				per = float64(after.HeapAlloc-before.HeapAlloc) / nodes
				runtime.KeepAlive(s)
			}
			b.ReportMetric(per, "bytes/report")
		})
	}
}

// batchCommand encodes a report batch command of the given reports.
func batchCommand(t testing.TB, reports ...*hivev1.Report) []byte {
	t.Helper()
	b, err := proto.Marshal(&hivev1.Command{Version: 1, Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: reports}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// whole marshals and unmarshals m: a message with encoded results becomes
// the same message with its results decoded.
func whole[M proto.Message](t testing.TB, m M) M {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := m.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUnmarshalCommandKeepsResultsEncoded(t *testing.T) {
	a := reportFromNewerAgent(t)
	a.PublishedSecrets = nil
	b := &hivev1.Report{Node: "n2", Seq: 1} // no results
	c := proto.Clone(a).(*hivev1.Report)
	c.Node = "n3"
	data := batchCommand(t, a, b, c)
	var plain, got hivev1.Command
	if err := proto.Unmarshal(data, &plain); err != nil {
		t.Fatal(err)
	}
	if err := UnmarshalCommand(data, &got); err != nil {
		t.Fatal(err)
	}
	reports := got.GetReportBatch().GetReports()
	if len(reports) != 3 {
		t.Fatalf("%d reports", len(reports))
	}
	for i, r := range reports {
		if r.GetResults() != nil {
			t.Errorf("report %d: results decoded", i)
		}
		if want := plain.GetReportBatch().GetReports()[i]; len(Results(r)) != len(want.GetResults()) {
			t.Errorf("report %d: %d results, want %d", i, len(Results(r)), len(want.GetResults()))
		}
	}
	if !proto.Equal(whole(t, &got), &plain) {
		t.Fatalf("UnmarshalCommand gives\n%v\nproto.Unmarshal\n%v", whole(t, &got), &plain)
	}
	// Only the failed and drift-repaired results are decoded for events.
	if f := ResultsWhere(reports[0], Failed); len(f) != 1 || f[0].GetMessage() != "permission denied" {
		t.Fatalf("failed: %v", f)
	}
	if d := ResultsWhere(reports[0], DriftRepaired); len(d) != 1 || d[0].GetKey() != "package:nginx" {
		t.Fatalf("drift repaired: %v", d)
	}

	// Stored as decoded: the store keeps the command's report itself (no
	// copy), and it reads the same as one applied with decoded results.
	s := New()
	s.ApplyReports(got.GetReportBatch())
	if s.Report("n1") != reports[0] {
		t.Fatal("the store copied a report whose results were already encoded")
	}
	s2 := New()
	s2.ApplyReports(plain.GetReportBatch())
	for _, n := range []string{"n1", "n2", "n3"} {
		if !proto.Equal(s.Report(n), s2.Report(n)) {
			t.Errorf("%s: stored\n%v\nand\n%v", n, s.Report(n), s2.Report(n))
		}
	}
	if !proto.Equal(s.CheckRecord("n1"), s2.CheckRecord("n1")) {
		t.Errorf("drift repairs differ: %v and %v", s.CheckRecord("n1"), s2.CheckRecord("n1"))
	}
}

func TestUnmarshalCommandRefusesAsUnmarshalDoes(t *testing.T) {
	r := &hivev1.Report{Node: "n1", Results: []*hivev1.ResourceResult{{Key: "KEY", Message: "ok"}}}
	good := batchCommand(t, r)
	bad := bytes.Replace(good, []byte("KEY"), []byte("K\xffY"), 1)
	for name, data := range map[string][]byte{
		"a result's key not UTF-8": bad,
		"truncated":                good[:len(good)-2],
	} {
		var c hivev1.Command
		if proto.Unmarshal(data, &c) == nil {
			t.Fatalf("%s: proto.Unmarshal accepts it", name)
		}
		if err := UnmarshalCommand(data, &c); err == nil {
			t.Errorf("%s: UnmarshalCommand accepts it", name)
		}
	}
	// Commands other than a report batch decode as they are.
	other, _ := proto.Marshal(&hivev1.Command{Version: 1, Body: &hivev1.Command_SecretDelete{SecretDelete: &hivev1.SecretDeleteCommand{Name: "x"}}})
	var c hivev1.Command
	if err := UnmarshalCommand(other, &c); err != nil || c.GetSecretDelete().GetName() != "x" {
		t.Fatalf("secret delete: %v %v", &c, err)
	}
}

// FuzzUnmarshalCommand checks UnmarshalCommand against proto.Unmarshal:
// the same inputs refused, and the same command once its results are
// decoded.
func FuzzUnmarshalCommand(f *testing.F) {
	a := reportFromNewerAgent(f)
	a.PublishedSecrets = nil
	f.Add(batchCommand(f, a, &hivev1.Report{Node: "n2"}))
	f.Add(batchCommand(f, &hivev1.Report{Node: "n", Results: []*hivev1.ResourceResult{{Key: "k", Duration: durationpb.New(time.Second)}}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var plain, got hivev1.Command
		perr := proto.Unmarshal(data, &plain)
		gerr := UnmarshalCommand(data, &got)
		if (perr == nil) != (gerr == nil) {
			t.Fatalf("proto.Unmarshal: %v, UnmarshalCommand: %v", perr, gerr)
		}
		if perr != nil {
			return
		}
		if w := whole(t, &got); !proto.Equal(w, &plain) {
			t.Fatalf("UnmarshalCommand gives\n%v\nproto.Unmarshal\n%v", w, &plain)
		}
	})
}
