package fsm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var update = flag.Bool("update", false, "rewrite testdata/log-v1.bin")

var t0 = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

// sampleLog is one command of every kind, as the leader would stamp them.
func sampleLog() []*hivev1.Command {
	site := &hivev1.Site{Name: "s", Roles: []*hivev1.Role{{Name: "web"}}}
	return []*hivev1.Command{
		{Time: t0, Body: &hivev1.Command_CoordinatorUpsert{CoordinatorUpsert: &hivev1.CoordinatorUpsertCommand{Name: "c1", GrpcAddr: "10.0.0.1:7400", RaftAddr: "10.0.0.1:7401"}}},
		{Time: t0, Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "aa", Site: site, Author: "alice"}}}},
		{Time: t0, Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "bb", Site: site, Author: "alice"}, BaseGeneration: 1}}},
		{Time: t0, Body: &hivev1.Command_Push{Push: &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "cc", Site: site}, BaseGeneration: 1}}}, // stale: rejected
		{Time: t0, Body: &hivev1.Command_Rollback{Rollback: &hivev1.RollbackCommand{Target: 1, Author: "bob"}}},
		{Time: t0, Body: &hivev1.Command_NodeUpsert{NodeUpsert: &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.1.0.1"}}}},
		{Time: t0, Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "web-1", Generation: 3, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1}}}}},
		{Time: t0, Body: &hivev1.Command_SecretSet{SecretSet: &hivev1.SecretSetCommand{Name: "k", Sealed: []byte{1, 2}, KeyId: "id1", Author: "alice"}}},
		{Time: t0, Body: &hivev1.Command_SecretSet{SecretSet: &hivev1.SecretSetCommand{Name: "gone", Sealed: []byte{3}, KeyId: "id1"}}},
		{Time: t0, Body: &hivev1.Command_SecretDelete{SecretDelete: &hivev1.SecretDeleteCommand{Name: "gone"}}},
		{Time: t0, Body: &hivev1.Command_BootstrapTokenCreate{BootstrapTokenCreate: &hivev1.BootstrapTokenCreateCommand{TokenSha256: "t", Node: "web-2", Expires: timestamppb.New(t0.AsTime().Add(time.Hour))}}},
		{Time: t0, Body: &hivev1.Command_BootstrapTokenRedeem{BootstrapTokenRedeem: &hivev1.BootstrapTokenRedeemCommand{TokenSha256: "t", Node: "web-2"}}},
		{Time: t0, Body: &hivev1.Command_CoordinatorUpsert{CoordinatorUpsert: &hivev1.CoordinatorUpsertCommand{Name: "c2"}}},
		{Time: t0, Body: &hivev1.Command_PeerRemove{PeerRemove: &hivev1.PeerRemoveCommand{Name: "c2"}}},
		{Time: t0, Body: &hivev1.Command_NodeRevoke{NodeRevoke: &hivev1.NodeRevokeCommand{Node: "web-8", Cutoff: true, Serials: []string{"ab"}, Author: "alice"}}},
		{Time: t0, Body: &hivev1.Command_NodeRemove{NodeRemove: &hivev1.NodeRemoveCommand{Node: "web-8", Author: "alice"}}},
		// Not in log-v1.bin: identities and operator labels.
		{Time: t0, Body: &hivev1.Command_NodeUpsert{NodeUpsert: &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.1.0.1"},
			Identity: &hivev1.NodeIdentity{Source: "certificate", Labels: map[string]string{"tier": "web"}, Serial: "0a"}}}},
		{Time: t0, Body: &hivev1.Command_NodeLabel{NodeLabel: &hivev1.NodeLabelCommand{Name: "web-1", Set: map[string]string{"zone": "a"}, Author: "alice"}}},
		// Not in log-v1.bin: maintenance and reboots (bodies 60-64).
		{Time: t0, Body: &hivev1.Command_MaintenanceSet{MaintenanceSet: &hivev1.MaintenanceSetCommand{Node: "web-1", Reason: "disk", Author: "admin:alice"}}},
		{Time: t0, Body: &hivev1.Command_MaintenanceClear{MaintenanceClear: &hivev1.MaintenanceClearCommand{Node: "web-1", Author: "admin:alice"}}},
		{Time: t0, Body: &hivev1.Command_RebootRequest{RebootRequest: &hivev1.RebootRequestCommand{Nodes: []string{"web-1"}, MaxParallel: 2, Author: "admin:alice"}}},
		{Time: t0, Body: &hivev1.Command_RebootStep{RebootStep: &hivev1.RebootStepCommand{Node: "web-1", From: hivev1.RebootState_REBOOT_STATE_QUEUED, To: hivev1.RebootState_REBOOT_STATE_DRAINING}}},
		{Time: t0, Body: &hivev1.Command_RebootCancel{RebootCancel: &hivev1.RebootCancelCommand{Author: "admin:alice"}}},
	}
}

func applyAll(t *testing.T, f *FSM, entries [][]byte) []*hivev1.CommandResult {
	t.Helper()
	var out []*hivev1.CommandResult
	for i, e := range entries {
		r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e})
		out = append(out, r.(*hivev1.CommandResult))
	}
	return out
}

func checkReplayed(t *testing.T, f *FSM, res []*hivev1.CommandResult) {
	t.Helper()
	s := f.Store()
	if s.CurrentNumber() != 3 || s.Current().GetRollbackOf() != 1 || s.Current().GetSha256() != "aa" {
		t.Fatalf("generations: current %d %v", s.CurrentNumber(), s.Current())
	}
	if res[3].GetReason() != "stale_base" {
		t.Fatalf("stale push result = %v", res[3])
	}
	if s.Node("web-1") == nil || s.Report("web-1").GetGeneration() != 3 {
		t.Fatal("registry or report missing")
	}
	if s.Secret("k") == nil || s.Secret("gone") != nil {
		t.Fatal("secrets wrong")
	}
	if !s.Token("t").GetUsed() || s.Coordinator("c1") == nil || s.Coordinator("c2") != nil {
		t.Fatal("tokens or coordinators wrong")
	}
	if s.Index() != uint64(len(res)) {
		t.Fatalf("index = %d", s.Index())
	}
}

func encodeAll(t *testing.T) [][]byte {
	var out [][]byte
	for _, c := range sampleLog() {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestApplyEveryCommand(t *testing.T) {
	f := New(nil)
	var changes Change
	f.OnApply = func(c Change) { changes |= c }
	res := applyAll(t, f, encodeAll(t))
	checkReplayed(t, f, res)
	if l, src := state.TrustedLabels(f.Store().Node("web-1")); l["tier"] != "web" || l["zone"] != "a" || src["zone"] != "operator" {
		t.Fatalf("trusted labels = %v %v", l, src)
	}
	if e := f.Store().RebootEntry("web-1"); e.GetState() != hivev1.RebootState_REBOOT_STATE_DRAINING || e.GetId() == 0 || f.Store().Maintenance("web-1") != nil {
		t.Fatalf("reboot entry %v, maintenance %v", e, f.Store().Maintenance("web-1"))
	}
	want := ChangeGeneration | ChangeRegistry | ChangeStatus | ChangeSecrets | ChangeCoordinators | ChangeTokens | ChangeRevocations | ChangeRollout
	if changes != want {
		t.Fatalf("changes = %b, want %b", changes, want)
	}
}

// TestReplayV1Log applies a log written by format version 1 (committed in
// testdata): a new server must keep applying old logs identically.
func TestReplayV1Log(t *testing.T) {
	path := filepath.Join("testdata", "log-v1.bin")
	if *update {
		var buf bytes.Buffer
		for _, e := range encodeAll(t) {
			_ = binary.Write(&buf, binary.BigEndian, uint32(len(e)))
			buf.Write(e)
		}
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries [][]byte
	r := bytes.NewReader(data)
	for {
		var n uint32
		if err := binary.Read(r, binary.BigEndian, &n); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		e := make([]byte, n)
		if _, err := io.ReadFull(r, e); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	f := New(nil)
	checkReplayed(t, f, applyAll(t, f, entries))
	// Labels of old entries were the agent's own: they replay as facts.
	n := f.Store().Node("web-1")
	if l, _ := state.TrustedLabels(n); len(l) != 0 || n.GetLabels()["tier"] != "web" {
		t.Fatalf("old node record: trusted %v, reported %v", l, n.GetLabels())
	}
}

func TestUnknownCommandHalts(t *testing.T) {
	unknownBody := func(ignorable bool) []byte {
		// A command with a body field number this version does not know
		// (an unknown field stays unknown: no body is set).
		c := &hivev1.Command{Version: plainVersion, Ignorable: ignorable, Time: t0}
		b, _ := proto.Marshal(c)
		return append(b, 0xa2, 0x06, 0x00) // field 100, length 0
	}
	future, _ := proto.Marshal(&hivev1.Command{Version: 99, Body: &hivev1.Command_PeerRemove{PeerRemove: &hivev1.PeerRemoveCommand{Name: "x"}}})
	for name, data := range map[string][]byte{
		"unknown body":   unknownBody(false),
		"future version": future,
		"garbage":        {0xff, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			f := New(nil)
			defer func() {
				r := recover()
				var uc *UnknownCommandError
				if err, ok := r.(error); !ok || !errors.As(err, &uc) {
					t.Fatalf("panic = %v, want *UnknownCommandError", r)
				}
			}()
			f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data})
		})
	}
	// Ignorable: skipped with a result, index advances, nothing else.
	f := New(nil)
	r := f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: unknownBody(true)}).(*hivev1.CommandResult)
	if r.GetReason() != "ignored" || f.Store().Index() != 7 {
		t.Fatalf("ignorable = %v index %d", r, f.Store().Index())
	}
}

func TestSnapshotRestore(t *testing.T) {
	f := New(nil)
	res := applyAll(t, f, encodeAll(t))
	g := New(nil)
	restored := false
	g.OnApply = func(c Change) { restored = c == ChangeAll }
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, f)))); err != nil {
		t.Fatal(err)
	}
	if !restored || g.Restores() != 1 {
		t.Fatal("restore not signalled")
	}
	checkReplayed(t, g, res)
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("junk")))); err == nil {
		t.Fatal("junk snapshot restored")
	}
	if g.Store().CurrentNumber() != 3 {
		t.Fatal("failed restore changed the state")
	}
}

type memSink struct{ bytes.Buffer }

// snapshotOf returns f's snapshot as Persist writes it.
func snapshotOf(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

func FuzzDecode(f *testing.F) {
	for _, c := range sampleLog() {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte{})
	packed, _ := EncodePacked(reportBatch(20))
	f.Add(packed)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(1, data)
		if err != nil {
			var uc *UnknownCommandError
			if !errors.As(err, &uc) {
				t.Fatalf("error type %T", err)
			}
			return
		}
		if c == nil {
			return // ignorable
		}
		// A decodable command applies without panicking and yields a result.
		fs := New(nil)
		r := fs.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		if _, ok := r.(*hivev1.CommandResult); !ok {
			t.Fatalf("result %T", r)
		}
	})
}

// TestWaitApplied: a waiter for index N returns once the command at N is
// in the store (not before), a cancelled wait returns ctx's error, and a
// restore advances the applied index to the snapshot's.
func TestWaitApplied(t *testing.T) {
	f := New(nil)
	entries := encodeAll(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.WaitApplied(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait before any apply = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- f.WaitApplied(context.Background(), 2) }()
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: entries[0]})
	select {
	case err := <-done:
		t.Fatalf("wait for 2 returned %v after applying 1", err)
	case <-time.After(20 * time.Millisecond):
	}
	f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: entries[1]})
	if err := <-done; err != nil || f.Applied() != 2 || f.Store().Index() != 2 {
		t.Fatalf("wait = %v, applied %d, store index %d", err, f.Applied(), f.Store().Index())
	}

	src := New(nil)
	applyAll(t, src, entries)
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if err := f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if err := f.WaitApplied(context.Background(), uint64(len(entries))); err != nil || f.Applied() != uint64(len(entries)) {
		t.Fatalf("after restore: applied %d, %v", f.Applied(), err)
	}
}
