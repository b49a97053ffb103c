package coordinator

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Rollout progress events (docs/operations.md, "Events"). They are
// derived, like every other command event, from the applied rollout
// commands on the FSM goroutine, so every coordinator serves the same
// ones and the leader's webhooks deliver them:
//
//	rollout_push      push, rollout.started (with wave 1 open)
//	rollout_wave      rollout.wave_healthy (the previous wave, when the
//	                  gate opened the next one), rollout.wave_opened; an
//	                  operator's promote: rollout.promoted, rollout.wave_opened
//	rollout_pause     rollout.paused (the gate's reason names the node)
//	rollout_resume    rollout.resumed
//	rollout_rollback  rollout.rolled_back, or rollout.aborted
//	rollout_complete  rollout.wave_healthy (the last wave), rollout.completed
//	report_batch      rollout.node_failed: a node of the rollout reported,
//	                  for the rollout's generation, a failed run or failing
//	                  health checks (once per failure, not on every report)
func init() {
	eventDerivers["rollout_push"] = deriveRolloutPush
	eventDerivers["rollout_wave"] = deriveRolloutWave
	eventDerivers["rollout_pause"] = deriveRolloutPause
	eventDerivers["rollout_resume"] = deriveRolloutResume
	eventDerivers["rollout_rollback"] = deriveRolloutRollback
	eventDerivers["rollout_complete"] = deriveRolloutComplete
	reports := eventDerivers["report_batch"]
	eventDerivers["report_batch"] = func(s *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		a, b := reports(s, st, c), deriveRolloutNodeFailed(st, c)
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			a(res, emit)
			b(res, emit)
		}
	}
}

// rolloutFields are the fields every rollout event carries.
func rolloutFields(r *hivev1.Rollout, more ...string) map[string]string {
	f := map[string]string{
		"generation": u64(r.GetGeneration()),
		"state":      rolloutStateName(r.GetState()),
		"waves":      strconv.Itoa(len(r.GetWaves())),
		"opened":     strconv.FormatUint(uint64(r.GetOpened()), 10),
		"nodes":      strconv.Itoa(len(r.GetNodes())),
	}
	for i := 0; i+1 < len(more); i += 2 {
		if more[i+1] != "" {
			f[more[i]] = more[i+1]
		}
	}
	return f
}

func rolloutStateName(st hivev1.RolloutState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "ROLLOUT_STATE_"))
}

// waveEvent is wave (0-based) of r opened or healthy.
func waveEvent(kind string, r *hivev1.Rollout, wave uint32, author string) *hivev1.Event {
	w := r.GetWaves()[wave]
	name := fmt.Sprintf("wave %d of %d", wave+1, len(r.GetWaves()))
	if w.GetCanary() {
		name = "canary " + name
	}
	f := rolloutFields(r, "wave", strconv.FormatUint(uint64(wave)+1, 10), "wave_nodes", strings.Join(w.GetNodes(), ","), "author", author)
	var summary string
	switch kind {
	case events.KindRolloutWaveOpened:
		summary = fmt.Sprintf("rollout of generation %d: %s opened (%s)", r.GetGeneration(), name, strings.Join(capList(w.GetNodes(), 10), ", "))
	default:
		f["min_healthy_time"] = w.GetMinHealthyTime().AsDuration().String()
		summary = fmt.Sprintf("rollout of generation %d: %s healthy for %v (%s)", r.GetGeneration(), name, w.GetMinHealthyTime().AsDuration(), plural(len(w.GetNodes()), "node"))
	}
	return &hivev1.Event{Kind: kind, Summary: summary, Fields: f}
}

func deriveRolloutPush(s *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	push := eventDerivers["push"](s, st, c) // the push itself, as a plain one
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		push(res, emit)
		r := st.Rollout()
		if !applied(res) || r.GetGeneration() != res.GetGeneration() || len(r.GetWaves()) == 0 {
			return
		}
		w := r.GetWaves()[0]
		canary := ""
		if w.GetCanary() {
			canary = strings.Join(w.GetNodes(), ",")
		}
		e := &hivev1.Event{Kind: events.KindRolloutStarted,
			Summary: fmt.Sprintf("rollout of generation %d started by %s: %d waves over %d nodes", r.GetGeneration(), r.GetAuthor(), len(r.GetWaves()), len(r.GetNodes())),
			Fields:  rolloutFields(r, "author", r.GetAuthor(), "base_generation", u64(r.GetBaseGeneration()), "canary", canary, "on_failure", strings.ToLower(strings.TrimPrefix(r.GetPolicy().GetOnFailure().String(), "ROLLOUT_ON_FAILURE_")))}
		if canary != "" {
			e.Summary += ", canary " + strings.Join(capList(w.GetNodes(), 10), ", ")
		}
		emit(e)
		emit(waveEvent(events.KindRolloutWaveOpened, r, 0, r.GetAuthor()))
	}
}

func deriveRolloutWave(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	wc := c.GetRolloutWave()
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		r := st.Rollout()
		if !applied(res) || r.GetGeneration() != wc.GetGeneration() || int(wc.GetWave()) >= len(r.GetWaves()) {
			return
		}
		if wc.GetPromote() {
			emit(&hivev1.Event{Kind: events.KindRolloutPromoted,
				Summary: fmt.Sprintf("rollout of generation %d promoted by %s: wave %d opened without waiting for the gate", r.GetGeneration(), wc.GetAuthor(), wc.GetWave()+1),
				Fields:  rolloutFields(r, "wave", strconv.FormatUint(uint64(wc.GetWave())+1, 10), "author", wc.GetAuthor())})
		} else if wc.GetWave() > 0 {
			emit(waveEvent(events.KindRolloutWaveHealth, r, wc.GetWave()-1, wc.GetAuthor()))
		}
		emit(waveEvent(events.KindRolloutWaveOpened, r, wc.GetWave(), wc.GetAuthor()))
	}
}

func deriveRolloutPause(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	pc := c.GetRolloutPause()
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		r := st.Rollout()
		if !applied(res) || r.GetGeneration() != pc.GetGeneration() {
			return
		}
		emit(&hivev1.Event{Kind: events.KindRolloutPaused,
			Summary: fmt.Sprintf("rollout of generation %d paused by %s: %s", r.GetGeneration(), pc.GetAuthor(), truncate(pc.GetReason(), 300)),
			Fields:  rolloutFields(r, "reason", pc.GetReason(), "author", pc.GetAuthor())})
	}
}

func deriveRolloutResume(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	rc := c.GetRolloutResume()
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		r := st.Rollout()
		if !applied(res) || r.GetGeneration() != rc.GetGeneration() {
			return
		}
		emit(&hivev1.Event{Kind: events.KindRolloutResumed,
			Summary: fmt.Sprintf("rollout of generation %d resumed by %s", r.GetGeneration(), rc.GetAuthor()),
			Fields:  rolloutFields(r, "author", rc.GetAuthor())})
	}
}

func deriveRolloutRollback(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	rc := c.GetRolloutRollback()
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		r := st.Rollout()
		if !applied(res) || r.GetGeneration() != rc.GetGeneration() {
			return
		}
		kind, verb := events.KindRolloutRolledBack, "rolled back"
		if rc.GetAbort() {
			kind, verb = events.KindRolloutAborted, "aborted"
		}
		summary := fmt.Sprintf("rollout of generation %d %s by %s: %s", r.GetGeneration(), verb, rc.GetAuthor(), truncate(rc.GetReason(), 300))
		revert := ""
		if g := r.GetRevertGeneration(); g > 0 {
			revert = u64(g)
			summary += fmt.Sprintf("; generation %d puts generation %d's content back", g, r.GetBaseGeneration())
		}
		emit(&hivev1.Event{Kind: kind, Summary: summary,
			Fields: rolloutFields(r, "reason", rc.GetReason(), "author", rc.GetAuthor(), "revert_generation", revert, "base_generation", u64(r.GetBaseGeneration()))})
	}
}

func deriveRolloutComplete(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	cc := c.GetRolloutComplete()
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		r := st.Rollout()
		if !applied(res) || r.GetGeneration() != cc.GetGeneration() || len(r.GetWaves()) == 0 {
			return
		}
		emit(waveEvent(events.KindRolloutWaveHealth, r, uint32(len(r.GetWaves())-1), "rollout gate"))
		emit(&hivev1.Event{Kind: events.KindRolloutCompleted,
			Summary: fmt.Sprintf("rollout of generation %d completed: %d waves, %d nodes healthy", r.GetGeneration(), len(r.GetWaves()), len(r.GetNodes())),
			Fields:  rolloutFields(r, "started", r.GetStarted().AsTime().UTC().Format("2006-01-02T15:04:05Z"))})
	}
}

// deriveRolloutNodeFailed publishes rollout.node_failed when a node of a
// running or paused rollout reports a failed run or failing checks on the
// rollout's generation and its previous report did not.
func deriveRolloutNodeFailed(st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
	r := st.Rollout()
	if r == nil || state.RolloutDone(r.GetState()) {
		return func(*hivev1.CommandResult, func(*hivev1.Event)) {}
	}
	gen := r.GetGeneration()
	// Runs for every report batch: look nodes up in the rollout's sorted
	// node list instead of indexing it (a rollout may name 10,000 nodes).
	planned := r.GetNodes()
	waveOf := func(name string) (uint32, bool) {
		i := sort.Search(len(planned), func(i int) bool { return planned[i].GetName() >= name })
		if i < len(planned) && planned[i].GetName() == name {
			return planned[i].GetWave(), true
		}
		return 0, false
	}
	reports := c.GetReportBatch().GetReports()
	prevFailed := map[string]bool{}
	for _, rep := range reports {
		if _, ok := waveOf(rep.GetNode()); ok {
			_, failed := nodeHealth(st.Report(rep.GetNode()), gen, false)
			prevFailed[rep.GetNode()] = failed != ""
		}
	}
	return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
		for _, rep := range reports {
			node := rep.GetNode()
			wave, ok := waveOf(node)
			if !ok || prevFailed[node] || rep.GetDryRun() {
				continue
			}
			stored := st.Report(node)
			if stored == nil || stored.GetSeq() != rep.GetSeq() || !stored.GetFinished().AsTime().Equal(rep.GetFinished().AsTime()) {
				continue // not accepted
			}
			_, failed := nodeHealth(stored, gen, false)
			if failed == "" {
				continue
			}
			prevFailed[node] = true // one event per node per batch
			emit(&hivev1.Event{Kind: events.KindRolloutNodeFailed, Node: node,
				Summary: truncate(fmt.Sprintf("rollout of generation %d: %s (wave %d) %s", gen, node, wave+1, failed), 500),
				Fields:  rolloutFields(r, "wave", strconv.FormatUint(uint64(wave)+1, 10), "reason", truncate(failed, 500))})
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
