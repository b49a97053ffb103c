package state

import (
	"bytes"
	"errors"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func push(s *Store, sha string, base uint64, force bool) *hivev1.CommandResult {
	return s.Push(t0, &hivev1.PushCommand{
		Generation:     &hivev1.Generation{Sha256: sha, Site: &hivev1.Site{Name: sha}, Author: "a"},
		BaseGeneration: base, Force: force,
	})
}

func TestPushRules(t *testing.T) {
	s := New()
	tests := []struct {
		name      string
		sha       string
		base      uint64
		force     bool
		wantGen   uint64
		unchanged bool
		reason    string
	}{
		{"first", "a", 0, false, 1, false, ""},
		{"identical is a no-op", "a", 0, false, 1, true, ""},
		{"stale base refused", "b", 0, false, 0, false, ReasonStaleBase},
		{"current base accepted", "b", 1, false, 2, false, ""},
		{"stale but forced", "c", 0, true, 3, false, ""},
		{"future base refused", "d", 9, false, 0, false, ReasonStaleBase},
	}
	for _, tt := range tests {
		r := push(s, tt.sha, tt.base, tt.force)
		if r.GetReason() != tt.reason || (tt.reason == "" && (r.GetGeneration() != tt.wantGen || r.GetUnchanged() != tt.unchanged)) {
			t.Errorf("%s: got %v", tt.name, r)
		}
	}
	if r := s.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "x"}}); r.GetReason() != ReasonInvalid {
		t.Errorf("push without site: %v", r)
	}
	if s.CurrentNumber() != 3 {
		t.Fatalf("current = %d", s.CurrentNumber())
	}
	for i := uint64(1); i <= 3; i++ {
		g := s.Generation(i)
		if g.GetNumber() != i || g.GetParent() != i-1 || !g.GetTime().AsTime().Equal(t0) {
			t.Errorf("generation %d = %v", i, g)
		}
	}
}

func TestRollback(t *testing.T) {
	s := New()
	push(s, "a", 0, false)
	push(s, "b", 1, false)
	if r := s.Rollback(t0, &hivev1.RollbackCommand{Target: 5}); r.GetReason() != ReasonNotFound {
		t.Fatalf("rollback to missing: %v", r)
	}
	if r := s.Rollback(t0, &hivev1.RollbackCommand{Target: 1, BaseGeneration: 1}); r.GetReason() != ReasonStaleBase {
		t.Fatalf("stale rollback: %v", r)
	}
	r := s.Rollback(t0, &hivev1.RollbackCommand{Target: 1, Author: "bob"})
	if r.GetGeneration() != 3 {
		t.Fatalf("rollback = %v", r)
	}
	g := s.Current()
	if g.GetSha256() != "a" || g.GetRollbackOf() != 1 || g.GetParent() != 2 || g.GetAuthor() != "bob" || g.GetMessage() != "rollback to generation 1" {
		t.Fatalf("rollback generation = %v", g)
	}
	if r := s.Rollback(t0, &hivev1.RollbackCommand{Target: 1}); !r.GetUnchanged() || r.GetGeneration() != 3 {
		t.Fatalf("rollback to the current content: %v", r)
	}
}

func TestReportsOrdering(t *testing.T) {
	s := New()
	at := func(sec int) *timestamppb.Timestamp { return timestamppb.New(t0.Add(time.Duration(sec) * time.Second)) }
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "n", Seq: 5, Finished: at(5), Generation: 5}}})
	// A replayed older report neither newer by seq nor by time: skipped.
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "n", Seq: 4, Finished: at(4), Generation: 4}}})
	if s.Report("n").GetGeneration() != 5 {
		t.Fatal("older report overwrote a newer one")
	}
	// An agent restarted with its sequence reset, reporting later: kept.
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "n", Seq: 1, Finished: at(9), Generation: 6,
		PublishedSecrets: map[string][]byte{"tok": []byte("x")}}}})
	if r := s.Report("n"); r.GetGeneration() != 6 || r.GetPublishedSecrets() != nil {
		t.Fatalf("report after restart = %v", r)
	}
}

func TestRegistryVersion(t *testing.T) {
	s := New()
	up := func(addr string) *hivev1.CommandResult {
		return s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "n", Labels: map[string]string{"a": "b"}, Addresses: []string{addr}})
	}
	up("1")
	v := s.RegistryVersion()
	if r := up("1"); !r.GetUnchanged() || s.RegistryVersion() != v {
		t.Fatal("unchanged facts bumped the registry")
	}
	up("2")
	if s.RegistryVersion() == v {
		t.Fatal("changed facts did not bump the registry")
	}
}

func TestTokens(t *testing.T) {
	s := New()
	s.CreateToken(&hivev1.BootstrapTokenCreateCommand{TokenSha256: "h", Node: "n1", Expires: timestamppb.New(t0.Add(time.Hour))})
	cases := []struct {
		at     time.Time
		node   string
		reason string
	}{
		{t0, "n2", ReasonTokenNode},
		{t0.Add(2 * time.Hour), "n1", ReasonTokenExpired},
		{t0, "n1", ""},
		{t0, "n1", ReasonTokenUsed},
	}
	for i, c := range cases {
		if r := s.RedeemToken(c.at, &hivev1.BootstrapTokenRedeemCommand{TokenSha256: "h", Node: c.node}); r.GetReason() != c.reason {
			t.Errorf("case %d: %v, want %q", i, r, c.reason)
		}
	}
	if r := s.RedeemToken(t0, &hivev1.BootstrapTokenRedeemCommand{TokenSha256: "nope"}); r.GetReason() != ReasonNotFound {
		t.Errorf("unknown token: %v", r)
	}
}

func filled() *Store {
	s := New()
	push(s, "a", 0, false)
	push(s, "b", 1, false)
	s.Rollback(t0, &hivev1.RollbackCommand{Target: 1})
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "n1", Labels: map[string]string{"x": "y"}, Addresses: []string{"10.0.0.1"}})
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "n2", Identity: &hivev1.NodeIdentity{Source: SourceCertificate, Labels: map[string]string{"tier": "web"}, Serial: "0a", NotAfter: timestamppb.New(t0)}})
	s.LabelNode(t0, &hivev1.NodeLabelCommand{Name: "n2", Set: map[string]string{"zone": "b"}})
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "n1", Seq: 1, Generation: 3}}})
	s.SetSecret(t0, &hivev1.SecretSetCommand{Name: "k", Sealed: []byte{1, 2, 3}, KeyId: "id", Author: "a"})
	s.CreateToken(&hivev1.BootstrapTokenCreateCommand{TokenSha256: "h", Expires: timestamppb.New(t0)})
	s.UpsertCoordinator(t0, &hivev1.CoordinatorUpsertCommand{Name: "c1", GrpcAddr: "g", RaftAddr: "r"})
	s.SetMaintenance(t0, &hivev1.MaintenanceSetCommand{Node: "n2", Reason: "disk", Author: "admin:alice"})
	s.RequestReboot(t0, &hivev1.RebootRequestCommand{Nodes: []string{"n1"}, MaxParallel: 2, Author: "admin:alice"})
	s.SetIndex(42)
	return s
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := filled()
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	r, err := ReadSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	snap2, idx2 := r.Capture()
	if idx2 != 42 || !proto.Equal(snap, snap2) {
		t.Fatalf("round trip differs:\n%v\n%v", snap, snap2)
	}
	if l, src := TrustedLabels(r.Node("n2")); l["tier"] != "web" || src["zone"] != SourceOperator {
		t.Fatalf("trusted labels after restore: %v %v", l, src)
	}
	// Deterministic bytes.
	var buf2 bytes.Buffer
	if err := WriteSnapshot(&buf2, snap2, idx2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), buf2.Bytes()) {
		t.Fatal("snapshot encoding is not deterministic")
	}
}

func TestReadSnapshotRejects(t *testing.T) {
	s := filled()
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	future := append([]byte(nil), good...)
	future[11] = 99
	gap := proto.Clone(snap).(*hivev1.StateSnapshot)
	gap.Generations = gap.Generations[1:]
	var gapBuf bytes.Buffer
	_ = WriteSnapshot(&gapBuf, gap, idx)
	for name, data := range map[string][]byte{
		"empty":          nil,
		"bad magic":      append([]byte("NOTSNAPS"), good[8:]...),
		"future version": future,
		"garbage body":   append(append([]byte(nil), good[:20]...), 0xff, 0xff, 0xff),
		"generation gap": gapBuf.Bytes(),
	} {
		if _, err := ReadSnapshot(bytes.NewReader(data)); !errors.Is(err, ErrSnapshotFormat) {
			t.Errorf("%s: err = %v, want ErrSnapshotFormat", name, err)
		}
	}
}

func FuzzReadSnapshot(f *testing.F) {
	s := filled()
	snap, idx := s.Capture()
	var buf bytes.Buffer
	_ = WriteSnapshot(&buf, snap, idx)
	f.Add(buf.Bytes())
	f.Add([]byte("HIVESNAP\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ReadSnapshot(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrSnapshotFormat) {
				t.Fatalf("error not wrapping ErrSnapshotFormat: %v", err)
			}
			return
		}
		// Whatever was accepted must re-encode and read back equal.
		snap, idx := st.Capture()
		var out bytes.Buffer
		if err := WriteSnapshot(&out, snap, idx); err != nil {
			t.Fatal(err)
		}
		st2, err := ReadSnapshot(&out)
		if err != nil {
			t.Fatalf("re-read: %v", err)
		}
		snap2, _ := st2.Capture()
		if !proto.Equal(snap, snap2) {
			t.Fatal("accepted snapshot does not round-trip")
		}
		for i := uint64(1); i <= st.CurrentNumber(); i++ {
			if st.Generation(i).GetNumber() != i {
				t.Fatal("gap accepted")
			}
		}
	})
}

// TestNodeOrdinals: ordinals follow registration order and survive new
// facts; entries without one (written before ordinals existed) record 0,
// so a replica that starts from a snapshot and one that replays the log
// agree wherever the snapshot was cut; a proposal raises a lagging
// counter; ordinals stay unique when two proposals carry the same value.
func TestNodeOrdinals(t *testing.T) {
	cmds := []*hivev1.NodeUpsertCommand{
		{Name: "old-b"}, {Name: "old-a"}, // legacy entries: no ordinal
		{Name: "db-2", Ordinal: 1}, {Name: "db-0", Ordinal: 2},
		{Name: "db-2", Addresses: []string{"10.0.0.2"}, Ordinal: 3}, // new facts
		{Name: "x", Ordinal: 3}, {Name: "y", Ordinal: 3}, // same proposal twice
		{Name: "z", Ordinal: 10}, // a leader ahead of this replica
		{Name: "w", Ordinal: 4},
	}
	want := map[string]uint64{"old-b": 0, "old-a": 0, "db-2": 1, "db-0": 2, "x": 3, "y": 4, "z": 10, "w": 11}
	check := func(what string, s *Store) {
		t.Helper()
		for name, o := range want {
			if got := s.Node(name).GetOrdinal(); got != o {
				t.Fatalf("%s: %s has ordinal %d, want %d", what, name, got, o)
			}
		}
		if s.NextOrdinal() != 12 {
			t.Fatalf("%s: next ordinal %d, want 12", what, s.NextOrdinal())
		}
	}
	full := New()
	for _, c := range cmds {
		full.UpsertNode(t0, proto.Clone(c).(*hivev1.NodeUpsertCommand))
	}
	check("log replay", full)
	for cut := 0; cut <= len(cmds); cut++ {
		s := New()
		for _, c := range cmds[:cut] {
			s.UpsertNode(t0, proto.Clone(c).(*hivev1.NodeUpsertCommand))
		}
		snap, idx := s.Capture()
		var buf bytes.Buffer
		if err := WriteSnapshot(&buf, snap, idx); err != nil {
			t.Fatal(err)
		}
		r, err := ReadSnapshot(&buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds[cut:] {
			r.UpsertNode(t0, proto.Clone(c).(*hivev1.NodeUpsertCommand))
		}
		check("snapshot after "+string(rune('0'+cut))+" entries", r)
	}
}
