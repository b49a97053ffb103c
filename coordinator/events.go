package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/gossip"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// ops is the coordinator's events and webhooks (events.go, webhooks.go).
type ops struct {
	events *events.Hub
	// converged is the generation whose generation.converged event was
	// published last (FSM goroutine only).
	converged uint64
	hooks     *webhooks
}

// initOps sets up the event hub, derives events from applied commands
// (FSM.OnCommand) and prepares the webhook sender. Called from New.
func (s *Server) initOps() {
	s.ops = &ops{events: events.New(events.DefaultRingSize)}
	s.ops.hooks = newWebhooks(s)
	s.fsm.OnCommand = s.deriveEvents
}

// Events returns the server's event hub: other parts of the coordinator
// publish their events there (Publish(kind, node, summary, fields)).
func (s *Server) Events() *events.Hub { return s.ops.events }

// opsLoop runs the membership watcher and the webhook sender until ctx
// ends.
func (s *Server) opsLoop(ctx context.Context) {
	s.registerOpsMetrics()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.ops.hooks.run(ctx) }()
	if s.gossip != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.watchMembership(ctx) }()
	}
	wg.Wait()
}

// watchMembership publishes agents' gossip joins and leaves (this
// server's local view).
func (s *Server) watchMembership(ctx context.Context) {
	ch, cancel := s.gossip.Subscribe(256)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			m := ev.Member
			if m.Self {
				continue
			}
			kind := strings.ToLower(strings.TrimPrefix(m.Meta.GetKind().String(), "MEMBER_KIND_"))
			fields := map[string]string{"member_kind": kind, "addr": m.Addr}
			switch ev.Type {
			case gossip.EventJoin:
				s.ops.events.Publish(events.KindNodeJoined, m.Name, fmt.Sprintf("%s %s joined gossip at %s", kind, m.Name, m.Addr), fields)
			case gossip.EventLeave:
				fields["state"] = m.State.String()
				s.ops.events.Publish(events.KindNodeLeft, m.Name, fmt.Sprintf("%s %s left gossip (%s)", kind, m.Name, m.State.String()), fields)
			}
		}
	}
}

// eventDerivers derive events from an applied command, by body name.
// before runs on the store before the command applies; it returns the
// function that, given the result and the store after, publishes. Add an
// entry for a new command whose effect operators want to hear about.
var eventDerivers = map[string]func(s *Server, st *state.Store, c *hivev1.Command) func(res *hivev1.CommandResult, emit func(*hivev1.Event)){
	"push": func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if !applied(res) {
				return
			}
			g := st.Generation(res.GetGeneration())
			emit(&hivev1.Event{Kind: events.KindPush,
				Summary: fmt.Sprintf("generation %d pushed by %s%s", g.GetNumber(), g.GetAuthor(), messageSuffix(g.GetMessage())),
				Fields:  map[string]string{"generation": u64(g.GetNumber()), "author": g.GetAuthor(), "sha256": g.GetSha256(), "message": g.GetMessage()}})
		}
	},
	"rollback": func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if !applied(res) {
				return
			}
			g := st.Generation(res.GetGeneration())
			emit(&hivev1.Event{Kind: events.KindRollback,
				Summary: fmt.Sprintf("generation %d rolls back to generation %d, by %s", g.GetNumber(), c.GetRollback().GetTarget(), g.GetAuthor()),
				Fields:  map[string]string{"generation": u64(g.GetNumber()), "target": u64(c.GetRollback().GetTarget()), "author": g.GetAuthor(), "sha256": g.GetSha256()}})
		}
	},
	"node_upsert": func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		name := c.GetNodeUpsert().GetName()
		known := st.Node(name) != nil
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if known || res.GetError() != "" || st.Node(name) == nil {
				return
			}
			emit(&hivev1.Event{Kind: events.KindNodeRegistered, Node: name, Summary: "node " + name + " registered"})
		}
	},
	"node_label": func(_ *Server, _ *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindNodeLabeled, Node: c.GetNodeLabel().GetName(), Summary: auditSummary(c)})
			}
		}
	},
	"node_revoke": func(_ *Server, _ *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindNodeRevoked, Node: c.GetNodeRevoke().GetNode(), Summary: auditSummary(c)})
			}
		}
	},
	"node_remove": func(_ *Server, _ *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindNodeRemoved, Node: c.GetNodeRemove().GetNode(), Summary: auditSummary(c)})
			}
		}
	},
	"secret_set": func(_ *Server, _ *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			name := c.GetSecretSet().GetName()
			if applied(res) && !state.IsPublished(name) {
				emit(&hivev1.Event{Kind: events.KindSecretSet, Summary: "secret " + name + " set by " + c.GetSecretSet().GetAuthor(), Fields: map[string]string{"name": name}})
			}
		}
	},
	"secret_delete": func(_ *Server, _ *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			name := c.GetSecretDelete().GetName()
			if applied(res) && !state.IsPublished(name) {
				emit(&hivev1.Event{Kind: events.KindSecretDeleted, Summary: "secret " + name + " deleted by " + c.GetSecretDelete().GetAuthor(), Fields: map[string]string{"name": name}})
			}
		}
	},
	"peer_remove": func(_ *Server, _ *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindCoordinatorRemoved, Node: c.GetPeerRemove().GetName(), Summary: "coordinator " + c.GetPeerRemove().GetName() + " removed"})
			}
		}
	},
	"report_batch": deriveReportEvents,
}

func applied(res *hivev1.CommandResult) bool { return res.GetError() == "" && !res.GetUnchanged() }

func u64(n uint64) string { return strconv.FormatUint(n, 10) }

// deriveEvents is the FSM's OnCommand hook: it runs on the FSM goroutine
// and publishes the events of c, stamped with the command's time and raft
// index (identical on every coordinator).
func (s *Server) deriveEvents(st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult) {
	d := eventDerivers[commandName(c)]
	if d == nil {
		return nil
	}
	index := st.Index()
	after := d(s, st, c)
	return func(res *hivev1.CommandResult) {
		after(res, func(e *hivev1.Event) {
			e.Time, e.Index = c.GetTime(), index
			s.ops.events.PublishEvent(e)
		})
	}
}

// eventful selects the results a report's events name: failed ones and
// drift repairs (the others are not decoded: state/results.go).
func eventful(o hivev1.Outcome, c hivev1.Cause) bool {
	return state.Failed(o, c) || state.DriftRepaired(o, c)
}

// deriveReportEvents publishes, for each report of a batch the store
// accepted: a node.phase event when the node's phase or generation
// changed, drift.repaired when resources had drifted from an unchanged
// desired state and were put back (ResourceResult.cause DRIFT),
// run.failed when resources failed; then generation.converged once every
// node with roles converged on the current generation.
func deriveReportEvents(s *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	reports := c.GetReportBatch().GetReports()
	prev := make(map[string]*hivev1.Report, len(reports))
	for _, r := range reports {
		prev[r.GetNode()] = st.Report(r.GetNode())
	}
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		cur := st.CurrentNumber()
		newlyConverged := false
		for _, r := range reports {
			node := r.GetNode()
			stored := st.Report(node)
			if stored == nil || stored.GetSeq() != r.GetSeq() || !stored.GetFinished().AsTime().Equal(r.GetFinished().AsTime()) {
				continue // not accepted (older than the stored one)
			}
			if r.GetDryRun() {
				continue
			}
			old := prev[node]
			gen := u64(r.GetGeneration())
			if old == nil || old.GetPhase() != r.GetPhase() || old.GetGeneration() != r.GetGeneration() || old.GetDryRun() {
				phase := strings.ToLower(strings.TrimPrefix(r.GetPhase().String(), "PHASE_"))
				f := map[string]string{"phase": phase, "generation": gen}
				if old != nil {
					f["previous_phase"] = strings.ToLower(strings.TrimPrefix(old.GetPhase().String(), "PHASE_"))
					f["previous_generation"] = u64(old.GetGeneration())
				}
				emit(&hivev1.Event{Kind: events.KindNodePhase, Node: node, Summary: fmt.Sprintf("%s %s on generation %d", node, phase, r.GetGeneration()), Fields: f})
				if r.GetPhase() == hivev1.Phase_PHASE_CONVERGED && r.GetGeneration() >= cur {
					newlyConverged = true
				}
			}
			var drifted, failed []string
			firstErr := ""
			for _, rr := range state.ResultsWhere(r, eventful) {
				switch {
				case rr.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED:
					failed = append(failed, rr.GetKey())
					if firstErr == "" {
						firstErr = rr.GetKey() + ": " + truncate(rr.GetMessage(), 200)
					}
				case rr.GetOutcome() == hivev1.Outcome_OUTCOME_CHANGED && rr.GetCause() == hivev1.Cause_CAUSE_DRIFT:
					drifted = append(drifted, rr.GetKey())
				}
			}
			if len(drifted) > 0 {
				emit(&hivev1.Event{Kind: events.KindDriftRepaired, Node: node,
					Summary: fmt.Sprintf("%s repaired drift of %s", node, strings.Join(capList(drifted, 10), ", ")),
					Fields:  map[string]string{"keys": strings.Join(drifted, ","), "generation": gen, "trigger": r.GetTrigger()}})
			}
			if len(failed) > 0 || r.GetPhase() == hivev1.Phase_PHASE_FAILED {
				emit(&hivev1.Event{Kind: events.KindRunFailed, Node: node,
					Summary: fmt.Sprintf("%s failed on generation %d: %s", node, r.GetGeneration(), orNone(firstErr)),
					Fields:  map[string]string{"keys": strings.Join(failed, ","), "generation": gen, "trigger": r.GetTrigger()}})
			}
		}
		if newlyConverged && s.ops.converged < cur {
			if n, ok := allConverged(st, cur); ok {
				s.ops.converged = cur
				emit(&hivev1.Event{Kind: events.KindGenerationConverge,
					Summary: fmt.Sprintf("generation %d converged on all %d nodes", cur, n),
					Fields:  map[string]string{"generation": u64(cur), "nodes": strconv.Itoa(n)}})
			}
		}
	}
}

func capList(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(append([]string(nil), s[:n]...), fmt.Sprintf("and %d more", len(s)-n))
}

func orNone(s string) string {
	if s == "" {
		return "no resource failed (see the node's status)"
	}
	return s
}

// allConverged reports whether every registered node the generation gen
// gives a role has reported it converged (on gen or later), and how many
// such nodes there are (false for none).
func allConverged(st *state.Store, gen uint64) (int, bool) {
	g := st.Generation(gen)
	if g == nil {
		return 0, false
	}
	// Runs on the FSM goroutine for every report batch that converges a
	// node: one unsorted pass that stops at the first node behind (sorting
	// the registry first was half a coordinator's CPU at 10,000 nodes).
	// Nodes in maintenance are held on their generation and not counted;
	// their set is read first (EachNodeReport holds the store's read lock,
	// which must not be taken again inside it).
	held := map[string]bool{}
	for _, m := range st.Maintained() {
		held[m.GetNode()] = true
	}
	n, all := 0, true
	st.EachNodeReport(func(rec *hivev1.NodeRecord, r *hivev1.Report) bool {
		if len(render.SelectRoles(g.GetSite(), rec.GetName(), state.MatchLabels(rec))) == 0 || held[rec.GetName()] {
			return true // no role, or held on its generation in maintenance
		}
		if r == nil || r.GetDryRun() || r.GetGeneration() < gen || r.GetPhase() != hivev1.Phase_PHASE_CONVERGED {
			all = false
			return false
		}
		n++
		return true
	})
	return n, all && n > 0
}

// WatchEvents streams the kept events, then live ones with follow.
func (a *api) WatchEvents(req *hivev1.WatchEventsRequest, stream hivev1.CoordinatorService_WatchEventsServer) error {
	for i, k := range req.GetKinds() {
		if k == "" || len(k) > 64 || strings.ContainsAny(k, " \t\r\n") {
			return status.Errorf(codes.InvalidArgument, "kinds[%d]: %q is not an event kind or prefix", i, k)
		}
	}
	if len(req.GetKinds()) > 32 {
		return status.Errorf(codes.InvalidArgument, "kinds: %d given; at most 32", len(req.GetKinds()))
	}
	if req.GetMaxAge() != nil {
		if err := req.GetMaxAge().CheckValid(); err != nil || req.GetMaxAge().AsDuration() < 0 {
			return status.Errorf(codes.InvalidArgument, "max_age: not a valid non-negative duration")
		}
	}
	f := events.Filter{Kinds: req.GetKinds(), Node: req.GetNode()}
	hub := a.s.ops.events
	var hist []*hivev1.Event
	var sub *events.Sub
	if req.GetFollow() {
		hist, sub = hub.Subscribe(req.GetSinceSeq(), f)
		defer sub.Close()
	} else {
		hist = hub.History(req.GetSinceSeq(), f)
	}
	if d := req.GetMaxAge().AsDuration(); req.GetMaxAge() != nil && d > 0 && len(hist) > 0 {
		cut := time.Now().Add(-d)
		i := sort.Search(len(hist), func(i int) bool { return !hist[i].GetTime().AsTime().Before(cut) })
		hist = hist[i:]
	}
	if l := int(req.GetHistoryLimit()); l > 0 && len(hist) > l {
		hist = hist[len(hist)-l:]
	}
	for _, e := range hist {
		if err := stream.Send(&hivev1.WatchEventsResponse{Event: e}); err != nil {
			return err
		}
	}
	if err := stream.Send(&hivev1.WatchEventsResponse{Live: true}); err != nil {
		return err
	}
	if sub == nil {
		return nil
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.s.ctx.Done():
			return status.Error(codes.Unavailable, "coordinator stopping")
		case e, ok := <-sub.C():
			if !ok {
				if sub.Lagged() {
					return status.Errorf(codes.ResourceExhausted, "the event stream fell too far behind (more than %d events); resume with since_seq set to the last seq received", events.SubscriberBuffer)
				}
				return nil
			}
			if err := stream.Send(&hivev1.WatchEventsResponse{Event: e, Live: true}); err != nil {
				return err
			}
		}
	}
}

// registerOpsMetrics adds the event and webhook counters to /metrics.
func (s *Server) registerOpsMetrics() {
	h := s.ops.hooks
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_events_total",
			Help: "Fleet events published on this server (derived from applied commands, and gossip membership)."},
			func() float64 { return float64(s.ops.events.Seq()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_webhook_deliveries_total",
			Help: "Webhook deliveries accepted by their receivers (as leader)."},
			func() float64 { return float64(h.delivered.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_webhook_failures_total",
			Help: "Webhook deliveries given up after every attempt failed."},
			func() float64 { return float64(h.failed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_webhook_dropped_total",
			Help: "Events not delivered because a webhook's queue was full."},
			func() float64 { return float64(h.dropped.Load()) }),
	} {
		if err := s.metrics.reg.Register(c); err != nil {
			s.log.Warn("register metric", "err", err)
		}
	}
}
