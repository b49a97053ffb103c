package agent_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// fingerprint hashes every file under dir: path, mode, size, mtime and
// content.
func fingerprint(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		line := p + " " + fi.Mode().String() + " " + fi.ModTime().Format(time.RFC3339Nano)
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:])
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestPlanDryRunChangesNothing: a real agent (real engine, sandbox root)
// watching a real --dev coordinator answers hivectl plan's dry run with
// what the planned content would change — the file the site changes and
// the file drifted by hand — while its machine (every file under the
// root), its data directory (cached state, applied generation, report
// queue) and its run statistics stay exactly as they were.
func TestPlanDryRunChangesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	co := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	addr := co.srv.GRPCAddr()
	g1 := push(t, addr, "hello")

	root := t.TempDir()
	cfg := testConfig(t, t.TempDir())
	cfg.Name, cfg.Root, cfg.Coordinators = "web-1", root, []string{addr}
	deps, err := agent.NewEngine(cfg, cfg.Logger)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "converged on g1", 20*time.Second, func() bool {
		st := nodeStatus(t, addr, "web-1")
		return st.GetAppliedGeneration() == g1 && st.GetPhase() == hivev1.Phase_PHASE_CONVERGED
	})
	// Drift by hand.
	if err := os.WriteFile(filepath.Join(root, "/etc/motd"), []byte("tampered\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the report queue drain
	beforeRoot, beforeData, beforeStats := fingerprint(t, root), fingerprint(t, cfg.DataDir), a.Stats()

	text := strings.ReplaceAll(e2eSite, "%s", "planned")
	s, err := site.Parse("e2e.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
	defer ccancel()
	conn, err := client.Dial(cctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := conn.Plan(cctx, &hivev1.PlanRequest{Site: s, SourceName: "e2e.yaml", Source: []byte(text), Timeout: durationpb.New(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetNodes()) != 1 || resp.GetNodes()[0].GetState() != hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED {
		t.Fatalf("plan = %v", resp)
	}
	got := map[string]*hivev1.ResourceResult{}
	for _, r := range resp.GetNodes()[0].GetResults() {
		got[r.GetKey()] = r
	}
	for _, k := range []string{"file:/etc/motd", "file:/etc/hive-e2e/app.conf"} {
		if r := got[k]; r.GetOutcome() != hivev1.Outcome_OUTCOME_PLANNED || r.GetDiff() == "" {
			t.Errorf("%s: %v, want planned with a diff", k, r)
		}
	}
	if c1, c2 := got["file:/etc/motd"].GetCause(), got["file:/etc/hive-e2e/app.conf"].GetCause(); c1 != hivev1.Cause_CAUSE_CHANGE || c2 != hivev1.Cause_CAUSE_CHANGE {
		// Both files change with the site ("planned" replaces "hello"
		// in both), the drift of motd included.
		t.Errorf("causes: motd %v, app.conf %v", c1, c2)
	}
		if d := got["file:/etc/hive-e2e/app.conf"].GetDiff(); !strings.Contains(d, "-level = hello") || !strings.Contains(d, "+level = planned") {
		t.Errorf("app.conf diff:\n%s", d)
	}
	if d := got["file:/etc/motd"].GetDiff(); !strings.Contains(d, "-tampered") || !strings.Contains(d, "+web-1 says planned") {
		t.Errorf("motd diff:\n%s", d)
	}

	time.Sleep(200 * time.Millisecond)
	if fp := fingerprint(t, root); fp != beforeRoot {
		t.Errorf("the dry run changed the machine:\nbefore:\n%s\nafter:\n%s", beforeRoot, fp)
	}
	if fp := fingerprint(t, cfg.DataDir); fp != beforeData {
		t.Errorf("the dry run changed the agent's data directory:\nbefore:\n%s\nafter:\n%s", beforeData, fp)
	}
	if st := a.Stats(); st != beforeStats {
		t.Errorf("stats changed: %+v, was %+v", st, beforeStats)
	}
	if st := nodeStatus(t, addr, "web-1"); st.GetAppliedGeneration() != g1 {
		t.Errorf("applied generation %d after the plan, want %d", st.GetAppliedGeneration(), g1)
	}
	// Nothing was pushed: the drift is still there until the next run.
	if readFile(root, "/etc/motd") != "tampered\n" {
		t.Error("the drift was repaired by a dry run")
	}
}
