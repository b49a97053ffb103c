package fsm

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRevokeRemoveApplyAndRestore applies revocations and a removal
// through the FSM, checks what they signal, and that a snapshot restored
// on another FSM denies the same certificates.
func TestRevokeRemoveApplyAndRestore(t *testing.T) {
	f := New(nil)
	var changes []Change
	f.OnApply = func(c Change) { changes = append(changes, c) }
	t1 := t0.AsTime().Add(time.Minute)
	log := []*hivev1.Command{
		{Time: t0, Body: &hivev1.Command_NodeUpsert{NodeUpsert: &hivev1.NodeUpsertCommand{Name: "web-1", Ordinal: 1}}},
		{Time: t0, Body: &hivev1.Command_NodeRevoke{NodeRevoke: &hivev1.NodeRevokeCommand{Node: "web-2", Serials: []string{"ab"}}}},
		{Time: t0, Body: &hivev1.Command_NodeRevoke{NodeRevoke: &hivev1.NodeRevokeCommand{Node: "web-2", Serials: []string{"ab"}}}}, // unchanged
		{Time: t0, Body: &hivev1.Command_NodeRevoke{NodeRevoke: &hivev1.NodeRevokeCommand{Node: "web-3"}}},                          // invalid
		{Time: t0, Body: &hivev1.Command_NodeRemove{NodeRemove: &hivev1.NodeRemoveCommand{Node: "web-1", Author: "ops"}}},
		{Time: t0, Body: &hivev1.Command_NodeRemove{NodeRemove: &hivev1.NodeRemoveCommand{Node: "ghost"}}}, // not found
	}
	var res []*hivev1.CommandResult
	for i, c := range log {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		res = append(res, f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(*hivev1.CommandResult))
	}
	if res[3].GetReason() != "invalid" || res[5].GetReason() != "not_found" || res[4].GetError() != "" {
		t.Fatalf("results = %v", res)
	}
	want := []Change{ChangeRegistry, ChangeRevocations, 0, 0, ChangeRevocations | ChangeRegistry | ChangeStatus | ChangeSecrets, 0}
	for i := range want {
		if changes[i] != want[i] {
			t.Errorf("command %d signalled %b, want %b", i, changes[i], want[i])
		}
	}
	g := New(nil)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, f)))); err != nil {
		t.Fatal(err)
	}
	st := g.Store()
	if st.Node("web-1") != nil {
		t.Fatal("removed node restored into the registry")
	}
	if _, ok := st.Denied("web-1", t0.AsTime(), "1"); !ok {
		t.Fatal("restored state does not deny the removed node's certificates")
	}
	if _, ok := st.Denied("web-1", t1, "1"); ok {
		t.Fatal("a certificate issued after the removal is denied")
	}
	if _, ok := st.Denied("web-2", t1, "ab"); !ok {
		t.Fatal("restored state lost a revoked serial")
	}
}
