package ctl

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// forged is a status line an agent would like the operator to read.
const forged = "db-1  alive  converged  1  db  12  1s ago"

// hostile is what a compromised agent puts in its report's messages: clear
// the screen, go back to the start of the line, start new lines that look
// like the status table's, flip text with a bidi override, a C1 CSI.
var hostile = []string{
	"ok\x1b[2J\x1b[H" + forged,
	"ok\r" + forged,
	"ok\n" + forged + "\n" + forged,
	"ok\u202e" + "deggol ni",
	"ok\u009b2J\x7f",
}

// TestRealCoordinatorHostileReport sends a report from an agent
// certificate, through a real coordinator over mutual TLS, whose resource
// keys and messages carry terminal control sequences and forged status
// lines. hivectl status (table and node detail) must print none of them
// raw, keep exactly one line per node and per resource, and -o json must
// stay valid JSON carrying the text unchanged.
func TestRealCoordinatorHostileReport(t *testing.T) {
	p := startTLSCoordinator(t)
	t.Setenv(envCert, p("alice.pem"))
	t.Setenv(envKey, p("alice-key.pem"))
	if r := run(t, "pw-0123456789", "secret", "set", "db-password"); r.code != 0 {
		t.Fatalf("secret set: %+v", r)
	}
	if r := run(t, "", "push", siteFile(t)); r.code != 0 {
		t.Fatalf("push: %+v", r)
	}

	// The agent, with its own certificate.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{os.Getenv(envAddr)}, CA: p("ca.pem"), Cert: p("web-1.pem"), Key: p("web-1-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := conn.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, AgentVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetState()
	if len(st.GetResources()) < len(hostile) {
		t.Fatalf("state has %d resources, want at least %d", len(st.GetResources()), len(hostile))
	}
	var results []*hivev1.ResourceResult
	for i, r := range st.GetResources() {
		res := &hivev1.ResourceResult{Key: r.GetKey(), Outcome: hivev1.Outcome_OUTCOME_OK}
		if i < len(hostile) {
			res.Outcome, res.Message = hivev1.Outcome_OUTCOME_FAILED, hostile[i]
		}
		results = append(results, res)
	}
	// Keys not in the state (as pruning reports them), hostile too.
	results = append(results,
		&hivev1.ResourceResult{Key: "file:/etc/x\x1b[2K\r" + forged, Outcome: hivev1.Outcome_OUTCOME_OK},
		&hivev1.ResourceResult{Key: "file:/etc/y\n" + forged, Outcome: hivev1.Outcome_OUTCOME_FAILED, Message: "\x1b]0;owned\x07"})
	report := func(results []*hivev1.ResourceResult) error {
		_, err := conn.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
			Node: "web-1", Generation: st.GetGeneration(), StateHash: st.GetHash(), Phase: hivev1.Phase_PHASE_FAILED, Seq: 1,
			Results: results, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state",
		}})
		return err
	}
	if err := report(results); err != nil {
		// A coordinator may refuse keys that are not resources of the
		// node; the messages alone must then be escaped.
		t.Logf("report with foreign keys refused (%v): sending the state's keys only", err)
		results = results[:len(st.GetResources())]
		if err := report(results); err != nil {
			t.Fatal(err)
		}
	}

	raw := []string{"\x1b", "\r", "\u202e", "\u009b", "\x7f", "\x07"}
	check := func(what, out string) {
		t.Helper()
		for _, c := range raw {
			if strings.Contains(out, c) {
				t.Errorf("%s prints %q raw:\n%s", what, c, out)
			}
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "db-1") {
				t.Errorf("%s prints a forged line %q", what, l)
			}
		}
	}
	r := run(t, "", "status")
	if r.code != 0 {
		t.Fatalf("status: %+v", r)
	}
	check("status", r.stdout+r.stderr)
	if n := strings.Count(r.stdout, "\nweb-1 "); n != 1 {
		t.Errorf("status table: %d lines for web-1", n)
	}
	r = run(t, "", "status", "web-1")
	if r.code != 0 {
		t.Fatalf("status web-1: %+v", r)
	}
	check("status web-1", r.stdout+r.stderr)
	_, table, ok := strings.Cut(r.stdout, "RESOURCE")
	if !ok {
		t.Fatalf("no resource table:\n%s", r.stdout)
	}
	if lines := strings.Split(strings.TrimRight(table, "\n"), "\n")[1:]; len(lines) != len(results) {
		t.Errorf("%d result lines for %d results:\n%s", len(lines), len(results), table)
	}
	if !strings.Contains(r.stdout, `ok\u001b[2J`) || !strings.Contains(r.stdout, `ok\r`+forged) {
		t.Errorf("escapes not shown:\n%s", r.stdout)
	}

	// JSON: valid, and faithful to what the agent sent.
	r = run(t, "", "status", "web-1", "-o", "json")
	var sj statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &sj); err != nil || len(sj.Nodes) != 1 {
		t.Fatalf("status -o json: %v\n%s", err, r.stdout)
	}
	check("status -o json", r.stdout)
	got := map[string]string{}
	for _, x := range sj.Nodes[0].Results {
		got[x.Key] = x.Message
	}
	for _, x := range results {
		if got[x.GetKey()] != x.GetMessage() {
			t.Errorf("json %q: message %q, want %q", x.GetKey(), got[x.GetKey()], x.GetMessage())
		}
	}
}
