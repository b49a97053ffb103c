package fsm

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// reportBatch is a batch as the leader writes it: n nodes' reports of a
// few resources each.
func reportBatch(n int) *hivev1.Command {
	var reports []*hivev1.Report
	for i := 0; i < n; i++ {
		r := &hivev1.Report{
			Node: fmt.Sprintf("web-%04d", i), Generation: 3, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: uint64(i + 1),
			StateHash: fmt.Sprintf("%064x", i*7919), Finished: timestamppb.New(t0.AsTime().Add(time.Duration(i) * time.Millisecond)),
		}
		for j, kind := range []string{"package:nginx", "file:/etc/nginx/nginx.conf", "service:nginx", "firewall:web", "package:curl"} {
			res := &hivev1.ResourceResult{Key: kind, Outcome: hivev1.Outcome_OUTCOME_OK, Duration: durationpb.New(time.Duration(i+j) * time.Microsecond)}
			if j == 2 && i%10 == 0 {
				res.Outcome, res.Message = hivev1.Outcome_OUTCOME_FAILED, "unit nginx.service failed to start"
			}
			r.Results = append(r.Results, res)
		}
		reports = append(reports, r)
	}
	return &hivev1.Command{Time: t0, Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: reports}}}
}

// A packed report batch is several times smaller than the plain one and
// applies to exactly the same state.
func TestPackedBatchAppliesAsPlain(t *testing.T) {
	c := reportBatch(200)
	plain, err := Encode(proto.Clone(c).(*hivev1.Command))
	if err != nil {
		t.Fatal(err)
	}
	packed, err := EncodePacked(proto.Clone(c).(*hivev1.Command))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("200 reports: plain %d bytes, packed %d (%.1f:1)", len(plain), len(packed), float64(len(plain))/float64(len(packed)))
	if len(packed)*3 > len(plain) {
		t.Fatalf("packed %d bytes, plain %d: less than 3:1", len(packed), len(plain))
	}
	var env hivev1.Command
	if err := proto.Unmarshal(packed, &env); err != nil || env.GetVersion() != 2 || len(env.GetPacked()) == 0 || env.GetBody() != nil {
		t.Fatalf("packed envelope: version %d, %d packed bytes, body %v, err %v", env.GetVersion(), len(env.GetPacked()), env.GetBody(), err)
	}
	a, b := New(nil), New(nil)
	ra := a.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: plain}).(*hivev1.CommandResult)
	rb := b.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: packed}).(*hivev1.CommandResult)
	if !proto.Equal(ra, rb) {
		t.Fatalf("results differ: plain %v, packed %v", ra, rb)
	}
	if !bytes.Equal(snapshotOf(t, a), snapshotOf(t, b)) {
		t.Fatal("the packed batch applied to a different state than the plain one")
	}
	if got := b.Store().Report("web-0010"); got.GetSeq() != 11 || len(state.Results(got)) != 5 {
		t.Fatalf("report of web-0010 after the packed batch: %v", got)
	}
}

// Small commands stay plain: version 1, byte for byte Encode's.
func TestPackedSmallStaysPlain(t *testing.T) {
	for _, c := range sampleLog() {
		plain, _ := Encode(proto.Clone(c).(*hivev1.Command))
		packed, err := EncodePacked(proto.Clone(c).(*hivev1.Command))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(plain, packed) {
			t.Fatalf("%s (%d bytes) was packed", bodyName(c), len(plain))
		}
	}
}

// A command that arrives with packed content (forwarded to the leader)
// is written as a plain command: the packed field is cleared, and only
// EncodePacked writes version 2.
func TestEncodeClearsPacked(t *testing.T) {
	c := &hivev1.Command{Version: 2, Packed: []byte("smuggled"), Time: t0,
		Body: &hivev1.Command_PeerRemove{PeerRemove: &hivev1.PeerRemoveCommand{Name: "c2"}}}
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	var got hivev1.Command
	if err := proto.Unmarshal(b, &got); err != nil || got.GetVersion() != 1 || got.GetPacked() != nil || got.GetPeerRemove().GetName() != "c2" {
		t.Fatalf("encoded: version %d, packed %q, body %v, err %v", got.GetVersion(), got.GetPacked(), got.GetBody(), err)
	}
}

func deflate(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

// Malformed packed entries halt the server with UnknownCommandError, as
// any entry it cannot apply does; none is skipped or half applied.
func TestPackedRefusals(t *testing.T) {
	plain, _ := Encode(reportBatch(3))
	packedOK, _ := EncodePacked(reportBatch(50))
	nested, _ := proto.Marshal(&hivev1.Command{Version: 2, Packed: deflate(t, packedOK)})
	env := func(c *hivev1.Command) []byte { b, _ := proto.Marshal(c); return b }
	big := deflate(t, make([]byte, MaxUnpacked+1))
	for name, data := range map[string][]byte{
		"no packed content": env(&hivev1.Command{Version: 2}),
		"body beside packed": env(&hivev1.Command{Version: 2, Packed: deflate(t, plain),
			Body: &hivev1.Command_PeerRemove{PeerRemove: &hivev1.PeerRemoveCommand{Name: "c2"}}}),
		"ignorable beside packed": env(&hivev1.Command{Version: 2, Ignorable: true, Packed: deflate(t, plain)}),
		"not deflate":             env(&hivev1.Command{Version: 2, Packed: []byte("not deflate at all")}),
		"truncated deflate":       env(&hivev1.Command{Version: 2, Packed: deflate(t, plain)[:20]}),
		"not a command inside":    env(&hivev1.Command{Version: 2, Packed: deflate(t, []byte{0xff, 0xff, 0xff})}),
		"packed inside packed":    nested,
		"inflates past the limit": env(&hivev1.Command{Version: 2, Packed: big}),
	} {
		t.Run(name, func(t *testing.T) {
			f := New(nil)
			defer func() {
				r := recover()
				var uc *UnknownCommandError
				if err, ok := r.(error); !ok || !errors.As(err, &uc) {
					t.Fatalf("panic = %v, want *UnknownCommandError", r)
				}
				if f.Store().Index() != 0 {
					t.Fatalf("index advanced to %d", f.Store().Index())
				}
			}()
			f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data})
		})
	}
}

func BenchmarkEncodePacked(b *testing.B) {
	c := reportBatch(200)
	plain, _ := Encode(c)
	for _, bc := range []struct {
		name string
		enc  func(*hivev1.Command) ([]byte, error)
	}{{"plain", Encode}, {"packed", EncodePacked}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(plain)))
			var n int
			for b.Loop() {
				out, err := bc.enc(c)
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			b.ReportMetric(float64(n), "entry-bytes")
		})
		data, _ := bc.enc(c)
		b.Run(bc.name+"/decode", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				if _, err := Decode(1, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
