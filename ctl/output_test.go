package ctl

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var goldenNow = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func ts(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(goldenNow.Add(-d)) }

func sampleStatus() *hivev1.GetStatusResponse {
	return &hivev1.GetStatusResponse{
		Generation: 7, Server: "c1", RaftIndex: 1234,
		Nodes: []*hivev1.NodeStatus{
			{
				Name: "db-1", Labels: map[string]string{"role": "db", "dc": "fra1"}, Roles: []string{"base", "db"},
				Gossip: hivev1.GossipState_GOSSIP_STATE_ALIVE, AppliedGeneration: 7, DesiredGeneration: 7,
				Phase: hivev1.Phase_PHASE_FAILED, LastReport: ts(42 * time.Second),
				Resources: &hivev1.ResourceCounts{Total: 14, Changed: 2, Failed: 1},
				Errors:    []string{"drbd:r0: drbdadm adjust: exit status 10: peer unreachable"},
				Addresses: []string{"10.0.0.21"}, AgentVersion: "0.1.0",
				Results: []*hivev1.ResourceResult{
					{Key: "package:postgresql-16", Outcome: hivev1.Outcome_OUTCOME_OK, Duration: durationpb.New(12 * time.Millisecond)},
					{Key: "file:/etc/postgresql/16/main/postgresql.conf", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Duration: durationpb.New(3 * time.Millisecond), Drift: true, Message: "content differed"},
					{Key: "drbd:r0", Outcome: hivev1.Outcome_OUTCOME_FAILED, Duration: durationpb.New(1500 * time.Millisecond), Message: "drbdadm adjust: exit status 10"},
					{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Duration: durationpb.New(time.Millisecond), Drift: true, Cause: hivev1.Cause_CAUSE_DRIFT},
				},
				Health: hivev1.Health_HEALTH_FAILING, HealthSince: ts(40 * time.Second),
				Checks: []*hivev1.CheckResult{
					{Name: "builtin/drbd:r0", Kind: "drbd", Failures: 4, Message: "r0: peer db-2 Connecting", Time: ts(2 * time.Second)},
					{Name: "db/pg", Kind: "tcp", Passing: true, Time: ts(3 * time.Second)},
				},
			},
			{
				Name: "web-1", Labels: map[string]string{"role": "web"}, Roles: []string{"base", "web"},
				Gossip: hivev1.GossipState_GOSSIP_STATE_ALIVE, AppliedGeneration: 7, DesiredGeneration: 7,
				Phase: hivev1.Phase_PHASE_CONVERGED, LastReport: ts(5 * time.Minute),
				Resources: &hivev1.ResourceCounts{Total: 9},
				Health:    hivev1.Health_HEALTH_PASSING, HealthSince: ts(2 * time.Hour),
				Checks: []*hivev1.CheckResult{{Name: "web/home", Kind: "http", Passing: true, Time: ts(time.Second)}},
			},
			{
				Name: "web-2", Gossip: hivev1.GossipState_GOSSIP_STATE_SUSPECT, AppliedGeneration: 6, DesiredGeneration: 7,
				Phase: hivev1.Phase_PHASE_APPLYING, LastReport: ts(3 * time.Hour), DryRun: true,
				Resources: &hivev1.ResourceCounts{Total: 9, Planned: 2},
			},
			{Name: "new-1"}, // registered, never reported
		},
	}
}

func sampleMembers() []*hivev1.Member {
	return []*hivev1.Member{
		{Name: "c1", Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, Address: "10.0.0.11:7402", Gossip: hivev1.GossipState_GOSSIP_STATE_ALIVE,
			GrpcAddr: "10.0.0.11:7400", Version: "0.1.0", Raft: hivev1.RaftRole_RAFT_ROLE_LEADER},
		{Name: "c2", Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, Address: "10.0.0.12:7402", Gossip: hivev1.GossipState_GOSSIP_STATE_ALIVE,
			GrpcAddr: "10.0.0.12:7400", Version: "0.1.0", Raft: hivev1.RaftRole_RAFT_ROLE_FOLLOWER},
		{Name: "c3", Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, Address: "10.0.0.13:7402", Gossip: hivev1.GossipState_GOSSIP_STATE_DEAD},
		{Name: "web-1", Kind: hivev1.MemberKind_MEMBER_KIND_AGENT, Address: "10.0.0.31:7402", Gossip: hivev1.GossipState_GOSSIP_STATE_ALIVE,
			Labels: map[string]string{"role": "web", "dc": "fra1"}, Version: "0.1.0"},
	}
}

func sampleHistory() *hivev1.ListGenerationsResponse {
	return &hivev1.ListGenerationsResponse{Current: 3, Generations: []*hivev1.GenerationSummary{
		{Number: 3, Parent: 2, Sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", Author: "admin:alice",
			Message: "nginx 1.27 breaks uploads", Time: ts(10 * time.Minute), RollbackOf: 1, Resources: 20},
		{Number: 2, Parent: 1, Sha256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752", Author: "admin:bob",
			Message: "web: nginx 1.27", Time: ts(2 * time.Hour), Resources: 21},
		{Number: 1, Sha256: "fd61a03af4f77d870fc21e05e7e80678095c92d808cfb3b5c279ee04c74aca13", Author: "dev", Time: ts(48 * time.Hour), Resources: 20},
	}}
}

func sampleDiff() *hivev1.DiffGenerationsResponse {
	return &hivev1.DiffGenerationsResponse{Changes: []*hivev1.ResourceChange{
		{Role: "web", Key: "package:nginx", Kind: hivev1.ChangeKind_CHANGE_KIND_MODIFIED, Diff: "@@ -1 +1 @@\n-version: 1.26.2\n+version: 1.27.0\n"},
		{Role: "web", Key: "file:/etc/nginx/conf.d/upload.conf", Kind: hivev1.ChangeKind_CHANGE_KIND_ADDED},
		{Role: "cache", Kind: hivev1.ChangeKind_CHANGE_KIND_REMOVED},
		{Role: "db", Kind: hivev1.ChangeKind_CHANGE_KIND_MODIFIED, Diff: "-selector: {role: db}\n+selector: {role: db, dc: fra1}\n"},
	}}
}

func sampleSecrets() *hivev1.ListSecretsResponse {
	return &hivev1.ListSecretsResponse{
		Secrets: []*hivev1.SecretInfo{
			{Name: "db-password", Updated: ts(24 * time.Hour), Author: "admin:alice", Referenced: true},
			{Name: "mgr-1/swarm-worker-token", Updated: ts(time.Hour), Author: "agent:mgr-1", Published: true},
			{Name: "old-token", Updated: ts(900 * time.Hour), Author: "admin:bob"},
		},
		Missing: []string{"api-token"},
	}
}

func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		fn   func(*bytes.Buffer) error
	}{
		{"status.table", func(b *bytes.Buffer) error {
			return writeStatusTable(b, statusToJSON(sampleStatus(), false), goldenNow)
		}},
		{"status.json", func(b *bytes.Buffer) error { return writeJSON(b, statusToJSON(sampleStatus(), false)) }},
		{"status-empty.table", func(b *bytes.Buffer) error {
			return writeStatusTable(b, statusToJSON(&hivev1.GetStatusResponse{Generation: 3}, false), goldenNow)
		}},
		{"status-empty.json", func(b *bytes.Buffer) error {
			return writeJSON(b, statusToJSON(&hivev1.GetStatusResponse{}, false))
		}},
		{"status-node.table", func(b *bytes.Buffer) error {
			s := sampleStatus()
			s.Nodes = s.Nodes[:1]
			return writeNodeDetail(b, statusToJSON(s, true), goldenNow)
		}},
		{"status-node.json", func(b *bytes.Buffer) error {
			s := sampleStatus()
			s.Nodes = s.Nodes[:1]
			return writeJSON(b, statusToJSON(s, true))
		}},
		{"members.table", func(b *bytes.Buffer) error { return writeMembersTable(b, membersToJSON(sampleMembers())) }},
		{"members.json", func(b *bytes.Buffer) error { return writeJSON(b, membersToJSON(sampleMembers())) }},
		{"history.table", func(b *bytes.Buffer) error { return writeHistoryTable(b, historyToJSON(sampleHistory())) }},
		{"history.json", func(b *bytes.Buffer) error { return writeJSON(b, historyToJSON(sampleHistory())) }},
		{"history-empty.table", func(b *bytes.Buffer) error {
			return writeHistoryTable(b, historyToJSON(&hivev1.ListGenerationsResponse{}))
		}},
		{"diff.text", func(b *bytes.Buffer) error { return writeDiff(b, diffToJSON(2, 3, sampleDiff())) }},
		{"diff.json", func(b *bytes.Buffer) error { return writeJSON(b, diffToJSON(2, 3, sampleDiff())) }},
		{"diff-none.text", func(b *bytes.Buffer) error {
			return writeDiff(b, diffToJSON(2, 3, &hivev1.DiffGenerationsResponse{}))
		}},
		{"secrets.table", func(b *bytes.Buffer) error { return writeSecretsTable(b, secretsToJSON(sampleSecrets())) }},
		{"secrets.json", func(b *bytes.Buffer) error { return writeJSON(b, secretsToJSON(sampleSecrets())) }},
		{"push.text", func(b *bytes.Buffer) error {
			writePushResult(b, &hivev1.PushResponse{Generation: 8, Sha256: sampleHistory().Generations[0].Sha256, Nodes: []string{"a", "b"}})
			writePushResult(b, &hivev1.PushResponse{Generation: 8, Sha256: sampleHistory().Generations[0].Sha256, Unchanged: true})
			return nil
		}},
		{"push.json", func(b *bytes.Buffer) error {
			return writeJSON(b, pushResultJSON{Generation: 8, SHA256: sampleHistory().Generations[0].Sha256})
		}},
		{"drift.table", func(b *bytes.Buffer) error {
			return writeDriftTable(b, driftToJSON(sampleDrift()), 24*time.Hour, goldenNow)
		}},
		{"drift.json", func(b *bytes.Buffer) error { return writeJSON(b, driftToJSON(sampleDrift())) }},
		{"drift-empty.table", func(b *bytes.Buffer) error {
			return writeDriftTable(b, driftToJSON(&hivev1.ListDriftRepairsResponse{}), time.Hour, goldenNow)
		}},
		{"wait-progress.text", func(b *bytes.Buffer) error {
			r := classify(sampleStatus(), 7, []string{"db-1", "web-1", "web-2", "new-1", "gone-1"})
			b.WriteString(r.line(7) + "\n" + r.pendingDetail() + "\n")
			return nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := c.fn(&b); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "output", c.name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./ctl -run TestGolden -update)", err)
			}
			if got := b.String(); got != string(want) {
				t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:     "just now",
		0:                "0s ago",
		59 * time.Second: "59s ago",
		time.Minute:      "1m ago",
		47 * time.Hour:   "47h ago",
		72 * time.Hour:   "3d ago",
	} {
		tm := goldenNow.Add(-d)
		if got := ago(&tm, goldenNow); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
	if got := ago(nil, goldenNow); got != "never" {
		t.Errorf("ago(nil) = %q", got)
	}
}

func TestEscape(t *testing.T) {
	for _, c := range []struct{ in, one, lines string }{
		{"plain é ü 日本", "plain é ü 日本", "plain é ü 日本"},
		{"a\x1b[2Jb", `a\u001b[2Jb`, `a\u001b[2Jb`},
		{"a\rb\nc\td", `a\rb\nc\td`, "a\\rb\nc\td"},
		{"\u202eabc\u2066\u2069\u200f", `\u202eabc\u2066\u2069\u200f`, `\u202eabc\u2066\u2069\u200f`},
		{"\u009b2J\x7f\x00", `\u009b2J\u007f\u0000`, `\u009b2J\u007f\u0000`},
		{"bad\xffutf8", `bad\xffutf8`, `bad\xffutf8`},
	} {
		if got := esc(c.in); got != c.one {
			t.Errorf("esc(%q) = %q, want %q", c.in, got, c.one)
		}
		if got := escLines(c.in); got != c.lines {
			t.Errorf("escLines(%q) = %q, want %q", c.in, got, c.lines)
		}
	}
}

// TestTermWriterKeepsJSON: through a termWriter, JSON with raw DEL, C1 and
// bidi runes (which encoding/json leaves as they are) stays valid and
// decodes to the same text; a rune split across writes survives.
func TestTermWriterKeepsJSON(t *testing.T) {
	in := map[string]string{"m": "a\x7fb\u0085c\u202ed\x1b[2J\r\n日本"}
	var buf bytes.Buffer
	w := newTermWriter(&buf)
	if err := writeJSON(w, in); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"\x7f", "\u0085", "\u202e", "\x1b", "\r"} {
		if strings.Contains(buf.String(), c) {
			t.Errorf("raw %q in %q", c, buf.String())
		}
	}
	var out map[string]string
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil || out["m"] != in["m"] {
		t.Fatalf("json through termWriter: %v %q", err, buf.String())
	}
	buf.Reset()
	s := "x日y\u202ez"
	for i := 0; i < len(s); i++ {
		w.Write([]byte{s[i]})
	}
	if buf.String() != `x日y\u202ez` {
		t.Errorf("split runes: %q", buf.String())
	}
	if rawWriter(w) != &buf || rawWriter(&buf) != &buf {
		t.Error("rawWriter")
	}
}
