package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRealCoordinatorAuditAndEvents runs hivectl audit and events against
// a real --dev coordinator: a push and a secret set are listed in the
// audit log as "dev"; events shows the history, filters by kind, prints
// JSON lines, and --follow prints an event pushed after it started.
func TestRealCoordinatorAuditAndEvents(t *testing.T) {
	clearEnv(t)
	addr := startCoordinator(t, "--dev", "--name", "c1")
	conn := []string{"--dev", "--addr", addr}
	file := siteFile(t)

	if r := run(t, "v", append([]string{"secret", "set", "db-password"}, conn...)...); r.code != 0 {
		t.Fatalf("secret set: %d", r.code)
	}
	if r := run(t, "", append([]string{"push", file, "-m", "first"}, conn...)...); r.code != 0 {
		t.Fatalf("push: %d", r.code)
	}

	r := run(t, "", append([]string{"audit", "--since", "1h"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "IDENTITY") || !strings.Contains(r.stdout, "set secret db-password") ||
		!strings.Contains(r.stdout, "Push") || strings.Count(r.stdout, " dev ") < 2 {
		t.Fatalf("audit table: %+v", r)
	}
	r = run(t, "", append([]string{"audit", "-o", "json", "-n", "1"}, conn...)...)
	var entries []auditJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &entries) != nil || len(entries) != 1 || entries[0].Command != "push" || entries[0].Identity != "dev" {
		t.Fatalf("audit json: %+v", r)
	}
	if r := run(t, "", append([]string{"audit", "--since", "yesterday"}, conn...)...); r.code == 0 || !strings.Contains(r.stderr, "want a duration like 24h") {
		t.Fatalf("bad --since: %+v", r)
	}

	r = run(t, "", append([]string{"events"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "push") || !strings.Contains(r.stdout, "generation 1 pushed by dev") || !strings.Contains(r.stdout, "secret.set") {
		t.Fatalf("events: %+v", r)
	}
	r = run(t, "", append([]string{"events", "--kind", "push", "-o", "json"}, conn...)...)
	var e eventJSON
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || json.Unmarshal([]byte(r.stdout), &e) != nil || e.Kind != "push" || e.Fields["generation"] != "1" {
		t.Fatalf("events json: %+v", r)
	}
	if r := run(t, "", append([]string{"events", "--kind", "bad kind"}, conn...)...); r.code == 0 || !strings.Contains(r.stderr, "kinds[0]") {
		t.Fatalf("bad kind: %+v", r)
	}

	// --follow prints a later event, and ends when interrupted.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		root := NewRootCommand(strings.NewReader(""), &out, &out)
		root.SetArgs(append([]string{"events", "--follow", "--kind", "secret."}, conn...))
		err := root.ExecuteContext(ctx)
		if err != nil {
			done <- 1
			return
		}
		done <- 0
	}()
	time.Sleep(300 * time.Millisecond)
	if r := run(t, "w", append([]string{"secret", "set", "later"}, conn...)...); r.code != 0 {
		t.Fatalf("secret set: %d", r.code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "secret later set by dev") {
		if time.Now().After(deadline) {
			t.Fatalf("follow output: %q", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("follow ended with %d: %q", code, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when interrupted")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
