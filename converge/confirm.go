package converge

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Snapshotter is implemented by providers whose changes can be undone: the
// kinds that take a confirm window (Resource.confirm_seconds, see
// kinds.Kind.Confirm). Before a run applies a needed change of a resource
// with a window, the engine asks for its snapshot and hands it to
// RunOptions.Confirmer; if no coordinator confirms the run in time, the
// agent calls Engine.Restore, which calls Restore with it.
type Snapshotter interface {
	// Snapshot returns the state of r on the machine now, as bytes Restore
	// takes back (kept on disk by the agent, so they must survive a
	// restart of the process). It must not modify the host.
	Snapshot(ctx context.Context, env *Env, r *hivev1.Resource) ([]byte, error)
	// Restore brings r back to a snapshot. It is idempotent: restoring a
	// resource that is already as snapshotted changes nothing.
	Restore(ctx context.Context, env *Env, r *hivev1.Resource, snap []byte) error
}

// Saved is the state of one resource with a confirm window from before a
// run changed it.
type Saved struct {
	Key      string
	Resource *hivev1.Resource
	// Before is the provider's snapshot (Snapshotter.Snapshot).
	Before []byte
}

// Confirmer keeps the before-state of resources with a confirm window.
// The engine calls both methods from the run's goroutine, with its run
// lock held (so a Restore, which takes the same lock, is never between
// them and the run).
type Confirmer interface {
	// Held is called once at the start of a run of st: it returns the
	// keys not to converge in it, with the reason (a change rolled back
	// after its confirm window, held until a new generation). They are
	// reported failed with it, neither planned nor applied, and what
	// requires them is skipped.
	Held(st *hivev1.NodeState) map[string]string
	// Save is called once per provider batch with such changes, before
	// they are applied; it must persist them (a crash right after must
	// still be able to roll back). An error leaves those changes
	// unapplied: they fail with it.
	Save(ctx context.Context, saved []Saved) error
}

// ErrConfirmUnsupported is a change's error when its resource has a
// confirm window but its provider cannot snapshot (the site parser
// rejects such a resource first).
var ErrConfirmUnsupported = errors.New("confirm is not supported on this kind")

// saveConfirmed snapshots the needed changes that have a confirm window
// and hands them to the confirmer; it returns the changes that may be
// applied (those whose snapshot or save failed carry the error).
func saveConfirmed(ctx context.Context, p Provider, env *Env, needed []*Change, cf Confirmer) []*Change {
	var saved []Saved
	var with []*Change
	for _, c := range needed {
		if c.Resource.GetConfirmSeconds() == 0 {
			continue
		}
		sn, ok := p.(Snapshotter)
		if !ok {
			c.Err = fmt.Errorf("%w (%s)", ErrConfirmUnsupported, p.Kind())
			continue
		}
		b, err := sn.Snapshot(ctx, env, c.Resource)
		if err != nil {
			c.Err = fmt.Errorf("confirm window: cannot keep the state before the change, left unchanged: %w", err)
			continue
		}
		saved = append(saved, Saved{Key: c.Key, Resource: c.Resource, Before: b})
		with = append(with, c)
	}
	if len(saved) > 0 {
		if err := cf.Save(ctx, saved); err != nil {
			for _, c := range with {
				c.Err = fmt.Errorf("confirm window not persisted, left unchanged: %w", err)
			}
		}
	}
	out := needed[:0:0]
	for _, c := range needed {
		if c.Err == nil {
			out = append(out, c)
		}
	}
	return out
}

// Restore undoes an unconfirmed run: it restores each saved resource (in
// reverse order) through its provider's Snapshotter, then runs the
// notifications of the restored resources: every resource of targets
// that a restored resource notifies is planned and applied, one at a time
// in the order of targets (give them in node-state order, which follows
// requires), with those notifiers in Item.Notified (a service restarts or
// reloads, a command runs), so that what read the changed state reads the
// restored one; a target whose explicit requirement failed here is
// skipped. st
// gives the facts and secrets (it may be nil). The report has one result
// per saved resource (CHANGED when restored, FAILED otherwise) and one
// per notified target. Restore is serialised with Run.
func (e *Engine) Restore(ctx context.Context, st *hivev1.NodeState, saved []Saved, targets []*hivev1.Resource) *Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	family := e.cfg.Family
	if family == FamilyUnknown {
		family, _ = DetectFamily(e.cfg.Root)
	}
	env := func(kind string) *Env {
		return &Env{Root: e.cfg.Root, Runner: e.cfg.Runner, Family: family, DryRun: e.cfg.PlanOnly[kind],
			Facts: st.GetFacts(), Secrets: st.GetSecrets(), Logger: e.cfg.Logger.With("component", "converge/"+kind)}
	}
	rep := &Report{}
	results := make([]*hivev1.ResourceResult, len(saved))
	notified := map[string][]string{}
	for i := len(saved) - 1; i >= 0; i-- {
		s := saved[i]
		kind := ResourceKind(s.Resource)
		t0 := time.Now()
		ev := env(kind)
		res := &hivev1.ResourceResult{Key: s.Key, Drift: true}
		sn, ok := e.reg.Provider(kind).(Snapshotter)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("%w (%s)", ErrConfirmUnsupported, kind)
		case ev.DryRun:
			err = fmt.Errorf("%s is plan-only here: nothing to restore", kind)
		default:
			err = sn.Restore(ctx, ev, s.Resource, s.Before)
		}
		res.Duration = durationpb.New(time.Since(t0))
		if err != nil {
			res.Outcome, res.Message = hivev1.Outcome_OUTCOME_FAILED, ev.Mask("restore: "+err.Error())
			e.log.Error("confirm rollback: resource not restored", "key", s.Key, "err", res.Message)
		} else {
			res.Outcome, res.Message = hivev1.Outcome_OUTCOME_CHANGED, "restored the state from before the unconfirmed change"
			e.log.Warn("confirm rollback: resource restored", "key", s.Key)
			for _, n := range s.Resource.GetNotify() {
				notified[n] = append(notified[n], s.Key)
				rep.Notifications = append(rep.Notifications, Notification{From: s.Key, To: n})
			}
		}
		results[i] = res
	}
	rep.Results = results
	changed := map[string]bool{}
	for _, s := range saved {
		changed[s.Key] = true
	}
	// Targets run one at a time in the order given (the node state's,
	// which follows requires: sshd -t before the reload); one whose
	// requirement failed here is skipped, as in a run.
	bad := map[string]string{}
	for _, t := range targets {
		n := notified[t.GetKey()]
		if len(n) == 0 {
			continue
		}
		sort.Strings(n)
		kind := ResourceKind(t)
		if why := badRequire(t, bad); why != "" {
			rep.Results = append(rep.Results, &hivev1.ResourceResult{Key: t.GetKey(), Outcome: hivev1.Outcome_OUTCOME_SKIPPED, Message: why})
			bad[t.GetKey()] = "skipped"
			continue
		}
		p := e.reg.Provider(kind)
		if p == nil {
			continue
		}
		ev := env(kind)
		t0 := time.Now()
		res := e.restoreNotify(ctx, p, ev, Item{Key: t.GetKey(), Resource: t, Notified: n}, changed)
		res.Duration = durationpb.New(time.Since(t0))
		switch res.GetOutcome() {
		case hivev1.Outcome_OUTCOME_FAILED:
			bad[t.GetKey()] = "failed"
		case hivev1.Outcome_OUTCOME_CHANGED:
			changed[t.GetKey()] = true
		}
		rep.Results = append(rep.Results, res)
		e.log.Info("confirm rollback: notified", "key", t.GetKey(), "outcome", res.GetOutcome().String(), "summary", res.GetMessage())
	}
	rep.Duration = time.Since(start)
	return rep
}

// restoreNotify plans and applies one notified target.
func (e *Engine) restoreNotify(ctx context.Context, p Provider, ev *Env, it Item, changed map[string]bool) *hivev1.ResourceResult {
	b := &Batch{Items: []Item{it}, Changed: map[string]bool{}}
	for k := range changed {
		b.Changed[k] = true
	}
	chs, err := p.Plan(ctx, ev, b)
	if err == nil && len(chs) != 1 {
		err = fmt.Errorf("provider %s returned %d changes for 1 resource", p.Kind(), len(chs))
	}
	if err != nil {
		return failed(it.Key, err, 0, ev)
	}
	c := chs[0]
	c.Key, c.Resource = it.Key, it.Resource
	if c.Err == nil && c.Needed && !ev.DryRun {
		if err := p.Apply(ctx, ev, []*Change{c}); err != nil && c.Err == nil {
			c.Err = err
		}
	}
	res := &hivev1.ResourceResult{Key: c.Key, Drift: c.Needed, Diff: ev.Mask(c.Diff), Message: ev.Mask(c.Summary)}
	switch {
	case c.Err != nil:
		res.Outcome, res.Message = hivev1.Outcome_OUTCOME_FAILED, ev.Mask(c.Err.Error())
	case !c.Needed:
		res.Outcome = hivev1.Outcome_OUTCOME_OK
	case ev.DryRun:
		res.Outcome = hivev1.Outcome_OUTCOME_PLANNED
	default:
		res.Outcome = hivev1.Outcome_OUTCOME_CHANGED
	}
	return res
}

// badRequire says why t cannot run after a target it requires failed or
// was skipped during the restore, or "".
func badRequire(t *hivev1.Resource, bad map[string]string) string {
	for _, r := range t.GetRequires() {
		if how, ok := bad[r]; ok {
			return "requires " + r + ", which " + how
		}
	}
	return ""
}
