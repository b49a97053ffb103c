package converge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Registry holds one provider per resource kind.
type Registry struct {
	providers map[string]Provider
}

// NewRegistry returns a registry of the given providers; two providers of
// one kind is an error.
func NewRegistry(ps ...Provider) (*Registry, error) {
	r := &Registry{providers: map[string]Provider{}}
	for _, p := range ps {
		if err := r.Register(p); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds p; it fails when its kind is already registered.
func (r *Registry) Register(p Provider) error {
	if _, dup := r.providers[p.Kind()]; dup {
		return fmt.Errorf("provider for kind %q registered twice", p.Kind())
	}
	r.providers[p.Kind()] = p
	return nil
}

// Provider returns the provider of a kind, or nil.
func (r *Registry) Provider(kind string) Provider { return r.providers[kind] }

// Kinds returns the registered kinds, sorted.
func (r *Registry) Kinds() []string {
	ks := make([]string, 0, len(r.providers))
	for k := range r.providers {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Config configures an Engine.
type Config struct {
	// Root is the root prefix of the managed machine ("/" for the host).
	Root string
	// Family is the OS family; FamilyUnknown detects it from
	// <Root>/etc/os-release at each run.
	Family Family
	// PlanOnly lists kinds that are only planned, never applied (e.g. the
	// agent under --root plans packages and services but writes files).
	PlanOnly map[string]bool
	Runner   Runner
	Logger   *slog.Logger
}

// DefaultConfig returns a config for the host root.
func DefaultConfig() Config {
	return Config{Root: "/", Runner: ExecRunner{}, Logger: slog.Default()}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Root == "" || !strings.HasPrefix(c.Root, "/") {
		return fmt.Errorf("converge: root %q must be an absolute path", c.Root)
	}
	if c.Runner == nil {
		return errors.New("converge: no runner")
	}
	return nil
}

// Engine runs node states through the providers of a registry.
type Engine struct {
	cfg Config
	reg *Registry
	log *slog.Logger
	mu  sync.Mutex // one run at a time
}

// New returns an engine.
func New(cfg Config, reg *Registry) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Engine{cfg: cfg, reg: reg, log: cfg.Logger.With("component", "converge")}, nil
}

// RunOptions are per-run options.
type RunOptions struct {
	// DryRun plans every resource and applies none.
	DryRun bool
	// Confirmer, when set, gets the state from before the run of every
	// resource with a confirm window, before its change is applied (see
	// Snapshotter), and says which keys are held back. Nil: confirm
	// windows are not kept. Ignored in a dry run.
	Confirmer Confirmer
}

// NotifyReboot is the notify target that is not a resource: a resource
// notifying it asks for a coordinated reboot of the node. The engine only
// reports it (Report.Notifications, To == NotifyReboot); the agent records
// it and the coordinators schedule the reboot (docs/operations.md,
// "Reboots").
const NotifyReboot = "reboot"

// Notification is a service (restarted or reloaded) or a command (run)
// notified by a changed resource, or NotifyReboot.
type Notification struct {
	From, To string
}

// Report is the outcome of a run.
type Report struct {
	// Results in NodeState order, one per resource, followed by the
	// results of pruning (keys no longer in the state, see Pruner).
	Results       []*hivev1.ResourceResult
	Notifications []Notification
	Duration      time.Duration
}

// GetNotifications returns the notifications (nil-safe).
func (r *Report) GetNotifications() []Notification {
	if r == nil {
		return nil
	}
	return r.Notifications
}

// GetResults returns the results (nil-safe).
func (r *Report) GetResults() []*hivev1.ResourceResult {
	if r == nil {
		return nil
	}
	return r.Results
}

// Count returns how many results have the outcome.
func (r *Report) Count(o hivev1.Outcome) int {
	n := 0
	for _, x := range r.Results {
		if x.GetOutcome() == o {
			n++
		}
	}
	return n
}

// Failed reports whether any resource failed.
func (r *Report) Failed() bool { return r.Count(hivev1.Outcome_OUTCOME_FAILED) > 0 }

// Validate checks a node state against the registry without running it:
// graph (see BuildGraph), providers for every kind, provider validators.
func (e *Engine) Validate(st *hivev1.NodeState) (*Graph, error) {
	links := map[string]Linker{}
	for _, k := range e.reg.Kinds() {
		if l, ok := e.reg.Provider(k).(Linker); ok {
			links[k] = l
		}
	}
	var errs []error
	for _, r := range st.GetResources() {
		p := e.reg.Provider(ResourceKind(r))
		if p == nil {
			errs = append(errs, &ResourceError{Key: r.GetKey(), Err: fmt.Errorf("%w %q", ErrNoProvider, ResourceKind(r))})
			continue
		}
		if v, ok := p.(Validator); ok {
			if err := v.Validate(r); err != nil {
				errs = append(errs, &ResourceError{Key: r.GetKey(), Err: err})
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return BuildGraph(st.GetResources(), links)
}

type state struct {
	st      *hivev1.NodeState
	result  map[string]*hivev1.ResourceResult
	changed map[string]bool
	notify  map[string][]string // target → notifiers that changed
	held    map[string]string   // keys held back (Confirmer.Held) → why
}

// Run converges st. It returns an error, and no report, when st does not
// validate; otherwise a report with one result per resource. When ctx ends
// the resources not yet converged are reported skipped and ctx.Err() is
// returned with the report.
func (e *Engine) Run(ctx context.Context, st *hivev1.NodeState, opts RunOptions) (*Report, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	g, err := e.Validate(st)
	if err != nil {
		return nil, fmt.Errorf("validate node state: %w", err)
	}
	family := e.cfg.Family
	if family == FamilyUnknown {
		family, _ = DetectFamily(e.cfg.Root)
	}
	s := &state{st: st, result: map[string]*hivev1.ResourceResult{}, changed: map[string]bool{}, notify: map[string][]string{}}
	if opts.DryRun {
		opts.Confirmer = nil
	}
	if opts.Confirmer != nil {
		s.held = opts.Confirmer.Held(st)
	}
	rep := &Report{}
	var runErr error
	for _, wave := range g.Waves {
		byKind := map[string][]string{}
		for _, k := range wave {
			byKind[ResourceKind(g.Resource(k))] = append(byKind[ResourceKind(g.Resource(k))], k)
		}
		for _, kind := range orderKinds(byKind) {
			if runErr == nil && ctx.Err() != nil {
				runErr = ctx.Err()
			}
			e.runBatch(ctx, g, s, rep, kind, byKind[kind], family, opts, runErr)
		}
	}
	for _, r := range st.GetResources() {
		rep.Results = append(rep.Results, s.result[r.GetKey()])
	}
	if runErr == nil && ctx.Err() == nil {
		rep.Results = append(rep.Results, e.prune(ctx, g, st, family, opts)...)
	}
	rep.Duration = time.Since(start)
	e.log.Info("run finished", "generation", st.GetGeneration(), "resources", len(rep.Results),
		"changed", rep.Count(hivev1.Outcome_OUTCOME_CHANGED), "failed", rep.Count(hivev1.Outcome_OUTCOME_FAILED),
		"planned", rep.Count(hivev1.Outcome_OUTCOME_PLANNED), "dry_run", opts.DryRun, "duration", rep.Duration)
	return rep, runErr
}

// prune runs every Pruner with the present items of its kind and returns
// the results of its changes, in kind order.
func (e *Engine) prune(ctx context.Context, g *Graph, st *hivev1.NodeState, family Family, opts RunOptions) []*hivev1.ResourceResult {
	present := map[string][]Item{}
	for _, r := range g.Resources {
		k := ResourceKind(r)
		present[k] = append(present[k], Item{Key: r.GetKey(), Resource: r})
	}
	var out []*hivev1.ResourceResult
	for _, kind := range orderKinds(allKinds(e.reg)) {
		pr, ok := e.reg.Provider(kind).(Pruner)
		if !ok {
			continue
		}
		planOnly := opts.DryRun || e.cfg.PlanOnly[kind]
		env := &Env{Root: e.cfg.Root, DryRun: planOnly, Runner: e.cfg.Runner, Family: family,
			Facts: st.GetFacts(), Secrets: st.GetSecrets(), Logger: e.cfg.Logger.With("component", "converge/"+kind)}
		start := time.Now()
		chs, err := pr.Prune(ctx, env, present[kind])
		if err != nil {
			out = append(out, failed(kind+":prune", fmt.Errorf("prune: %w", err), time.Since(start), env))
			continue
		}
		if len(chs) == 0 {
			continue
		}
		// A change that is not needed is only reported (what a Pruner
		// keeps on purpose, e.g. a volume's data): never applied.
		var needed []*Change
		for _, c := range chs {
			if c.Needed {
				needed = append(needed, c)
			}
		}
		if !planOnly && len(needed) > 0 {
			if err := e.reg.Provider(kind).Apply(ctx, env, needed); err != nil {
				for _, c := range needed {
					if c.Err == nil {
						c.Err = err
					}
				}
			}
		}
		d := time.Since(start) / time.Duration(len(chs))
		for _, c := range chs {
			res := &hivev1.ResourceResult{Key: c.Key, Drift: true, Diff: env.Mask(c.Diff), Message: env.Mask(c.Summary), Duration: durationpb.New(d)}
			switch {
			case !c.Needed && c.Err == nil:
				res.Outcome, res.Drift = hivev1.Outcome_OUTCOME_OK, false
			case c.Err != nil:
				res.Outcome, res.Message = hivev1.Outcome_OUTCOME_FAILED, env.Mask(c.Err.Error())
			case planOnly:
				res.Outcome = hivev1.Outcome_OUTCOME_PLANNED
			default:
				res.Outcome = hivev1.Outcome_OUTCOME_CHANGED
			}
			out = append(out, res)
			e.log.Info("pruned", "key", c.Key, "outcome", res.Outcome.String(), "summary", res.Message)
		}
	}
	return out
}

func allKinds(r *Registry) map[string][]string {
	m := map[string][]string{}
	for _, k := range r.Kinds() {
		m[k] = []string{k}
	}
	return m
}

func orderKinds(byKind map[string][]string) []string {
	var out []string
	known := map[string]bool{}
	for _, k := range KindOrder {
		known[k] = true
		if len(byKind[k]) > 0 {
			out = append(out, k)
		}
	}
	var rest []string
	for k := range byKind {
		if !known[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func (e *Engine) runBatch(ctx context.Context, g *Graph, s *state, rep *Report, kind string, keys []string, family Family, opts RunOptions, runErr error) {
	p := e.reg.Provider(kind)
	planOnly := opts.DryRun || e.cfg.PlanOnly[kind]
	b := &Batch{Changed: map[string]bool{}}
	for k := range s.changed {
		b.Changed[k] = true
	}
	for _, k := range keys {
		if runErr != nil {
			s.result[k] = &hivev1.ResourceResult{Key: k, Outcome: hivev1.Outcome_OUTCOME_SKIPPED, Message: "run cancelled: " + runErr.Error()}
			continue
		}
		if reason := blocked(g, s, k); reason != "" {
			s.result[k] = &hivev1.ResourceResult{Key: k, Outcome: hivev1.Outcome_OUTCOME_SKIPPED, Message: reason}
			continue
		}
		if why, ok := s.held[k]; ok {
			s.result[k] = &hivev1.ResourceResult{Key: k, Outcome: hivev1.Outcome_OUTCOME_FAILED, Message: why}
			continue
		}
		n := append([]string(nil), s.notify[k]...)
		sort.Strings(n)
		b.Items = append(b.Items, Item{Key: k, Resource: g.Resource(k), Notified: n})
	}
	if len(b.Items) == 0 {
		return
	}
	env := &Env{
		Root: e.cfg.Root, DryRun: planOnly, Runner: e.cfg.Runner, Family: family,
		Logger: e.cfg.Logger.With("component", "converge/"+kind),
	}
	env.Facts, env.Secrets, env.SwarmDrain = s.st.GetFacts(), s.st.GetSecrets(), s.st.GetSwarmDrain()
	start := time.Now()
	changes, err := p.Plan(ctx, env, b)
	if err == nil && len(changes) != len(b.Items) {
		err = fmt.Errorf("provider %s returned %d changes for %d resources", kind, len(changes), len(b.Items))
	}
	if err != nil {
		d := time.Since(start)
		for _, it := range b.Items {
			s.result[it.Key] = failed(it.Key, err, d/time.Duration(len(b.Items)), env)
		}
		return
	}
	planDur := time.Since(start)
	var needed []*Change
	for i, c := range changes {
		c.Key, c.Resource = b.Items[i].Key, b.Items[i].Resource
		if c.Err == nil && c.Needed {
			needed = append(needed, c)
		}
	}
	var applyDur time.Duration
	if len(needed) > 0 && !planOnly && opts.Confirmer != nil {
		needed = saveConfirmed(ctx, p, env, needed, opts.Confirmer)
	}
	if len(needed) > 0 && !planOnly {
		astart := time.Now()
		if err := p.Apply(ctx, env, needed); err != nil {
			for _, c := range needed {
				if c.Err == nil {
					c.Err = err
				}
			}
		}
		applyDur = time.Since(astart)
	}
	per := planDur / time.Duration(len(changes))
	aper := time.Duration(0)
	if len(needed) > 0 {
		aper = applyDur / time.Duration(len(needed))
	}
	for _, c := range changes {
		res := &hivev1.ResourceResult{Key: c.Key, Drift: c.Needed, Diff: env.Mask(c.Diff), Message: env.Mask(c.Summary)}
		d := per
		switch {
		case c.Err != nil:
			res.Outcome = hivev1.Outcome_OUTCOME_FAILED
			res.Message = env.Mask(c.Err.Error())
			if c.Needed {
				d += aper
			}
		case !c.Needed:
			res.Outcome = hivev1.Outcome_OUTCOME_OK
		case planOnly:
			res.Outcome = hivev1.Outcome_OUTCOME_PLANNED
		default:
			res.Outcome = hivev1.Outcome_OUTCOME_CHANGED
			d += aper
		}
		res.Duration = durationpb.New(d)
		s.result[c.Key] = res
		if c.Err == nil && c.Needed {
			s.changed[c.Key] = true
			for _, n := range c.Resource.GetNotify() {
				s.notify[n] = append(s.notify[n], c.Key)
				rep.Notifications = append(rep.Notifications, Notification{From: c.Key, To: n})
			}
		}
		if res.Outcome == hivev1.Outcome_OUTCOME_FAILED {
			e.log.Warn("resource failed", "key", c.Key, "err", res.Message)
		} else if c.Needed {
			e.log.Info("resource "+strings.ToLower(strings.TrimPrefix(res.Outcome.String(), "OUTCOME_")), "key", c.Key, "summary", res.Message)
		}
	}
}

func failed(key string, err error, d time.Duration, env *Env) *hivev1.ResourceResult {
	return &hivev1.ResourceResult{Key: key, Outcome: hivev1.Outcome_OUTCOME_FAILED, Message: env.Mask(err.Error()), Duration: durationpb.New(d)}
}

// blocked returns why k cannot run (a requirement failed or was skipped),
// or "".
func blocked(g *Graph, s *state, k string) string {
	for _, req := range g.Requires[k] {
		r := s.result[req]
		if r == nil {
			continue
		}
		switch r.GetOutcome() {
		case hivev1.Outcome_OUTCOME_FAILED:
			return "requires " + req + ", which failed"
		case hivev1.Outcome_OUTCOME_SKIPPED:
			return "requires " + req + ", which was skipped"
		}
	}
	return ""
}
