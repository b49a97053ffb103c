package netlabtests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// forgedLine is a status-table line a compromised agent would like the
// operator to read.
const forgedLine = "a1  alive  converged  1  web  1  1s ago"

// hostileMessages clear the screen, return to the line start, add lines,
// reverse text, or start a C1 control sequence.
var hostileMessages = []string{
	"ok\x1b[2J\x1b[H" + forgedLine,
	"ok\r" + forgedLine,
	"ok\n" + forgedLine,
	"ok\u202edeggol ni",
	"ok\u009b2J\x7f\x1b]0;owned\x07",
	// For the web dashboard: markup that would run or add elements.
	`<script>window.__owned=1</script>`,
	`"><img src=x onerror="window.__owned=2">`,
}

// TestHostileReportEscaped: a compromised node (host "rogue", with its own
// agent certificate for node a9) reports through a real coordinator over
// mutual TLS results whose messages and keys carry terminal control
// sequences and forged status lines. The real hivectl, on the admin host,
// prints none of them raw: one line per node in `status`, one line per
// resource in `status a9`, valid JSON with -o json. The web dashboard,
// opened in Chromium, runs none of the markup some messages carry, adds no
// element for it, and shows the control characters as escapes.
func TestHostileReportEscaped(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 0})
	g := c.push(siteFiles("1", len(hostileMessages)), false)
	c.tls("cert", "create", "--agent", "a9", "--label", "tier=web")
	rogue := c.lab.AddHost("rogue")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := rogue.Command(ctx, os.Args[0], "-test.run=^TestHostileReportHelper$", "-test.v")
	cmd.Env = append(os.Environ(),
		"NETLAB_HOSTILE=1",
		"GORACE=atexit_sleep_ms=0",
		"NETLAB_ADDR="+c.coords[0].host.Addr+":"+grpcPort,
		"NETLAB_CA="+filepath.Join(c.pki, "ca.pem"),
		"NETLAB_CERT="+filepath.Join(c.pki, "a9.pem"),
		"NETLAB_KEY="+filepath.Join(c.pki, "a9-key.pem"))
	out, err := cmd.CombinedOutput()
	var sent int
	if i := strings.Index(string(out), "REPORTED "); err != nil || i < 0 {
		t.Fatalf("hostile reporter: %v\n%s", err, out)
	} else if _, err := fmt.Sscanf(string(out[i:]), "REPORTED %d", &sent); err != nil {
		t.Fatal(err)
	}

	raw := []string{"\x1b", "\r", "\u202e", "\u009b", "\x7f", "\x07"}
	check := func(args ...string) string {
		t.Helper()
		out, err := c.ctl(ctx, args...)
		if err != nil {
			t.Fatalf("hivectl %s: %v", strings.Join(args, " "), err)
		}
		s := string(out)
		t.Logf("hivectl %s:\n%s", strings.Join(args, " "), s)
		for _, r := range raw {
			if strings.Contains(s, r) {
				t.Errorf("hivectl %s prints %q raw", strings.Join(args, " "), r)
			}
		}
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "a1 ") {
				t.Errorf("hivectl %s prints a forged line %q", strings.Join(args, " "), l)
			}
		}
		return s
	}
	table := check("status")
	if n := strings.Count(table, "\na9 "); n != 1 {
		t.Errorf("status: %d lines for a9", n)
	}
	detail := check("status", "a9")
	_, res, ok := strings.Cut(detail, "RESOURCE")
	if !ok {
		t.Fatal("no resource table")
	}
	if lines := strings.Split(strings.TrimRight(res, "\n"), "\n")[1:]; len(lines) != sent {
		t.Errorf("%d result lines for %d results", len(lines), sent)
	}
	if !strings.Contains(detail, `ok\u001b[2J`) {
		t.Errorf("escaped message not shown")
	}
	js := check("status", "a9", "-o", "json")
	if !strings.Contains(js, `"generation": `+fmt.Sprint(g)) {
		t.Errorf("status json: %s", js)
	}
	// The web dashboard, in a real Chromium (dashboard_test.go).
	c.dashboardEscapeCheck(t, "a9", sent)
}

// TestHostileReportHelper is the compromised node of
// TestHostileReportEscaped, run by it inside the rogue host's namespace.
func TestHostileReportHelper(t *testing.T) {
	if os.Getenv("NETLAB_HOSTILE") == "" {
		t.Skip("run by TestHostileReportEscaped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{os.Getenv("NETLAB_ADDR")},
		CA: os.Getenv("NETLAB_CA"), Cert: os.Getenv("NETLAB_CERT"), Key: os.Getenv("NETLAB_KEY")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := conn.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "a9", Labels: map[string]string{"tier": "web"}, AgentVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetState()
	var results []*hivev1.ResourceResult
	for i, r := range st.GetResources() {
		res := &hivev1.ResourceResult{Key: r.GetKey(), Outcome: hivev1.Outcome_OUTCOME_FAILED}
		if i < len(hostileMessages) {
			res.Message = hostileMessages[i]
		}
		results = append(results, res)
	}
	report := func(results []*hivev1.ResourceResult) error {
		_, err := conn.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
			Node: "a9", Generation: st.GetGeneration(), StateHash: st.GetHash(), Phase: hivev1.Phase_PHASE_FAILED, Seq: 1,
			Results: results, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state",
		}})
		return err
	}
	// A key that is no resource of the node (as pruning reports them),
	// hostile too; a coordinator may refuse it, then the messages alone.
	withKey := append(append([]*hivev1.ResourceResult(nil), results...),
		&hivev1.ResourceResult{Key: "file:/x\x1b[2K\r" + forgedLine, Outcome: hivev1.Outcome_OUTCOME_OK})
	sent := withKey
	if err := report(withKey); err != nil {
		t.Logf("report with a foreign key refused (%v): the state's keys only", err)
		if err := report(results); err != nil {
			t.Fatal(err)
		}
		sent = results
	}
	fmt.Printf("REPORTED %d\n", len(sent))
}
