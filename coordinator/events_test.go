package coordinator

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// hookReceiver is a webhook endpoint that checks signatures and fails
// the first failFirst deliveries with 503.
type hookReceiver struct {
	t         *testing.T
	key       []byte
	mu        sync.Mutex
	failFirst int
	attempts  int
	got       []WebhookPayload
	bad       []string
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts++
	if h.failFirst > 0 {
		h.failFirst--
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	if sig := r.Header.Get(HeaderSignature); !hmac.Equal([]byte(sig), []byte(Sign(h.key, body))) {
		h.bad = append(h.bad, "bad signature "+sig)
	}
	var p WebhookPayload
	if err := json.Unmarshal(body, &p); err != nil {
		h.bad = append(h.bad, err.Error())
	}
	if r.Header.Get(HeaderEvent) != p.Kind || r.Header.Get(HeaderDelivery) != p.ID {
		h.bad = append(h.bad, "headers disagree with the payload")
	}
	h.got = append(h.got, p)
}

func (h *hookReceiver) kinds() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.got {
		out = append(out, p.Kind)
	}
	return out
}

// TestEventsAndWebhooks: on a --dev coordinator, an events follower sees
// a node register, a push, its node converge with a drift repair, the
// generation converge and a later failure, in order, with the command's
// time and raft index; a webhook of the site (first answering 503, so
// retried) receives the events it selects, signed with the secret named
// in the site.
func TestEventsAndWebhooks(t *testing.T) {
	defer func(b time.Duration) { webhookBackoff = b }(webhookBackoff)
	webhookBackoff = 50 * time.Millisecond
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	recv := &hookReceiver{t: t, key: []byte("hook-signing-key"), failFirst: 1}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "hook-key", Value: recv.key}); err != nil {
		t.Fatal(err)
	}

	stream, err := c.WatchEvents(ctx, &hivev1.WatchEventsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var seen []*hivev1.Event
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			if m.GetEvent() != nil {
				mu.Lock()
				seen = append(seen, m.GetEvent())
				mu.Unlock()
			}
		}
	}()
	seenKinds := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, e := range seen {
			out = append(out, e.GetKind())
		}
		return out
	}

	w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	site := testSite("1")
	site.Secrets = append(site.Secrets, "hook-key")
	site.Webhooks = []*hivev1.Webhook{{Url: srv.URL + "/hook", Secret: "hook-key", Events: []string{"push", "node.phase", "drift.", "generation.converged", "run.failed"}}}
	p, err := c.Push(ctx, &hivev1.PushRequest{Site: site, Message: "hooks"})
	if err != nil {
		t.Fatal(err)
	}
	report := func(seq uint64, phase hivev1.Phase, res ...*hivev1.ResourceResult) {
		t.Helper()
		if _, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "web-1", Generation: p.GetGeneration(), Phase: phase,
			Seq: seq, Finished: timestamppb.Now(), Results: res}}); err != nil {
			t.Fatal(err)
		}
	}
	report(1, hivev1.Phase_PHASE_CONVERGED, &hivev1.ResourceResult{Key: "file:/etc/app.conf", Outcome: hivev1.Outcome_OUTCOME_CHANGED, Drift: true, Cause: hivev1.Cause_CAUSE_DRIFT})
	waitFor(t, 10*time.Second, "generation.converged event", func() bool { return strings.Contains(strings.Join(seenKinds(), " "), "generation.converged") })
	report(2, hivev1.Phase_PHASE_FAILED, &hivev1.ResourceResult{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_FAILED, Message: "no such package"})

	want := "secret.set node.registered push node.phase drift.repaired generation.converged node.phase run.failed"
	waitFor(t, 10*time.Second, "every event", func() bool { return len(seenKinds()) >= 8 })
	got := strings.Join(seenKinds(), " ")
	// secret.set came before the follower subscribed: it is history.
	if got != want {
		t.Fatalf("events = %q, want %q", got, want)
	}
	mu.Lock()
	for _, e := range seen {
		if e.GetIndex() == 0 || e.GetTime() == nil || e.GetSeq() == 0 {
			t.Errorf("event without index, time or seq: %v", e)
		}
		if strings.Contains(e.String(), string(recv.key)) {
			t.Errorf("event carries the secret value: %v", e)
		}
	}
	if e := seen[5]; e.GetFields()["generation"] != "1" || e.GetFields()["nodes"] != "1" {
		t.Errorf("converged event = %v", e)
	}
	if e := seen[7]; e.GetNode() != "web-1" || !strings.Contains(e.GetSummary(), "package:nginx: no such package") {
		t.Errorf("failure event = %v", e)
	}
	mu.Unlock()

	wantHooks := "push node.phase drift.repaired generation.converged node.phase run.failed"
	waitFor(t, 10*time.Second, "webhook deliveries", func() bool { return len(recv.kinds()) >= 6 })
	if got := strings.Join(recv.kinds(), " "); got != wantHooks {
		t.Fatalf("webhook got %q, want %q", got, wantHooks)
	}
	recv.mu.Lock()
	if len(recv.bad) > 0 || recv.attempts != 7 {
		t.Fatalf("webhook: %d attempts, problems %v", recv.attempts, recv.bad)
	}
	if p := recv.got[0]; p.Site != "test" || p.Coordinator != n.cfg.Name || p.RaftIndex == 0 || p.Fields["generation"] != "1" || !strings.Contains(p.Summary, "pushed by dev") {
		t.Fatalf("push payload = %+v", p)
	}
	recv.mu.Unlock()

	// The receiver has the sixth delivery before the coordinator has
	// read its answer and counted it: poll.
	var mb []byte
	countersOK := func() bool {
		resp, err := http.Get("http://" + n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		mb, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(mb), "hive_coordinator_webhook_deliveries_total 6\n") && strings.Contains(string(mb), "hive_coordinator_events_total 8\n")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !countersOK() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !countersOK() {
		t.Errorf("metrics lack the webhook and event counters:\n%s", mb)
	}

	// History without follow, filtered, ends.
	h, err := c.WatchEvents(ctx, &hivev1.WatchEventsRequest{Kinds: []string{"node."}, Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for {
		m, err := h.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.GetEvent() != nil {
			kinds = append(kinds, m.GetEvent().GetKind())
		}
	}
	if strings.Join(kinds, " ") != "node.registered node.phase node.phase" {
		t.Fatalf("filtered history = %v", kinds)
	}
	// Bad input: a precise error.
	b, err := c.WatchEvents(ctx, &hivev1.WatchEventsRequest{Kinds: []string{"a b"}})
	if err == nil {
		_, err = b.Recv()
	}
	wantCode(t, "bad kind", err, 3, "kinds[0]")

	// The dashboard's Events page lists them (--dev: open on loopback),
	// escaped.
	pr, err := http.Get("http://" + n.HTTPAddr() + "/ui/events?node=web-1")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(pr.Body)
	pr.Body.Close()
	if pr.StatusCode != http.StatusOK || !strings.Contains(string(page), "web-1 failed on generation 1: package:nginx: no such package") ||
		strings.Contains(string(page), "pushed by dev") || !strings.Contains(string(page), "drift.repaired") {
		t.Fatalf("events page: %s\n%s", pr.Status, page)
	}

	// A restart replays the log (and this single server leads at once):
	// nothing is sent again, yet the history is served again.
	n.stop(t)
	n = startNode(t, n.cfg)
	waitReady(t, n)
	c = dialPlain(t, n.GRPCAddr())
	waitFor(t, 10*time.Second, "replayed history", func() bool {
		h, err := c.WatchEvents(ctx, &hivev1.WatchEventsRequest{Kinds: []string{"run.failed"}})
		if err != nil {
			return false
		}
		m, err := h.Recv()
		return err == nil && m.GetEvent().GetKind() == "run.failed"
	})
	time.Sleep(500 * time.Millisecond)
	if got := len(recv.kinds()); got != 6 {
		t.Fatalf("after a restart the webhook got %d deliveries, want still 6", got)
	}
}
