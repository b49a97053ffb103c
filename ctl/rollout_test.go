package ctl

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRealCoordinatorRollout drives a rollout through hivectl against the
// real hive-coordinator binary with simulated agents: push --canary
// --max-parallel --wait follows the waves to completion; a canary that
// fails pauses the rollout (push --wait exits 1 with the reason), the
// other nodes keep their generation, and rollout abort puts the canary
// back.
func TestRealCoordinatorRollout(t *testing.T) {
	clearEnv(t)
	addr := startCoordinator(t, "--dev", "--name", "c1")
	conn := []string{"--dev", "--addr", addr}
	file := siteFile(t)
	if r := run(t, "", append([]string{"push", file}, conn...)...); r.code != 0 {
		t.Fatalf("push 1: %+v", r)
	}
	for i := 1; i <= 3; i++ {
		simulatedAgent(t, addr, fmt.Sprintf("web-%d", i), map[string]string{"tier": "web"}, map[uint64]bool{4: i == 1})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := run(t, "", append([]string{"status", "-o", "json"}, conn...)...)
		var st statusJSON
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && len(st.Nodes) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agents did not register")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := run(t, "", append([]string{"rollout", "status"}, conn...)...); r.code == 0 || !strings.Contains(r.stderr, "there is no rollout") {
		t.Fatalf("rollout status before any rollout: %+v", r)
	}
	variant := func(pkg string) string {
		p := filepath.Join(t.TempDir(), "site.yaml")
		data := strings.Replace(string(mustRead(t, file)), "      - chrony\n", "      - chrony\n      - "+pkg+"\n", 1)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Bad flags: refused before anything is sent.
	if r := run(t, "", append([]string{"push", variant("htop"), "--max-parallel", "0%"}, conn...)...); r.code == 0 || !strings.Contains(r.stderr, "--max-parallel") {
		t.Fatalf("push --max-parallel 0%%: %+v", r)
	}
	r := run(t, "", append([]string{"push", variant("htop"), "--canary", "1", "--max-parallel", "1", "--min-healthy-time", "100ms", "--wait", "--timeout", "30s"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 2: completed, wave 3/3: 3/3 converged") {
		t.Fatalf("push --canary --wait: %+v", r)
	}
	r = run(t, "", append([]string{"rollout", "status", "-o", "json"}, conn...)...)
	var rj rolloutJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rj) != nil || rj.State != "completed" || len(rj.Waves) != 3 || !rj.Waves[0].Canary {
		t.Fatalf("rollout status -o json: %+v", r)
	}
	// Generation 3 at once (no rollout flags, no policy in the file).
	if r := run(t, "", append([]string{"push", variant("vim"), "--wait", "--timeout", "30s"}, conn...)...); r.code != 0 {
		t.Fatalf("plain push --wait: %+v", r)
	}

	// Generation 4 fails on the canary web-1: paused, the others stay on 3.
	r = run(t, "", append([]string{"push", variant("tmux"), "--canary", "web-1", "--wait", "--timeout", "30s"}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "rollout of generation 4: paused") || !strings.Contains(r.stderr, "web-1: failed to converge") {
		t.Fatalf("push with a failing canary: %+v", r)
	}
	r = run(t, "", append([]string{"rollout", "status"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "WAVE") || !strings.Contains(r.stdout, "simulated failure") {
		t.Fatalf("rollout status: %+v", r)
	}
	r = run(t, "", append([]string{"status", "-o", "json"}, conn...)...)
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		want := uint64(3)
		if n.Name == "web-1" {
			want = 4
		}
		if n.DesiredGeneration != want {
			t.Fatalf("%s desired generation %d, want %d", n.Name, n.DesiredGeneration, want)
		}
	}
	if r := run(t, "", append([]string{"rollout", "resume", "--generation", "2"}, conn...)...); r.code == 0 {
		t.Fatalf("resume of an old rollout: %+v", r)
	}
	r = run(t, "", append([]string{"rollout", "abort", "--reason", "tmux breaks web"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "rollout of generation 4: aborted") || !strings.Contains(r.stdout, "tmux breaks web") ||
		!strings.Contains(r.stdout, "generation 5 restores generation 3's content") {
		t.Fatalf("rollout abort: %+v", r)
	}
	r = run(t, "", append([]string{"rollout", "status", "-o", "json"}, conn...)...)
	if err := json.Unmarshal([]byte(r.stdout), &rj); err != nil || rj.Nodes[0].Name != "web-1" || rj.Nodes[0].TargetGeneration != 5 || rj.Revert != 5 {
		t.Fatalf("after abort: %+v", r)
	}

	// Generation 6: the canary web-2 converges; status shows how long its
	// wave has been healthy of the hour the next wave waits for.
	if r := run(t, "", append([]string{"push", variant("mc"), "--canary", "web-2", "--min-healthy-time", "1h"}, conn...)...); r.code != 0 {
		t.Fatalf("push 6: %+v", r)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		r = run(t, "", append([]string{"rollout", "status"}, conn...)...)
		if r.code == 0 && strings.Contains(r.stdout, "wave 1 healthy for ") && strings.Contains(r.stdout, "of its min_healthy_time 1h") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout status never showed wave 1 healthy: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r = run(t, "", append([]string{"rollout", "status", "-o", "json"}, conn...)...)
	if err := json.Unmarshal([]byte(r.stdout), &rj); err != nil || rj.WaveHealthyForS == nil || *rj.WaveHealthyForS < 0 || rj.Opened != 1 {
		t.Fatalf("rollout status -o json with a healthy wave: %+v", r)
	}
}
