// Package agent is hive-agent: it joins the gossip pool, finds the
// coordinators there, watches its NodeState from one of them, converges the
// machine to it with the converge engine, keeps converging it on a drift
// interval even when no coordinator is reachable, and reports every run.
//
// Goroutines (all started by Run, all ended before Run returns):
//   - gossip: membership (package gossip), when configured;
//   - watch: dials a coordinator (gossip-learned or static addresses),
//     opens WatchNodeState with the hash of the state it already has (an
//     unchanged state is not sent again, so not re-applied), stores each
//     new state in the offline cache and wakes the run loop; on stream
//     loss, or when gossip says the coordinator died, it switches to
//     another with exponential backoff and jitter;
//   - run loop: the only caller of Engine.Run, so two runs never overlap;
//     runs on a new state, on the jittered Interval, on Trigger (SIGHUP);
//     triggers arriving during a run are coalesced into one next run; a
//     failed run is retried with exponential backoff;
//   - reporter: sends queued reports in sequence order whenever a
//     coordinator connection is up; reports are written to the on-disk
//     queue first, so none is lost while no coordinator is reachable;
//   - systemd: READY=1 after the first run (from the cache or from a
//     coordinator), WATCHDOG=1 while the run loop is healthy.
//
// Invariants: the cache holds the last state received (atomically
// written, checksummed; a corrupt file is moved aside and ignored); a
// state older (lower generation) than the one held is refused; a report's
// seq grows across restarts. On cancellation, or when a newer generation
// arrives, a run in progress gets Config.StopGrace to finish before its
// context is cancelled, which aborts it between (or inside, for providers
// honouring ctx, and template rendering) resources.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/agent/health"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/confirm"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/limits"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/version"
)

// errStopping is the cause of a run cancelled because the agent stops.
var errStopping = errors.New("agent stopping")

// Run triggers (Report.trigger).
const (
	TriggerStartup  = "startup"
	TriggerState    = "state"
	TriggerInterval = "interval"
	TriggerSignal   = "signal"
	TriggerRetry    = "retry"
	// TriggerRollback: the firewall rolled back an unconfirmed change;
	// the run reports it at once.
	TriggerRollback = "firewall-rollback"
	// TriggerConfirmRollback: the confirm window of other resources
	// (file, sysctl) rolled back; the run reports it at once.
	TriggerConfirmRollback = "confirm-rollback"
)

// Agent is one hive-agent.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	deps   Deps
	cache  *Cache
	gossip *gossip.Gossip
	start  time.Time

	mu      sync.Mutex
	state   *hivev1.NodeState // desired state, nil until known
	pending string            // coalesced trigger reason
	wake    chan struct{}     // run loop wake-up (cap 1)

	conn       atomic.Pointer[connHolder]
	remembered []string      // coordinators known in the last session (read-only after New)
	saved      string        // last saved coordinator list, watch goroutine only
	poolSize   int           // pool size last saved, poolLoop only
	fleetSize  int           // gossip pool size this agent sized for (read-only after New)
	reportWake chan struct{} // reporter wake-up (cap 1)
	reconnect  chan struct{} // the certificate was renewed: reconnect the watch (cap 1)
	seq        atomic.Uint64

	runStarted atomic.Int64    // unix nanos of the run in progress, 0 when idle
	running    *runCtl         // the run in progress, guarded by mu; nil when idle
	probing    map[Window]bool // windows a confirmWindow goroutine probes, guarded by mu
	confirm    *confirmer      // confirm windows of file, sysctl, …; nil without a Restorer engine or in a dry run
	ready      atomic.Bool
	readyCh    chan struct{}
	stats      Stats
	statsMu    sync.Mutex
	metrics    *agentMetrics // metrics.go
	metricsLn  net.Listener  // nil unless Config.MetricsAddr

	health     *health.Checker
	healthWake chan struct{}  // a check changed (cap 1)
	lastReport *hivev1.Report // last report queued, guarded by mu
	lastOK     string         // state hash of the last successful run, run loop only
	reboots    *rebooter      // boot id and reboot memory (reboot.go)
}

// runCtl lets deliver supersede the run in progress.
type runCtl struct {
	gen       uint64
	cancel    context.CancelCauseFunc
	supersede *time.Timer // set once a newer generation arrived
}

// Stats are counters for tests and status.
type Stats struct {
	Runs           int
	FailedRuns     int
	LastTrigger    string
	LastGeneration uint64
	ReportsSent    int
	Reconnects     int
}

// New prepares an agent: it opens the cache, loads the cached state and
// binds the gossip port; nothing runs until Run.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if deps.Engine == nil {
		return nil, errors.New("agent: no engine")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BootstrapTokenFile != "" && cfg.TLSCert == "" && cfg.TLSKey == "" {
		cfg.TLSCert = filepath.Join(cfg.DataDir, "tls", "agent.pem")
		cfg.TLSKey = filepath.Join(cfg.DataDir, "tls", "agent-key.pem")
	}
	a := &Agent{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "agent"),
		deps:       deps,
		start:      time.Now(),
		wake:       make(chan struct{}, 1),
		reportWake: make(chan struct{}, 1),
		reconnect:  make(chan struct{}, 1),
		readyCh:    make(chan struct{}),
		metrics:    newAgentMetrics(),
		healthWake: make(chan struct{}, 1),
	}
	a.health = a.newChecker()
	c, err := OpenCache(cfg.DataDir, a.log)
	if err != nil {
		return nil, err
	}
	a.cache = c
	if r, ok := deps.Engine.(Restorer); ok && !cfg.DryRun {
		if a.confirm, err = newConfirmer(filepath.Join(cfg.DataDir, ConfirmFile), r, a.log, a.current); err != nil {
			return nil, err
		}
	}
	if a.reboots, err = newRebooter(cfg, a.start); err != nil {
		return nil, err
	}
	if deps.issuer != nil {
		deps.issuer.a.Store(a)
	}
	st, err := c.LoadState()
	if err != nil {
		a.log.Warn("ignoring the cached state", "err", err)
	}
	a.removeStaleTemps(st)
	if st != nil {
		a.state = st
		a.log.Info("loaded cached state", "generation", st.GetGeneration(), "hash", short(st.GetHash()), "resources", len(st.GetResources()))
	}
	ap, err := c.LoadApplied()
	if err != nil {
		a.log.Warn("ignoring the cached last-applied record", "err", err)
	}
	seq := ap.Seq
	a.lastOK = ap.LastConverged
	if q, err := c.Queued(); err == nil && len(q) > 0 {
		seq = max(seq, q[len(q)-1])
	}
	a.seq.Store(seq)
	if rem, err := c.LoadCoordinators(); err != nil {
		a.log.Warn("ignoring the remembered coordinator list", "err", err)
	} else {
		a.remembered = rem
	}

	if cfg.Gossip != nil {
		gc := *cfg.Gossip
		if gc.PoolSize == 0 {
			// Size gossip for the fleet this agent saw last: after a power
			// cut, a thousand agents start at once with the right timing.
			n, err := c.LoadPoolSize()
			if err != nil {
				a.log.Warn("ignoring the remembered gossip pool size", "err", err)
			}
			gc.PoolSize, a.poolSize = n, n
		}
		a.fleetSize = gc.PoolSize
		if gc.JoinSpread == 0 && gc.Profile != gossip.ProfileLocal {
			gc.JoinSpread = JoinSpread(gc.PoolSize)
		}
		gc.Name = cfg.Name
		gc.Logger = cfg.Logger
		gc.Meta = &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_AGENT, Labels: cfg.Labels, Version: version.Version}
		g, err := gossip.New(gc)
		if errors.Is(err, gossip.ErrMetaTooLarge) {
			// Labels reach the coordinators through the watch anyway;
			// gossip only shows them in `hivectl members`.
			a.log.Warn("labels do not fit gossip metadata; advertising none through gossip", "err", err)
			gc.Meta.Labels = nil
			g, err = gossip.New(gc)
		}
		if err != nil {
			return nil, err
		}
		a.gossip = g
	}
	if err := a.listenMetrics(); err != nil {
		if a.gossip != nil {
			a.gossip.Close()
		}
		return nil, err
	}
	if st != nil {
		a.metrics.desired.Set(float64(st.GetGeneration()))
	}
	return a, nil
}

// Gossip returns the agent's gossip member (nil without gossip).
func (a *Agent) Gossip() *gossip.Gossip { return a.gossip }

// Ready is closed after the first convergence run.
func (a *Agent) Ready() <-chan struct{} { return a.readyCh }

// Stats returns a copy of the counters.
func (a *Agent) Stats() Stats {
	a.statsMu.Lock()
	defer a.statsMu.Unlock()
	return a.stats
}

// Trigger asks for a run as soon as the current one (if any) ends; used
// for SIGHUP (reason TriggerSignal). It never blocks.
func (a *Agent) Trigger(reason string) {
	a.mu.Lock()
	if a.pending == "" || reason == TriggerState {
		a.pending = reason
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Run runs the agent until ctx is done, then stops every part cleanly and
// returns nil; it returns an error only if the agent cannot start.
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		if a.deps.Close != nil {
			_ = a.deps.Close()
		}
	}()
	var wg sync.WaitGroup
	goRun := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	if a.gossip != nil {
		goRun(func(ctx context.Context) { _ = a.gossip.Run(ctx) })
	}
	a.mu.Lock()
	cached := a.state != nil
	a.mu.Unlock()
	if cached {
		a.Trigger(TriggerStartup)
	}
	if w := a.confirm.recover(); w != nil {
		if !time.Now().Before(w.Deadline()) {
			// Expired while the agent was down: its timer rolls back at
			// once; wait for it before the first run (which reports it),
			// without probing.
			<-w.Done()
			a.Trigger(TriggerConfirmRollback)
		} else if a.startProbing(w) {
			goRun(func(ctx context.Context) { a.confirmWindow(ctx, w) })
		}
	}
	certReady := make(chan struct{}) // closed once the certificate exists
	if !a.cfg.Dev {
		if did, err := recoverPair(a.cfg.TLSCert, a.cfg.TLSKey); err != nil {
			a.log.Error("cannot recover an interrupted certificate renewal", "err", err)
		} else if did != "" {
			a.log.Warn(did, "cert", a.cfg.TLSCert)
		}
		goRun(func(ctx context.Context) { a.renewLoop(ctx, certReady) })
	}
	if a.needsBootstrap() {
		goRun(func(ctx context.Context) {
			if err := a.bootstrap(ctx); err != nil {
				if ctx.Err() == nil {
					a.log.Error("cannot obtain the agent certificate; converging from the cache only", "err", err)
				}
				return
			}
			close(certReady)
			a.watchLoop(ctx)
		})
	} else {
		close(certReady)
		goRun(a.watchLoop)
	}
	goRun(a.reportLoop)
	goRun(a.health.Run)
	goRun(a.healthLoop)
	goRun(a.watchdog)
	if a.metricsLn != nil {
		goRun(a.serveMetrics)
	}
	if a.gossip != nil {
		goRun(a.poolLoop)
	}
	a.runLoop(ctx)
	notify(a.log, daemon.SdNotifyStopping)
	wg.Wait()
	a.log.Info("agent stopped")
	return nil
}

// JoinSpread is the agent's default gossip join spread for a pool of n
// members: 30ms per member, at least 1s, at most 60s. A thousand agents
// starting together then join over 30s, about 33 joins a second (each a
// full state exchange with a seed; memberlist refuses more than 128 at
// once, and 500 agents joining within 5s overran three coordinators on
// the shared 2-core test machine).
func JoinSpread(n int) time.Duration {
	return min(max(time.Duration(n)*30*time.Millisecond, time.Second), time.Minute)
}

// RestartSpread is the longest random delay before a restarted agent (one
// with a cached state, which it enforces meanwhile) first dials a
// coordinator, in a fleet of n members: 20ms per member past 64, at most
// 20s. After a power cut, 500 agents then reconnect over 10s rather than
// within the same second; a first start (no cached state) and a small fleet
// dial at once.
func RestartSpread(n int) time.Duration {
	if n <= 64 {
		return 0
	}
	return min(time.Duration(n)*20*time.Millisecond, 20*time.Second)
}

// poolLoop remembers the gossip pool's size (alive members) every few
// minutes when it changed by more than a tenth, for the next start's
// gossip sizing (gossip.Config.PoolSize).
func (a *Agent) poolLoop(ctx context.Context) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := 0
		for _, m := range a.gossip.Members() {
			if m.State == gossip.StateAlive {
				n++
			}
		}
		if d := n - a.poolSize; n > 1 && (d*10 > a.poolSize || -d*10 > a.poolSize) {
			if err := a.cache.SavePoolSize(n); err != nil {
				a.log.Warn("cannot remember the gossip pool size", "err", err)
			} else {
				a.poolSize = n
			}
		}
		t.Reset(jitter(5*time.Minute, 20))
	}
}

func (a *Agent) current() *hivev1.NodeState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

func (a *Agent) takePending() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.pending
	a.pending = ""
	return r
}

// deliver takes a state from a coordinator: cache it, then wake the loop.
// A state with the hash already held is ignored; an older generation is
// refused.
func (a *Agent) deliver(st *hivev1.NodeState) {
	a.mu.Lock()
	cur := a.state
	if cur != nil && st.GetHash() == cur.GetHash() {
		a.mu.Unlock()
		return
	}
	if cur != nil && st.GetGeneration() < cur.GetGeneration() {
		a.mu.Unlock()
		a.log.Warn("refusing a state older than the one held", "got", st.GetGeneration(), "have", cur.GetGeneration())
		return
	}
	a.state = st
	superseding := a.supersedeLocked(st.GetGeneration())
	a.mu.Unlock()
	a.metrics.desired.Set(float64(st.GetGeneration()))
	if superseding {
		a.log.Info("a newer generation arrived during a run: the run gets the stop grace to finish, then is cancelled", "generation", st.GetGeneration(), "grace", a.cfg.StopGrace)
	}
	if err := a.cache.SaveState(st); err != nil {
		a.log.Error("cannot write the offline cache", "err", err)
	}
	a.log.Info("new desired state", "generation", st.GetGeneration(), "hash", short(st.GetHash()), "resources", len(st.GetResources()))
	a.Trigger(TriggerState)
}

// supersedeLocked gives the run in progress, if it converges an older
// generation, StopGrace to finish before its context is cancelled: a run
// stuck on one resource must not keep the node from a newer generation.
// It reports whether it started that grace.
func (a *Agent) supersedeLocked(gen uint64) bool {
	r := a.running
	if r == nil || gen <= r.gen || r.supersede != nil {
		return false
	}
	cause := fmt.Errorf("superseded by generation %d", gen)
	r.supersede = time.AfterFunc(a.cfg.StopGrace, func() { r.cancel(cause) })
	return true
}

// runLoop is the only caller of Engine.Run.
func (a *Agent) runLoop(ctx context.Context) {
	interval := time.NewTimer(a.nextRun())
	defer interval.Stop()
	var retry *time.Timer
	var retryC <-chan time.Time
	backoff := a.cfg.RetryMin
	for {
		var reason string
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
			reason = a.takePending()
			if reason == "" {
				continue
			}
		case <-interval.C:
			reason = TriggerInterval
		case <-retryC:
			reason = TriggerRetry
			retryC = nil
		}
		st := a.current()
		if st == nil {
			interval.Reset(a.nextRun())
			continue
		}
		ok := a.runOnce(ctx, st, reason)
		if !interval.Stop() {
			select {
			case <-interval.C:
			default:
			}
		}
		interval.Reset(a.nextRun())
		if retry != nil {
			retry.Stop()
			retryC = nil
		}
		if ok {
			backoff = a.cfg.RetryMin
			continue
		}
		if ctx.Err() != nil {
			return
		}
		wait := backoffJitter(backoff)
		a.log.Info("run failed, retrying", "in", wait.Round(time.Millisecond))
		retry = time.NewTimer(wait)
		retryC = retry.C
		backoff = min(backoff*2, a.cfg.RetryMax)
	}
}

// runOnce converges st once, records and queues the report, and returns
// whether everything converged.
func (a *Agent) runOnce(ctx context.Context, st *hivev1.NodeState, reason string) bool {
	started := time.Now()
	a.runStarted.Store(started.UnixNano())
	defer a.runStarted.Store(0)

	// The run outlives ctx by StopGrace, so a stop lets it finish the
	// resource at hand (or all of it) instead of tearing it mid-way; a
	// newer generation gets the same treatment (supersedeLocked). Every
	// provider, and template rendering, honours the cancellation.
	bctx, cancelCause := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelCause(nil)
	rctx, cancel := context.WithTimeout(bctx, a.cfg.RunTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(a.cfg.StopGrace, func() { cancelCause(errStopping) })
		context.AfterFunc(rctx, func() { t.Stop() })
	})
	defer stop()
	rc := &runCtl{gen: st.GetGeneration(), cancel: cancelCause}
	a.mu.Lock()
	a.running = rc
	if cur := a.state; cur != nil && cur.GetGeneration() > rc.gen {
		a.supersedeLocked(cur.GetGeneration())
	}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.running = nil
		if rc.supersede != nil {
			rc.supersede.Stop()
		}
		a.mu.Unlock()
	}()

	if reason == TriggerState || reason == TriggerStartup {
		a.sendApplying(ctx, st, started, reason)
	}
	opts := converge.RunOptions{DryRun: a.cfg.DryRun}
	if a.confirm != nil {
		opts.Confirmer = a.confirm
	}
	rep, err := a.deps.Engine.Run(rctx, st, opts)
	if err != nil && rctx.Err() != nil {
		// Say why the run was cut short, not only that it was.
		if cause := context.Cause(rctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", err, cause)
		}
	}
	finished := time.Now()
	r := a.runReport(st, rep, err, started, finished, reason, a.cfg.DryRun)
	r.DriftCheck = reason == TriggerInterval
	r.Seq = a.seq.Add(1)
	if !a.cfg.DryRun && err == nil {
		if nerr := a.reboots.noteRun(rep, r.Results); nerr != nil {
			a.log.Error("cannot record that a resource asked for a reboot", "err", nerr)
		}
	}
	a.reboots.stamp(r)
	ok := r.GetPhase() == hivev1.Phase_PHASE_CONVERGED
	markCauses(r.Results, st.GetHash(), a.lastOK)
	if ok && !a.cfg.DryRun {
		a.lastOK = st.GetHash()
	}
	a.setChecks(st, reason == TriggerState || reason == TriggerStartup || changedAnything(r.Results))
	a.withChecks(r)
	if a.deps.Published != nil {
		if p := a.deps.Published(); len(p) > 0 {
			r.PublishedSecrets = p
		}
	}
	if a.deps.Services != nil {
		r.Services = a.deps.Services()
	}
	// An honest agent is never refused for size: cut long messages and
	// diffs (marked), and summarise results beyond the coordinator's
	// limits (package limits).
	if limits.FitReport(r) {
		a.log.Warn("report trimmed to the coordinator's limits", "results", len(r.Results), "limit_results", limits.MaxResults, "limit_bytes", limits.MaxReportBytes)
	}
	a.statsMu.Lock()
	a.stats.Runs++
	if !ok {
		a.stats.FailedRuns++
	}
	a.stats.LastTrigger = reason
	a.stats.LastGeneration = r.Generation
	a.statsMu.Unlock()
	a.metrics.observeRun(r, finished.Sub(started), ok)
	a.mu.Lock()
	a.lastReport = r
	a.mu.Unlock()
	if err := a.cache.SaveApplied(Applied{Generation: r.Generation, Hash: r.StateHash, Phase: r.Phase.String(), Finished: finished, Seq: r.Seq, LastConverged: a.lastOK}); err != nil {
		a.log.Error("cannot record the applied state", "err", err)
	}
	if err := a.cache.Enqueue(r, a.cfg.MaxQueuedReports); err != nil {
		a.log.Error("cannot queue the report", "err", err)
	}
	select {
	case a.reportWake <- struct{}{}:
	default:
	}

	counts := map[hivev1.Outcome]int{}
	drift := 0
	var failures []string
	for _, x := range r.Results {
		counts[x.GetOutcome()]++
		if x.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED && len(failures) < 3 {
			failures = append(failures, x.GetKey()+": "+x.GetMessage())
		}
		if x.GetDrift() {
			drift++
		}
	}
	lvl := slog.LevelInfo
	if !ok {
		lvl = slog.LevelWarn
	}
	attrs := []any{"trigger", reason, "generation", r.Generation, "phase", r.Phase.String(),
		"ok", counts[hivev1.Outcome_OUTCOME_OK], "changed", counts[hivev1.Outcome_OUTCOME_CHANGED],
		"failed", counts[hivev1.Outcome_OUTCOME_FAILED], "skipped", counts[hivev1.Outcome_OUTCOME_SKIPPED],
		"planned", counts[hivev1.Outcome_OUTCOME_PLANNED], "drift", drift,
		"took", finished.Sub(started).Round(time.Microsecond)}
	if err != nil {
		attrs = append(attrs, "err", err)
	}
	if len(failures) > 0 {
		attrs = append(attrs, "failures", failures)
	}
	a.log.Log(ctx, lvl, "run finished", attrs...)

	if a.deps.OpenWindow != nil {
		if w := a.deps.OpenWindow(); w != nil && a.startProbing(w) {
			go a.confirmWindow(ctx, w)
		}
	}
	if a.confirm != nil {
		if w := a.confirm.window(); w != nil && a.startProbing(w) {
			go a.confirmWindow(ctx, w)
		}
	}
	if !a.ready.Swap(true) {
		close(a.readyCh)
		notify(a.log, daemon.SdNotifyReady)
	}
	return ok
}

// sendApplying tells the coordinator, best effort and without queueing,
// that a run for a new state started (push --wait shows it as applying).
// Its seq is lower than the final report's, so a late arrival never hides
// the outcome.
func (a *Agent) sendApplying(ctx context.Context, st *hivev1.NodeState, started time.Time, reason string) {
	h := a.conn.Load()
	if h == nil {
		return
	}
	r := &hivev1.Report{
		Node: a.cfg.Name, Generation: st.GetGeneration(), StateHash: st.GetHash(),
		Phase: hivev1.Phase_PHASE_APPLYING, AgentVersion: version.Version,
		Uptime: durationpb.New(started.Sub(a.start)), Started: timestamppb.New(started),
		DryRun: a.cfg.DryRun, Trigger: reason, Seq: a.seq.Add(1),
	}
	a.reboots.stamp(r)
	go func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := h.rep.Report(sctx, r); err != nil {
			a.log.Debug("applying report not delivered", "err", err)
		}
	}()
}

// confirmWindow confirms a change once a coordinator answers through the
// network as it is after the change; if none does before the deadline,
// the window rolls the change back by itself (the firewall provider's, or
// the confirmer's for the other kinds).
// One goroutine per window: runs during an open window find it probed
// already (startProbing) and start none.
func (a *Agent) confirmWindow(ctx context.Context, w Window) {
	st := w.ConfirmWith(ctx, time.Second, a.probe)
	a.mu.Lock()
	delete(a.probing, w)
	a.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	cw, generic := w.(*confirm.Window)
	if !generic {
		a.log.Info("firewall confirm window ended", "state", st.String())
		if st == confirm.RolledBack || st == confirm.RollbackFailed {
			a.Trigger(TriggerRollback)
		}
		return
	}
	a.log.Info("confirm window ended", "state", st.String())
	switch st {
	case confirm.Confirmed:
		a.confirm.confirmed(cw)
	case confirm.RolledBack, confirm.RollbackFailed:
		a.Trigger(TriggerConfirmRollback)
	}
}

// startProbing reports whether w still needs a prober, and marks it
// probed.
func (a *Agent) startProbing(w Window) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.probing[w] {
		return false
	}
	if a.probing == nil {
		a.probing = map[Window]bool{}
	}
	a.probing[w] = true
	return true
}

// watchdog pings systemd while the run loop is idle or its run is within
// RunTimeout.
func (a *Agent) watchdog(ctx context.Context) {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	t := time.NewTicker(every / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if s := a.runStarted.Load(); s == 0 || time.Since(time.Unix(0, s)) < a.cfg.RunTimeout+a.cfg.StopGrace {
				notify(a.log, daemon.SdNotifyWatchdog)
			}
		}
	}
}

func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Debug("sd_notify", "state", state, "err", err)
	}
}

// addresses are the node's addresses sent with the watch.
func (a *Agent) addresses() []string {
	if len(a.cfg.Addresses) > 0 {
		return a.cfg.Addresses
	}
	if a.gossip != nil {
		if h, _, err := net.SplitHostPort(a.gossip.LocalAddr()); err == nil {
			return []string{h}
		}
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// jitter returns d ± pct%.
func jitter(d time.Duration, pct int64) time.Duration {
	if d <= 0 {
		return d
	}
	spread := d * time.Duration(pct) / 100
	return d - spread + rand.N(2*spread+1)
}

// backoffJitter returns a delay in [d/2, d].
func backoffJitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// runReport is the report of one engine run of st, real or dry: its
// results, CONVERGED or FAILED, and when the run failed as a whole a "run"
// result saying why (secrets masked). rep is set when err is nil.
func (a *Agent) runReport(st *hivev1.NodeState, rep *converge.Report, err error, started, finished time.Time, trigger string, dryRun bool) *hivev1.Report {
	r := &hivev1.Report{
		Node:         a.cfg.Name,
		Generation:   st.GetGeneration(),
		StateHash:    st.GetHash(),
		Results:      rep.GetResults(),
		AgentVersion: version.Version,
		Uptime:       durationpb.New(finished.Sub(a.start)),
		Started:      timestamppb.New(started),
		Finished:     timestamppb.New(finished),
		DryRun:       dryRun,
		Trigger:      trigger,
		Phase:        hivev1.Phase_PHASE_CONVERGED,
	}
	if err != nil || rep.Failed() {
		r.Phase = hivev1.Phase_PHASE_FAILED
	}
	if err != nil {
		r.Results = append(r.Results, &hivev1.ResourceResult{
			Key: "run", Outcome: hivev1.Outcome_OUTCOME_FAILED,
			Message: converge.MaskSecrets(err.Error(), st.GetSecrets()), Duration: durationpb.New(finished.Sub(started)),
		})
	}
	return r
}
