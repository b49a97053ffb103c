// Package events is the coordinators' fleet event stream: a bounded ring
// of recent events and live subscribers (hivectl events, webhooks).
//
// Events derived from applied raft commands (pushes, phase changes, ...)
// are published from the FSM goroutine with the command's leader-stamped
// time and raft index, so every coordinator serves the same sequence of
// them; membership events (gossip joins and leaves) are this server's
// local view. Publish never blocks: a subscriber that falls more than its
// buffer behind is dropped (its channel closed, Lagged true) and should
// resume with the last seq it saw.
//
// Other packages publish their own events with Publish(kind, node,
// summary, fields), e.g. a rollout's progress; kinds are lowercase,
// dotted ("rollout.wave"), and summaries never contain secret values.
package events

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Event kinds published by the coordinator (docs/operations.md, "Events").
const (
	KindPush               = "push"
	KindRollback           = "rollback"
	KindGenerationConverge = "generation.converged"
	KindNodePhase          = "node.phase"
	KindDriftRepaired      = "drift.repaired"
	KindRunFailed          = "run.failed"
	KindNodeRegistered     = "node.registered"
	KindNodeJoined         = "node.joined"
	KindNodeLeft           = "node.left"
	KindNodeLabeled        = "node.labeled"
	KindNodeRevoked        = "node.revoked"
	KindNodeRemoved        = "node.removed"
	KindSecretSet          = "secret.set"
	KindSecretDeleted      = "secret.deleted"
	KindCoordinatorRemoved = "coordinator.removed"

	// Rollout progress (coordinator/rollout_events.go): the rollout of a
	// push with waves, from start to its end (completed, rolled back or
	// aborted).
	KindRolloutStarted    = "rollout.started"
	KindRolloutWaveOpened = "rollout.wave_opened"
	KindRolloutWaveHealth = "rollout.wave_healthy"
	KindRolloutPaused     = "rollout.paused"
	KindRolloutResumed    = "rollout.resumed"
	KindRolloutPromoted   = "rollout.promoted"
	KindRolloutRolledBack = "rollout.rolled_back"
	KindRolloutAborted    = "rollout.aborted"
	KindRolloutCompleted  = "rollout.completed"
	KindRolloutNodeFailed = "rollout.node_failed"
)

// DefaultRingSize is how many recent events a Hub keeps.
const DefaultRingSize = 2000

// SubscriberBuffer is how many events a subscriber may fall behind.
const SubscriberBuffer = 4096

// Hub keeps recent events and fans them out to subscribers.
type Hub struct {
	mu   sync.Mutex
	ring []*hivev1.Event
	next int // ring position of the next event once full
	seq  uint64
	subs map[*Sub]struct{}
	now  func() time.Time
}

// New returns a hub that keeps the last size events (DefaultRingSize if
// size <= 0).
func New(size int) *Hub {
	if size <= 0 {
		size = DefaultRingSize
	}
	return &Hub{ring: make([]*hivev1.Event, 0, size), subs: map[*Sub]struct{}{}, now: time.Now}
}

// Publish records a local event now (no raft index) and returns it.
func (h *Hub) Publish(kind, node, summary string, fields map[string]string) *hivev1.Event {
	return h.PublishEvent(&hivev1.Event{Kind: kind, Node: node, Summary: summary, Fields: fields})
}

// PublishEvent records e, setting its seq (and its time if unset), and
// returns it. e must not be modified afterwards.
func (h *Hub) PublishEvent(e *hivev1.Event) *hivev1.Event {
	if h == nil {
		return e
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	e.Seq = h.seq
	if e.Time == nil {
		e.Time = timestamppb.New(h.now())
	}
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, e)
	} else {
		h.ring[h.next] = e
		h.next = (h.next + 1) % len(h.ring)
	}
	for s := range h.subs {
		if !s.filter.Match(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			s.lagged.Store(true)
			delete(h.subs, s)
			close(s.ch)
		}
	}
	return e
}

// Filter selects events.
type Filter struct {
	// Kinds: exact kinds, or prefixes ending in "." or "*"; empty: all.
	Kinds []string
	// Node: only this node's events ("": all).
	Node string
}

// Match reports whether e passes f.
func (f Filter) Match(e *hivev1.Event) bool {
	if f.Node != "" && e.GetNode() != f.Node {
		return false
	}
	return MatchKind(f.Kinds, e.GetKind())
}

// MatchKind reports whether kind matches one of patterns: equal, or a
// prefix given as "node." or "node*"; "*" and an empty list match all.
func MatchKind(patterns []string, kind string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		switch {
		case p == kind, p == "*":
			return true
		case strings.HasSuffix(p, "*") && strings.HasPrefix(kind, strings.TrimSuffix(p, "*")):
			return true
		case strings.HasSuffix(p, ".") && strings.HasPrefix(kind, p):
			return true
		}
	}
	return false
}

// Sub is a live subscription.
type Sub struct {
	h      *Hub
	ch     chan *hivev1.Event
	filter Filter
	lagged atomic.Bool
}

// C delivers the events published after the subscription; it is closed
// when the subscriber fell behind (Lagged) or was closed.
func (s *Sub) C() <-chan *hivev1.Event { return s.ch }

// Lagged reports whether the hub dropped the subscriber for falling
// behind.
func (s *Sub) Lagged() bool { return s.lagged.Load() }

// Close ends the subscription.
func (s *Sub) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if _, ok := s.h.subs[s]; ok {
		delete(s.h.subs, s)
		close(s.ch)
	}
}

// Subscribe returns the kept events with seq > since that pass f, oldest
// first, and a subscription to the later ones: no event is missed or
// repeated between the two.
func (h *Hub) Subscribe(since uint64, f Filter) ([]*hivev1.Event, *Sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &Sub{h: h, ch: make(chan *hivev1.Event, SubscriberBuffer), filter: f}
	h.subs[s] = struct{}{}
	return h.historyLocked(since, f), s
}

// History returns the kept events with seq > since that pass f, oldest
// first.
func (h *Hub) History(since uint64, f Filter) []*hivev1.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.historyLocked(since, f)
}

func (h *Hub) historyLocked(since uint64, f Filter) []*hivev1.Event {
	var out []*hivev1.Event
	add := func(es []*hivev1.Event) {
		for _, e := range es {
			if e.GetSeq() > since && f.Match(e) {
				out = append(out, e)
			}
		}
	}
	add(h.ring[h.next:])
	add(h.ring[:h.next])
	return out
}

// Seq returns the seq of the last published event.
func (h *Hub) Seq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}
