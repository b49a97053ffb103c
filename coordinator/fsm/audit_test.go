package fsm

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestAuditRecordedWithWrite applies audited commands (an applied push, a
// rejected one, an audit-only entry) and checks the audit log, then that
// a snapshot carries it to a restored FSM, and that the log stays bounded.
func TestAuditRecordedWithWrite(t *testing.T) {
	site := &hivev1.Site{Name: "s"}
	info := func(s string) *hivev1.AuditInfo {
		return &hivev1.AuditInfo{Identity: "admin:alice", Rpc: "/hive.v1.CoordinatorService/Push", Summary: s}
	}
	cmds := []*hivev1.Command{
		{Time: t0, Audit: info("first"), Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "aa", Site: site}}}},
		{Time: t0, Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "bb", Site: site}, BaseGeneration: 1}}},
		{Time: t0, Audit: info("stale"), Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "cc", Site: site}, BaseGeneration: 1}}},
		{Time: t0, Ignorable: true, Audit: info("peer added")},
	}
	var entries [][]byte
	for _, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, b)
	}
	f := New(nil)
	res := applyAll(t, f, entries)
	if res[2].GetReason() != state.ReasonStaleBase || res[3].GetError() != "" {
		t.Fatalf("results: %v", res)
	}
	check := func(f *FSM) {
		t.Helper()
		got := f.Store().Audit(time.Time{}, 0)
		if len(got) != 3 {
			t.Fatalf("audit entries: %v", got)
		}
		want := []struct {
			index            uint64
			command, summary string
			reason           string
		}{{1, "push", "first", ""}, {3, "push", "stale", state.ReasonStaleBase}, {4, "", "peer added", ""}}
		for i, w := range want {
			e := got[i]
			if e.GetIndex() != w.index || e.GetCommand() != w.command || e.GetSummary() != w.summary || e.GetReason() != w.reason ||
				e.GetIdentity() != "admin:alice" || !e.GetTime().AsTime().Equal(t0.AsTime()) {
				t.Errorf("entry %d = %v, want %+v", i, e, w)
			}
		}
		if l := f.Store().Audit(time.Time{}, 1); len(l) != 1 || l[0].GetIndex() != 4 {
			t.Errorf("limit 1: %v", l)
		}
		if l := f.Store().Audit(t0.AsTime().Add(time.Second), 0); len(l) != 0 {
			t.Errorf("since after: %v", l)
		}
	}
	check(f)

	g := New(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, f)))); err != nil {
		t.Fatal(err)
	}
	check(g)
}

// TestAuditBounded fills the audit log past its bound: the oldest entries
// go, order is kept, and a snapshot round trip keeps the same entries.
func TestAuditBounded(t *testing.T) {
	f := New(nil)
	n := state.MaxAuditEntries + 25
	for i := 1; i <= n; i++ {
		c := &hivev1.Command{Time: timestamppb.New(t0.AsTime().Add(time.Duration(i) * time.Second)), Ignorable: true,
			Audit: &hivev1.AuditInfo{Identity: "dev", Summary: "x"}}
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		f.Apply(&raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: b})
	}
	got := f.Store().Audit(time.Time{}, 0)
	if len(got) != state.MaxAuditEntries || got[0].GetIndex() != 26 || got[len(got)-1].GetIndex() != uint64(n) {
		t.Fatalf("bounded log: %d entries, first %d, last %d", len(got), got[0].GetIndex(), got[len(got)-1].GetIndex())
	}
	for i := 1; i < len(got); i++ {
		if got[i].GetIndex() != got[i-1].GetIndex()+1 {
			t.Fatalf("out of order at %d", i)
		}
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, f)))); err != nil {
		t.Fatal(err)
	}
	back := g.Store().Audit(time.Time{}, 0)
	if len(back) != len(got) {
		t.Fatalf("restored %d entries, want %d", len(back), len(got))
	}
	for i := range back {
		if !proto.Equal(back[i], got[i]) {
			t.Fatalf("restored entry %d differs", i)
		}
	}
}
