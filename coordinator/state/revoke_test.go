package state

import (
	"bytes"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestNormalizeSerial(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"0A:1b:FF", "a1bff"},
		{"0x00ff", "ff"},
		{"  1f ", "1f"},
		{"", ""},
		{"0", ""},
		{"xyz", ""},
		{"-1", ""},
	} {
		got, err := NormalizeSerial(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("NormalizeSerial(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestRevokeCutoffAndSerials(t *testing.T) {
	s := New()
	t1 := t0.Add(time.Hour)
	if r := s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "web-1"}); r.GetReason() != ReasonInvalid {
		t.Fatalf("revoke without cut-off or serial: %v", r)
	}
	if r := s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "web/1", Cutoff: true}); r.GetReason() != ReasonInvalid {
		t.Fatalf("revoke of a bad name: %v", r)
	}
	if r := s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "web-1", Serials: []string{"0A"}}); r.GetReason() != ReasonInvalid {
		t.Fatalf("serial not in normal form: %v", r)
	}
	if s.Revocation("web-1") != nil {
		t.Fatal("a refused revocation left an entry")
	}
	// Serials only: other certificates of the node stay good.
	if r := s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "web-1", Serials: []string{"ab", "12"}, Author: "ops"}); r.GetError() != "" {
		t.Fatal(r)
	}
	if why, ok := s.Denied("web-1", t0.Add(-time.Hour), "ab"); !ok || why != "revoked at 2026-01-02T03:04:05Z (serial ab on the deny list)" {
		t.Fatalf("listed serial: %q %v", why, ok)
	}
	if _, ok := s.Denied("web-1", t0.Add(-time.Hour), "cd"); ok {
		t.Fatal("an unlisted serial is denied without a cut-off")
	}
	if r := s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "web-1", Serials: []string{"ab"}}); !r.GetUnchanged() {
		t.Fatalf("revoking a listed serial again: %v", r)
	}
	// A cut-off denies every certificate not issued after it.
	if r := s.Revoke(t1, &hivev1.NodeRevokeCommand{Node: "web-1", Cutoff: true, Author: "ops", Reason: "stolen"}); r.GetError() != "" || r.GetUnchanged() {
		t.Fatal(r)
	}
	for _, tt := range []struct {
		nb     time.Time
		denied bool
	}{{t1.Add(-time.Second), true}, {t1, true}, {t1.Add(time.Second), false}} {
		why, ok := s.Denied("web-1", tt.nb, "99")
		if ok != tt.denied || (ok && why != "revoked at 2026-01-02T04:04:05Z (with every certificate of the node issued until then)") {
			t.Errorf("NotBefore %v: %q %v", tt.nb, why, ok)
		}
	}
	// The cut-off never moves back.
	if r := s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "web-1", Cutoff: true}); !r.GetUnchanged() {
		t.Fatalf("earlier cut-off: %v", r)
	}
	if got := s.Revocation("web-1"); !got.GetCutoff().AsTime().Equal(t1) || len(got.GetSerials()) != 2 || got.GetReason() != "stolen" {
		t.Fatalf("entry = %v", got)
	}
	if _, ok := s.Denied("web-2", t0, "ab"); ok {
		t.Fatal("another node is denied")
	}
}

func TestRemoveNode(t *testing.T) {
	s := New()
	t1 := t0.Add(time.Minute)
	if r := s.RemoveNode(t1, &hivev1.NodeRemoveCommand{Node: "ghost"}); r.GetReason() != ReasonNotFound {
		t.Fatalf("remove of an unknown node: %v", r)
	}
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "db-1", Labels: map[string]string{"role": "db"}, Ordinal: 1})
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "db-2", Ordinal: 2})
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "db-1", Seq: 1}, {Node: "db-2", Seq: 1}}})
	for _, n := range []string{"db-1/token", "db-1/key", "db-10/token", "shared"} {
		s.SetSecret(t0, &hivev1.SecretSetCommand{Name: n, Sealed: []byte("x"), KeyId: "k"})
	}
	rv, sv := s.RegistryVersion(), s.SecretsVersion()
	r := s.RemoveNode(t1, &hivev1.NodeRemoveCommand{Node: "db-1", Author: "ops"})
	if r.GetError() != "" || r.GetGeneration() != 2 {
		t.Fatalf("remove: %v", r)
	}
	if s.Node("db-1") != nil || s.Report("db-1") != nil || s.Secret("db-1/token") != nil || s.Secret("db-1/key") != nil {
		t.Fatal("the removed node's record, report or published secrets remain")
	}
	if s.Node("db-2") == nil || s.Report("db-2") == nil || s.Secret("db-10/token") == nil || s.Secret("shared") == nil {
		t.Fatal("remove touched another node or an operator secret")
	}
	if s.RegistryVersion() == rv || s.SecretsVersion() == sv {
		t.Fatal("registry or secrets version did not change")
	}
	if why, ok := s.Denied("db-1", t1, "1"); !ok || !strings.HasPrefix(why, "revoked at 2026-01-02T03:05:05Z") {
		t.Fatalf("removed node not revoked: %q %v", why, ok)
	}
	// A report batched before the removal and applied after it is dropped.
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "db-1", Seq: 2}}})
	if s.Report("db-1") != nil {
		t.Fatal("a late report brought the removed node back into status")
	}
	// Removing again is allowed (it is revoked, so known) and moves the cut-off.
	if r := s.RemoveNode(t1.Add(time.Minute), &hivev1.NodeRemoveCommand{Node: "db-1"}); r.GetError() != "" {
		t.Fatal(r)
	}
	// Re-registered (with a new certificate): its reports count again.
	s.UpsertNode(t1, &hivev1.NodeUpsertCommand{Name: "db-1", Ordinal: 3})
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "db-1", Seq: 3}}})
	if s.Report("db-1") == nil {
		t.Fatal("report of the re-registered node dropped")
	}
}

func TestRevocationsSnapshotRoundTrip(t *testing.T) {
	s := New()
	s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "b", Serials: []string{"ff", "1"}, Author: "ops"})
	s.Revoke(t0, &hivev1.NodeRevokeCommand{Node: "a", Cutoff: true, Reason: "lost"})
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "c", Ordinal: 1})
	s.RemoveNode(t0, &hivev1.NodeRemoveCommand{Node: "c"})
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	raw := append([]byte(nil), buf.Bytes()...)
	r, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Revocations()
	if len(got) != 3 || got[0].GetNode() != "a" || got[1].GetNode() != "b" || !got[2].GetRemoved() {
		t.Fatalf("restored deny list = %v", got)
	}
	for _, n := range []string{"a", "b", "c"} {
		if !proto.Equal(r.Revocation(n), s.Revocation(n)) {
			t.Errorf("%s: restored %v, had %v", n, r.Revocation(n), s.Revocation(n))
		}
	}
	if _, ok := r.Denied("b", t0.Add(time.Hour), "ff"); !ok {
		t.Fatal("restored store does not deny a listed serial")
	}
	// Same content, same bytes: replicas snapshot identically.
	snap2, _ := r.Capture()
	var again bytes.Buffer
	if err := WriteSnapshot(&again, snap2, idx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), raw) {
		t.Fatal("snapshot of the restored store differs")
	}
	// A snapshot with a bad entry is refused whole.
	bad := proto.Clone(snap).(*hivev1.StateSnapshot)
	bad.Revocations = append(bad.Revocations, &hivev1.Revocation{Node: "", Cutoff: timestamppb.New(t0)})
	buf.Reset()
	if err := WriteSnapshot(&buf, bad, idx); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(&buf); err == nil {
		t.Fatal("snapshot with a nameless revocation accepted")
	}
}
