package coordinator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hivefleet/hive/coordinator/events"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/version"
)

// Webhooks (docs/operations.md, "Webhooks"): the leader posts every event
// that matches a webhook of the current generation's site to its URL, as
// JSON, signed with HMAC-SHA256 of the body under the webhook's secret.
// Each URL has its own bounded queue and sender (one slow or dead
// receiver delays no other), deliveries to one URL keep their order, and
// a failed delivery (network error, non-2xx answer) is retried with
// exponential backoff up to webhookAttempts times.
//
// Only the leader sends, so each event is delivered once while the leader
// stays; around a leader change an event may be sent twice (the new
// leader sends what it derived while it led) or, for events the old
// leader had queued, not at all. The delivery id is the same on every
// coordinator for events derived from the raft log, so receivers can drop
// duplicates.

// Webhook delivery headers.
const (
	HeaderSignature = "X-Hive-Signature" // "sha256=" + hex HMAC-SHA256(secret, body)
	HeaderEvent     = "X-Hive-Event"     // the event kind
	HeaderDelivery  = "X-Hive-Delivery"  // the payload's id
)

// Tunables (variables so tests shorten them).
var (
	webhookQueue       = 1000
	webhookAttempts    = 8
	webhookBackoff     = time.Second
	webhookBackoffMax  = time.Minute
	webhookTimeout     = 10 * time.Second
	webhookMaxResponse = int64(64 << 10)
)

// WebhookPayload is the JSON body of a webhook delivery.
type WebhookPayload struct {
	// ID identifies the event: for events derived from the raft log, the
	// same on every coordinator (receivers may deduplicate on it).
	ID      string            `json:"id"`
	Kind    string            `json:"kind"`
	Time    time.Time         `json:"time"`
	Node    string            `json:"node,omitempty"`
	Summary string            `json:"summary"`
	Fields  map[string]string `json:"fields,omitempty"`
	// RaftIndex of the command the event derives from (0: local event).
	RaftIndex uint64 `json:"raft_index,omitempty"`
	// Site name and the coordinator that sent the delivery.
	Site        string `json:"site"`
	Coordinator string `json:"coordinator"`
}

// EventID is an event's delivery id: a hash of what the event says, so
// every coordinator derives the same id for the same raft-derived event.
func EventID(e *hivev1.Event) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s\x00%d", e.GetIndex(), e.GetKind(), e.GetNode(), e.GetSummary(), e.GetTime().AsTime().UnixNano())
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Sign returns the X-Hive-Signature value of body under secret.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

type webhooks struct {
	s      *Server
	log    *slog.Logger
	client *http.Client

	mu      sync.Mutex
	senders map[string]*hookSender // by URL

	delivered, failed, dropped atomic.Uint64
	replayed                   uint64 // last raft index at start (run goroutine only)
}

func newWebhooks(s *Server) *webhooks {
	return &webhooks{s: s, log: s.log.With("component", "webhooks"), senders: map[string]*hookSender{},
		client: &http.Client{Timeout: webhookTimeout}}
}

// run feeds the leader's matching events to the senders until ctx ends.
func (w *webhooks) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	// Entries in the log when this server started were sent (or not)
	// before; replaying them after a restart, or as a single server that
	// leads at once, sends nothing again.
	w.replayed = w.s.raft.LastIndex()
	var since uint64
	for ctx.Err() == nil {
		_, sub := w.s.ops.events.Subscribe(since, events.Filter{})
		// Only events published from now on: history was before this
		// server may have led.
		if since == 0 {
			since = w.s.ops.events.Seq()
		}
	loop:
		for {
			select {
			case <-ctx.Done():
				sub.Close()
				break loop
			case e, ok := <-sub.C():
				if !ok {
					w.log.Warn("webhook feed fell behind the event stream; events were skipped")
					since = w.s.ops.events.Seq()
					break loop
				}
				since = e.GetSeq()
				w.dispatch(ctx, &wg, e)
			}
		}
	}
	w.mu.Lock()
	for _, hs := range w.senders {
		close(hs.q)
	}
	w.senders = map[string]*hookSender{}
	w.mu.Unlock()
}

// dispatch queues e for every webhook of the current site that wants it,
// when this server leads.
func (w *webhooks) dispatch(ctx context.Context, wg *sync.WaitGroup, e *hivev1.Event) {
	if !w.s.IsLeader() || (e.GetIndex() != 0 && e.GetIndex() <= w.replayed) {
		return
	}
	site := w.s.fsm.Store().Current().GetSite()
	for _, h := range site.GetWebhooks() {
		if !events.MatchKind(h.GetEvents(), e.GetKind()) {
			continue
		}
		hs := w.sender(ctx, wg, h.GetUrl())
		select {
		case hs.q <- delivery{hook: h, event: e, site: site.GetName()}:
		default:
			w.dropped.Add(1)
			w.log.Warn("webhook queue full; event dropped", "url", h.GetUrl(), "kind", e.GetKind(), "queue", webhookQueue)
		}
	}
}

type delivery struct {
	hook  *hivev1.Webhook
	event *hivev1.Event
	site  string
}

type hookSender struct {
	url string
	q   chan delivery
}

func (w *webhooks) sender(ctx context.Context, wg *sync.WaitGroup, url string) *hookSender {
	w.mu.Lock()
	defer w.mu.Unlock()
	if hs, ok := w.senders[url]; ok {
		return hs
	}
	hs := &hookSender{url: url, q: make(chan delivery, webhookQueue)}
	w.senders[url] = hs
	wg.Add(1)
	go func() {
		defer wg.Done()
		for d := range hs.q {
			w.deliver(ctx, d)
		}
	}()
	return hs
}

// deliver posts d, retrying with backoff.
func (w *webhooks) deliver(ctx context.Context, d delivery) {
	e := d.event
	body, err := json.Marshal(WebhookPayload{
		ID: EventID(e), Kind: e.GetKind(), Time: e.GetTime().AsTime().UTC(), Node: e.GetNode(), Summary: e.GetSummary(),
		Fields: e.GetFields(), RaftIndex: e.GetIndex(), Site: d.site, Coordinator: w.s.cfg.Name,
	})
	if err != nil {
		w.log.Error("encode webhook payload", "err", err)
		return
	}
	wait := webhookBackoff
	for attempt := 1; ; attempt++ {
		err := w.post(ctx, d, body)
		if err == nil {
			w.delivered.Add(1)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt >= webhookAttempts {
			w.failed.Add(1)
			w.log.Warn("webhook delivery failed; giving up", "url", d.hook.GetUrl(), "kind", e.GetKind(), "attempts", attempt, "err", err)
			return
		}
		w.log.Info("webhook delivery failed; retrying", "url", d.hook.GetUrl(), "kind", e.GetKind(), "attempt", attempt, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, webhookBackoffMax)
	}
}

// post sends one attempt of d.
func (w *webhooks) post(ctx context.Context, d delivery, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.hook.GetUrl(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hive-coordinator/"+version.Version)
	req.Header.Set(HeaderEvent, d.event.GetKind())
	req.Header.Set(HeaderDelivery, EventID(d.event))
	if name := d.hook.GetSecret(); name != "" {
		key, err := w.secret(name)
		if err != nil {
			return err
		}
		req.Header.Set(HeaderSignature, Sign(key, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookMaxResponse))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// secret opens the webhook's signing secret from the replicated state.
// A delivery is never sent unsigned when its webhook names a secret.
func (w *webhooks) secret(name string) ([]byte, error) {
	sec := w.s.fsm.Store().Secret(name)
	if sec == nil {
		return nil, fmt.Errorf("signing secret %q is not set (hivectl secret set %s)", name, name)
	}
	v, err := w.s.keyring.Open(name, sec.GetSealed(), sec.GetKeyId())
	if err != nil {
		return nil, fmt.Errorf("open signing secret %q: %v", name, err)
	}
	return v, nil
}
