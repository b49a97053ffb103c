package ctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// siteFile copies the example site into a temporary directory.
func siteFile(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "deploy", "examples", "site.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "site.yaml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPush(t *testing.T) {
	clearEnv(t)
	f := newFake()
	f.nodes = []string{"web-1", "db-1"}
	addr := serveFake(t, f, nil)
	conn := []string{"--dev", "--addr", addr}
	file := siteFile(t)

	// Invalid files are refused locally: nothing is sent.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("site: x\nroles:\n  web:\n    packages: [{name: nginx, state: sideways}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", append([]string{"push", bad}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, bad+":") || !strings.Contains(r.stderr, "nothing pushed") {
		t.Fatalf("invalid push: %+v", r)
	}
	if len(f.pushes) != 0 {
		t.Fatal("an invalid file reached the coordinator")
	}

	r = run(t, "", append([]string{"push", file, "-m", "first", "-o", "json"}, conn...)...)
	if r.code != 0 {
		t.Fatalf("push: %+v", r)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["generation"].(float64) != 1 || !strings.HasPrefix(got["sha256"].(string), "sha-") {
		t.Fatalf("push -o json = %s", r.stdout)
	}
	p := f.pushes[0]
	if p.GetBaseGeneration() != 0 || p.GetMessage() != "first" || p.GetSourceName() != file || p.GetSite().GetName() != "example" || p.GetForce() {
		t.Fatalf("push request %v", p)
	}

	r = run(t, "", append([]string{"push", file}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "unchanged: generation 1") {
		t.Fatalf("same content: %+v", r)
	}
	if f.pushes[1].GetBaseGeneration() != 1 {
		t.Fatalf("second push based on %d, want the current 1", f.pushes[1].GetBaseGeneration())
	}

	f.mu.Lock()
	f.generations = append(f.generations, &hivev1.Generation{Number: 2, Parent: 1, Sha256: "other"})
	f.mu.Unlock()
	r = run(t, "", append([]string{"push", file, "--base", "1"}, conn...)...)
	want := "push: generation 2 is current, your change is based on 1: pull and retry, or --force"
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("stale push: want %q, got %+v", want, r)
	}
	if len(f.generations) != 2 {
		t.Fatal("stale push appended a generation")
	}
	r = run(t, "", append([]string{"push", file, "--base", "1", "--force"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 3") {
		t.Fatalf("forced push: %+v", r)
	}
}

func node(name string, applied uint64, phase hivev1.Phase, errs ...string) *hivev1.NodeStatus {
	return &hivev1.NodeStatus{Name: name, AppliedGeneration: applied, DesiredGeneration: 1, Phase: phase, Errors: errs,
		Gossip: hivev1.GossipState_GOSSIP_STATE_ALIVE}
}

func TestPushWait(t *testing.T) {
	clearEnv(t)
	const (
		pending   = hivev1.Phase_PHASE_PENDING
		applying  = hivev1.Phase_PHASE_APPLYING
		converged = hivev1.Phase_PHASE_CONVERGED
		failed    = hivev1.Phase_PHASE_FAILED
	)
	file := siteFile(t)

	t.Run("converges", func(t *testing.T) {
		f := newFake()
		f.nodes = []string{"web-1", "db-1"}
		f.statuses = []*hivev1.GetStatusResponse{
			{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 0, pending), node("db-1", 0, pending), node("other", 0, pending)}},
			{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, applying), node("db-1", 0, pending)}},
			{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, converged), node("db-1", 1, applying)}},
			{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, converged), node("db-1", 1, converged)}},
		}
		addr := serveFake(t, f, nil)
		r := run(t, "", "push", file, "--wait", "--dev", "--addr", addr)
		if r.code != 0 {
			t.Fatalf("push --wait: %+v", r)
		}
		for _, line := range []string{
			"generation 1: 0/2 converged, 0 applying, 0 failed, 2 pending",
			"generation 1: 0/2 converged, 1 applying, 0 failed, 1 pending",
			"generation 1: 1/2 converged, 1 applying, 0 failed, 0 pending",
			"generation 1: 2/2 converged, 0 applying, 0 failed, 0 pending",
		} {
			if !strings.Contains(r.stdout, line+"\n") {
				t.Errorf("progress lacks %q", line)
			}
		}
	})
	t.Run("fails", func(t *testing.T) {
		f := newFake()
		f.nodes = []string{"web-1", "db-1"}
		f.statuses = []*hivev1.GetStatusResponse{
			{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, converged), node("db-1", 1, failed, "drbd:r0: peer unreachable")}},
		}
		addr := serveFake(t, f, nil)
		r := run(t, "", "push", file, "--wait", "-o", "json", "--dev", "--addr", addr)
		if r.code != 1 || !strings.Contains(r.stderr, "1 node(s) failed to converge on generation 1") ||
			!strings.Contains(r.stderr, "db-1: drbd:r0: peer unreachable") {
			t.Fatalf("failed node: %+v", r)
		}
		// stdout stays pure JSON with --wait -o json.
		var v pushResultJSON
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Generation != 1 {
			t.Fatalf("stdout %q: %v", r.stdout, err)
		}
		if !strings.Contains(r.stderr, "1/2 converged, 0 applying, 1 failed") {
			t.Errorf("progress not on stderr: %q", r.stderr)
		}
	})
	t.Run("times out", func(t *testing.T) {
		f := newFake()
		f.nodes = []string{"web-1", "db-1"}
		f.statuses = []*hivev1.GetStatusResponse{
			{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, converged)}},
		}
		addr := serveFake(t, f, nil)
		r := run(t, "", "push", file, "--wait", "--timeout", "1200ms", "--dev", "--addr", addr)
		if r.code != 1 || !strings.Contains(r.stderr, "timed out after 1.2s: 1 node(s) not done: db-1 (never reported)") {
			t.Fatalf("timeout: %+v", r)
		}
	})
}

// TestPushWaitReconnects: the coordinator answering push --wait dies; the
// wait goes on with the next --addr.
func TestPushWaitReconnects(t *testing.T) {
	clearEnv(t)
	file := siteFile(t)
	a := newFake()
	a.nodes = []string{"web-1"}
	a.statuses = []*hivev1.GetStatusResponse{
		{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 0, hivev1.Phase_PHASE_PENDING)}},
	}
	addrA, stopA := serveFakeStoppable(t, a, nil)
	b := newFake()
	b.statuses = []*hivev1.GetStatusResponse{
		{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, hivev1.Phase_PHASE_CONVERGED)}},
	}
	addrB := serveFake(t, b, nil)

	// Stop A once it has answered one status poll.
	go func() {
		for {
			a.mu.Lock()
			n := a.statusCall
			a.mu.Unlock()
			if n >= 1 {
				stopA()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	r := run(t, "", "push", file, "--wait", "--timeout", "20s", "--dev", "--addr", addrA+","+addrB)
	// (A may die before or after its answer arrives: the 0/1 line may or
	// may not be shown.)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 1: 1/1 converged") {
		t.Fatalf("push --wait across a lost coordinator: %+v", r)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.statusCall == 0 {
		t.Fatal("the second coordinator was never asked")
	}
}

func TestPollDelay(t *testing.T) {
	for _, c := range []struct{ took, want time.Duration }{
		{time.Millisecond, waitPoll},
		{200 * time.Millisecond, 800 * time.Millisecond},
		{time.Minute, 10 * time.Second},
	} {
		if got := pollDelay(waitPoll, c.took); got != c.want {
			t.Errorf("pollDelay(%v) = %v, want %v", c.took, got, c.want)
		}
	}
}
