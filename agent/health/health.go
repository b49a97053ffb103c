// Package health runs a node's health checks for hive-agent: the checks
// of its roles (http, tcp, command, from NodeState.checks) and built-in
// ones the agent derives from its resources (DRBD, swarm).
//
// Each check runs in its own goroutine, at its interval and at once when
// Kick is called (the agent kicks after each convergence run), with its
// timeout. A check counts as failing after its configured number of
// consecutive failures and passing again after one success. Whenever a
// check's passing state or the node's summary changes, OnChange is called
// (from the check's goroutine; it must not block).
//
// Nothing an operator did not write is executed: a command check's argv
// runs as given, without a shell and without templating; output is read
// up to a bound and only a short tail of it is kept as the message.
package health

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// MaxMessageBytes bounds a result's message (limits.MaxCheckMessageBytes
// is the coordinator's limit; this stays well below).
const MaxMessageBytes = 256

// Probe runs a check once; a nil error is a pass. It must honour ctx.
type Probe func(ctx context.Context) error

// Check is one check to run.
type Check struct {
	// Name is unique among a node's checks: "ROLE/NAME" or
	// "builtin/KIND[:NAME]".
	Name     string
	Kind     string // "http", "tcp", "command", "drbd", "swarm"
	Interval time.Duration
	Timeout  time.Duration
	Failures int
	Probe    Probe
	// Def identifies the definition: a check whose Def changes is
	// restarted with fresh counters.
	Def string
}

// Config configures a Checker.
type Config struct {
	Logger *slog.Logger
	// OnChange is called when a check's passing state or the summary
	// changes; it must not block.
	OnChange func()
	// Now is the clock (tests); nil for time.Now.
	Now func() time.Time
}

// Checker runs checks. Its methods are safe for concurrent use.
type Checker struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	ctx     context.Context // set by Run; nil before
	running map[string]*runner
	results map[string]*hivev1.CheckResult
	health  hivev1.Health
	pending []Check // Set before Run
}

type runner struct {
	c      Check
	cancel context.CancelFunc
	kick   chan struct{}
	done   chan struct{}
}

// New returns a Checker; nothing runs until Run.
func New(cfg Config) *Checker {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{cfg: cfg, log: cfg.Logger.With("component", "health"), running: map[string]*runner{}, results: map[string]*hivev1.CheckResult{}}
}

// Run runs the checks set until ctx ends, then stops them all.
func (c *Checker) Run(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	if pending != nil {
		c.Set(pending)
	}
	<-ctx.Done()
	c.mu.Lock()
	rs := c.running
	c.running = map[string]*runner{}
	c.mu.Unlock()
	for _, r := range rs {
		r.cancel()
		<-r.done
	}
}

// Set replaces the checks: new ones start (their first run at once),
// removed ones stop and their results are forgotten, unchanged ones keep
// running with their counters.
func (c *Checker) Set(checks []Check) {
	c.mu.Lock()
	if c.ctx == nil {
		c.pending = append([]Check(nil), checks...)
		if c.pending == nil {
			c.pending = []Check{}
		}
		c.mu.Unlock()
		return
	}
	want := map[string]Check{}
	for _, ch := range checks {
		want[ch.Name] = ch
	}
	var stop []*runner
	for name, r := range c.running {
		if w, ok := want[name]; !ok || w.Def != r.c.Def {
			stop = append(stop, r)
			delete(c.running, name)
			delete(c.results, name)
		}
	}
	for _, ch := range checks {
		if _, ok := c.running[ch.Name]; ok {
			continue
		}
		rctx, cancel := context.WithCancel(c.ctx)
		r := &runner{c: ch, cancel: cancel, kick: make(chan struct{}, 1), done: make(chan struct{})}
		c.running[ch.Name] = r
		go c.loop(rctx, r)
	}
	changed := c.summarizeLocked()
	c.mu.Unlock()
	for _, r := range stop {
		r.cancel()
	}
	if changed || len(stop) > 0 {
		c.notify()
	}
}

// Kick runs every check once now (a check already running finishes that
// run instead).
func (c *Checker) Kick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.running {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// Results returns copies of the latest results, sorted by name, and the
// summary: UNSPECIFIED while no check has a result.
func (c *Checker) Results() ([]*hivev1.CheckResult, hivev1.Health) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*hivev1.CheckResult, 0, len(c.results))
	for _, r := range c.results {
		out = append(out, proto.Clone(r).(*hivev1.CheckResult))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, c.health
}

func (c *Checker) loop(ctx context.Context, r *runner) {
	defer close(r.done)
	failures := 0
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		}
		pctx, cancel := context.WithTimeout(ctx, r.c.Timeout)
		err := r.c.Probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
		} else {
			failures = 0
		}
		res := &hivev1.CheckResult{
			Name: r.c.Name, Kind: r.c.Kind,
			Passing:  failures < max(r.c.Failures, 1),
			Failures: uint32(failures),
			Time:     timestamppb.New(c.cfg.Now()),
		}
		if err != nil {
			res.Message = clip(err.Error(), MaxMessageBytes)
		}
		if c.record(r, res) {
			lvl := slog.LevelInfo
			if !res.Passing {
				lvl = slog.LevelWarn
			}
			c.log.Log(ctx, lvl, "check changed", "check", res.Name, "passing", res.Passing, "failures", failures, "msg", res.Message)
			c.notify()
		}
		t.Reset(r.c.Interval)
	}
}

// record stores res if r still runs; it reports whether a check's passing
// state or the summary changed.
func (c *Checker) record(r *runner, res *hivev1.CheckResult) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[r.c.Name] != r {
		return false
	}
	old, had := c.results[r.c.Name]
	c.results[r.c.Name] = res
	sum := c.summarizeLocked()
	return sum || !had || old.Passing != res.Passing
}

// summarizeLocked recomputes the summary; it reports whether it changed.
func (c *Checker) summarizeLocked() bool {
	h := hivev1.Health_HEALTH_UNSPECIFIED
	if len(c.results) > 0 {
		h = hivev1.Health_HEALTH_PASSING
		for _, r := range c.results {
			if !r.Passing {
				h = hivev1.Health_HEALTH_FAILING
				break
			}
		}
	}
	changed := h != c.health
	c.health = h
	return changed
}

func (c *Checker) notify() {
	if c.cfg.OnChange != nil {
		c.cfg.OnChange()
	}
}

// clip shortens s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
