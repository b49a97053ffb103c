package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Config configures the firewall provider.
type Config struct {
	// ConfirmWindow is how long a change waits for Confirm before it is
	// rolled back, when the resource does not set confirm_seconds.
	ConfirmWindow time.Duration
	// HoldBack is how long rules that were rolled back are not applied
	// again (Plan fails with ErrHeldBack instead), unless the desired rules
	// change or ClearHold is called. Zero holds them until then.
	HoldBack time.Duration
	// CheckInterfaces makes Plan fail a rule set that names an interface
	// the machine does not have (wildcards "eth+" are not checked).
	CheckInterfaces bool
	// Sandbox: never observe or change the machine (the agent under
	// --root). Plan renders and checks the rules and plans all of them;
	// Apply refuses with ErrSandbox.
	Sandbox bool
	// StateFile, when set, keeps the open confirm window (deadline and the
	// rules to restore) on disk, so that an agent restarted inside a
	// window reopens it at its first Plan (with a fresh ConfirmWindow) and
	// still rolls back if no coordinator confirms.
	StateFile string
}

// DefaultConfig returns the defaults: a 30 s confirm window, rolled-back
// rules held back for 10 minutes, interfaces checked.
func DefaultConfig() Config {
	return Config{ConfirmWindow: 30 * time.Second, HoldBack: 10 * time.Minute, CheckInterfaces: true}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.ConfirmWindow <= 0 {
		return fmt.Errorf("firewall: confirm window %v must be positive", c.ConfirmWindow)
	}
	if c.HoldBack < 0 {
		return fmt.Errorf("firewall: hold-back %v must not be negative", c.HoldBack)
	}
	return nil
}

// Errors a Change can carry.
var (
	// ErrHeldBack is the Change error while rules that were rolled back
	// (never confirmed) are held back.
	ErrHeldBack = errors.New("firewall rules held back after rollback")
	// ErrUnknownInterface is returned for a rule naming an interface the
	// machine does not have.
	ErrUnknownInterface = errors.New("unknown interface")
	// ErrOneFirewall is returned for every firewall resource but the first
	// when a node state has more than one.
	ErrOneFirewall = errors.New("only one firewall resource per node")
	// ErrNotStored is returned when iptables stored the rules differently
	// from how they were rendered (the change is rolled back).
	ErrNotStored = errors.New("iptables did not store the rules as rendered")
	// ErrSandbox is returned by Apply in sandbox mode.
	ErrSandbox = errors.New("firewall provider in sandbox mode: plan only")
)

// Provider converges the "firewall" resource kind. It is long-lived: the
// agent creates one and keeps it, because it owns the confirm window of
// the last change (see Window).
//
// Locking: ops is held for every decision about the tables and the change
// that follows from it: Plan's observation, Apply (which plans again under
// it), rollbacks, Confirm, ClearHold and the recovery of the state file.
// Whoever holds ops sees the open window, the hold, the state file and the
// tables agree. mu guards the fields below for the accessors; it is taken
// inside ops, only for memory (never around iptables or the disk), and the
// window, the hold and the window's state change in one mu section.
type Provider struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	ops sync.Mutex
	// recovered is set once the state file was looked at (ops held).
	recovered bool

	mu     sync.Mutex
	window *Window // open window, or nil
	last   *Window // last window, open or ended
	hold   *hold
}

type hold struct {
	hash  string
	at    time.Time
	until time.Time // zero: until the rules change
}

// New returns a provider.
func New(cfg Config, log *slog.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Provider{cfg: cfg, log: log.With("component", "firewall"), now: time.Now}, nil
}

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return converge.KindFirewall }

// Requires implements converge.Linker: the iptables package, when the
// state installs it, comes first.
func (p *Provider) Requires(r *hivev1.Resource, all []*hivev1.Resource) []string {
	return []string{"package:iptables"}
}

// Window returns the confirm window of the last change while it is open,
// else nil.
func (p *Provider) Window() *Window {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.window
}

// LastWindow returns the window of the last change, open or ended, or nil.
func (p *Provider) LastWindow() *Window {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// ClearHold lets rolled-back rules be applied again at the next run. It
// waits for a table change in progress.
func (p *Provider) ClearHold() {
	p.ops.Lock()
	defer p.ops.Unlock()
	p.commitLocked(p.Window(), nil, nil)
}

type planData struct {
	hash    string
	confirm time.Duration
	desired map[Family]*Ruleset
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{Key: it.Key, Resource: it.Resource}
		out[i] = ch
		if i > 0 {
			ch.Err = fmt.Errorf("%w (also %s)", ErrOneFirewall, b.Items[0].Key)
			continue
		}
		fw := it.Resource.GetFirewall()
		if fw == nil {
			ch.Err = fmt.Errorf("%w: %s is not a firewall resource", converge.ErrInvalid, it.Key)
			continue
		}
		if err := p.planOne(ctx, env, fw, ch); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ch.Err = err
		}
	}
	return out, nil
}

func (p *Provider) planOne(ctx context.Context, env *converge.Env, fw *hivev1.Firewall, ch *converge.Change) error {
	desired, err := Render(fw)
	if err != nil {
		return err
	}
	if p.cfg.Sandbox {
		var lines []string
		for _, f := range Families {
			pl := Diff(f, nil, desired[f])
			lines = append(lines, pl.Changes...)
		}
		ch.Needed = true
		ch.Summary = "not observed (sandbox root): would apply the rule set"
		ch.Diff = strings.Join(lines, "\n") + "\n"
		return nil
	}
	if p.cfg.CheckInterfaces {
		if err := checkInterfaces(ctx, env.Runner, fw); err != nil {
			return err
		}
	}
	confirm := p.cfg.ConfirmWindow
	if s := fw.GetConfirmSeconds(); s > 0 {
		confirm = time.Duration(s) * time.Second
	}
	return p.plan(ctx, env, ch, &planData{hash: hashRulesets(desired), confirm: confirm, desired: desired})
}

// plan observes both families and the hold under ops: what it reports is
// one consistent moment (never the hold from before a rollback with the
// tables from after it). Apply plans again under the same lock.
func (p *Provider) plan(ctx context.Context, env *converge.Env, ch *converge.Change, d *planData) error {
	p.ops.Lock()
	if err := p.recoverLocked(env); err != nil {
		p.ops.Unlock()
		return err
	}
	h := p.heldLocked(d.hash)
	plans, _, err := observeAll(ctx, env.Runner, d.desired)
	p.ops.Unlock()
	if err != nil {
		return err
	}
	ch.Data = d
	var changes []string
	for _, f := range Families {
		changes = append(changes, plans[f].Changes...)
	}
	if len(changes) == 0 {
		ch.Summary = "rules as desired"
		return nil
	}
	if h != nil {
		return heldErr(h)
	}
	ch.Needed = true
	ch.Diff = strings.Join(changes, "\n") + "\n"
	ch.Summary = summarize(plans)
	return nil
}

func heldErr(h *hold) error {
	until := "change the rules to retry"
	if !h.until.IsZero() {
		until = "retried after " + h.until.UTC().Format(time.RFC3339)
	}
	return fmt.Errorf("%w: rules %s were rolled back at %s because no coordinator confirmed them within the window; %s",
		ErrHeldBack, short(h.hash), h.at.UTC().Format(time.RFC3339), until)
}

// observeAll reads both families and plans each toward desired; snapshot
// is what restores them to how they are now.
func observeAll(ctx context.Context, r converge.Runner, desired map[Family]*Ruleset) (map[Family]*Plan, map[Family]*Ruleset, error) {
	plans, snap := map[Family]*Plan{}, map[Family]*Ruleset{}
	for _, f := range Families {
		filter, err := observe(ctx, r, f)
		if err != nil {
			return nil, nil, err
		}
		plans[f] = Diff(f, filter, desired[f])
		snap[f] = Current(filter)
	}
	return plans, snap, nil
}

func summarize(plans map[Family]*Plan) string {
	var parts []string
	for _, f := range Families {
		if pl := plans[f]; pl != nil && !pl.Empty() {
			parts = append(parts, fmt.Sprintf("%s: %d change(s)", f, len(pl.Changes)))
		}
	}
	return strings.Join(parts, ", ")
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	if p.cfg.Sandbox {
		return ErrSandbox
	}
	for _, ch := range changes {
		d, ok := ch.Data.(*planData)
		if !ok || ch.Err != nil {
			continue
		}
		ch.Err = p.apply(ctx, env, d)
	}
	return nil
}

// apply makes one change under ops: an overdue window is rolled back
// first, the hold is checked and the tables are read again, so the plan
// carried out and the "before" state the new window keeps are those of
// this moment, whatever happened since Plan. The window is persisted
// before the tables change: a crash in between still rolls back.
func (p *Provider) apply(ctx context.Context, env *converge.Env, d *planData) error {
	p.ops.Lock()
	defer p.ops.Unlock()
	if err := p.recoverLocked(env); err != nil {
		return err
	}
	if w := p.Window(); w != nil && !p.now().Before(w.deadline) {
		// Overdue: its timer is waiting for ops. A cancelled run must not
		// cut the rollback short.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		_ = p.rollbackLocked(rctx, w)
		cancel()
	}
	if h := p.heldLocked(d.hash); h != nil {
		return heldErr(h)
	}
	plans, before, err := observeAll(ctx, env.Runner, d.desired)
	if err != nil {
		return err
	}
	prev := p.Window()
	w := prev
	if prev == nil || prev.hash != d.hash {
		// A new change. One made while a window is open supersedes it and
		// keeps its snapshot: a rollback returns to the last confirmed
		// rules. (The same rules applied again, e.g. after drift inside
		// the window, keep the window and its deadline.)
		snapshot := before
		if prev != nil {
			snapshot = prev.snapshot
		}
		w = &Window{p: p, deadline: p.now().Add(d.confirm), hash: d.hash, snapshot: snapshot, runner: env.Runner, done: make(chan struct{})}
	}
	var applied []Family
	for _, f := range Families {
		if plans[f].Empty() {
			continue
		}
		if len(applied) == 0 && w != prev {
			if err := p.persistLocked(w, p.holdNow()); err != nil {
				return fmt.Errorf("firewall confirm window not persisted, rules left unchanged: %w", err)
			}
		}
		if err := restore(ctx, env.Runner, f, plans[f].Restore); err != nil {
			return p.undoLocked(env, w, prev, before, applied, err)
		}
		applied = append(applied, f)
	}
	// Verify: what iptables-save shows now must be what was rendered, or
	// the next run would change it again.
	for _, f := range applied {
		filter, err := observe(ctx, env.Runner, f)
		if err != nil {
			return p.undoLocked(env, w, prev, before, applied, err)
		}
		if pl := Diff(f, filter, d.desired[f]); !pl.Empty() {
			return p.undoLocked(env, w, prev, before, applied, fmt.Errorf("%w: %s", ErrNotStored, strings.Join(pl.Changes, "; ")))
		}
	}
	if len(applied) == 0 || w == prev {
		return nil
	}
	p.mu.Lock()
	if prev != nil {
		p.endLocked(prev, WindowSuperseded, nil)
	}
	p.window, p.last = w, w
	w.timer = time.AfterFunc(time.Until(w.deadline), w.expire)
	p.mu.Unlock()
	p.log.Info("firewall changed; waiting for confirmation", "rules", short(d.hash), "deadline", w.deadline.UTC().Format(time.RFC3339Nano))
	return nil
}

// undoLocked restores the families already changed after a failure (to
// the tables as they were at the start of this apply) and the state file
// to the window that was open before (prev, or none); the result is the
// original error, with the undo error if that failed too.
func (p *Provider) undoLocked(env *converge.Env, w, prev *Window, before map[Family]*Ruleset, applied []Family, cause error) error {
	if w != prev {
		if err := p.persistLocked(prev, p.holdNow()); err != nil {
			p.log.Error("firewall window state not restored after a failed change", "err", err)
		}
	}
	if len(applied) == 0 {
		return cause
	}
	snap := map[Family]*Ruleset{}
	for _, f := range applied {
		snap[f] = before[f]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := restoreSnapshot(ctx, env.Runner, snap); err != nil {
		return fmt.Errorf("%w; restoring the previous rules failed too: %v", cause, err)
	}
	return fmt.Errorf("%w (previous rules restored)", cause)
}

// Prune plans taking the hive chains and their jumps out of both families
// and resetting the built-in policies to ACCEPT when present (the node's
// firewall resources) is empty and hive chains exist: what a node whose
// roles no longer declare a firewall gets. It returns no change otherwise.
// The change is carried out by Apply and has a confirm window like any
// other. (Optional converge interface: Prune(ctx, env, present).)
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if len(present) > 0 || p.cfg.Sandbox {
		return nil, nil
	}
	ch := &converge.Change{Key: converge.KindFirewall + ":filter"}
	desired := map[Family]*Ruleset{}
	for _, f := range Families {
		desired[f] = &Ruleset{Chains: map[string][]string{}, Policies: map[string]string{"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"}}
	}
	err := p.plan(ctx, env, ch, &planData{hash: hashRulesets(desired), confirm: p.cfg.ConfirmWindow, desired: desired})
	if err != nil {
		return nil, err
	}
	if !ch.Needed {
		return nil, nil
	}
	return []*converge.Change{ch}, nil
}

func hashRulesets(m map[Family]*Ruleset) string {
	h := sha256.New()
	for _, f := range Families {
		rs := m[f]
		fmt.Fprintf(h, "family %d\n", f)
		if rs == nil {
			continue
		}
		for _, b := range Builtins {
			rules, ok := rs.Chains[b.Hive]
			fmt.Fprintf(h, "chain %s %v %d\n", b.Hive, ok, len(rules))
			for _, r := range rules {
				fmt.Fprintf(h, "%s\n", r)
			}
		}
		pol := make([]string, 0, len(rs.Policies))
		for k, v := range rs.Policies {
			pol = append(pol, k+"="+v)
		}
		sort.Strings(pol)
		fmt.Fprintf(h, "policies %s\n", strings.Join(pol, ","))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// observe reads one family's filter table (nil when it does not exist).
func observe(ctx context.Context, r converge.Runner, f Family) (*Table, error) {
	out, err := r.Run(ctx, converge.Cmd{Name: f.save(), Args: []string{"-t", "filter"}})
	if err != nil {
		return nil, fmt.Errorf("read %s rules: %w", f, err)
	}
	tables, err := ParseSave(out.Stdout)
	if err != nil {
		return nil, fmt.Errorf("read %s rules: %w", f, err)
	}
	return tables["filter"], nil
}

// restore feeds a plan to iptables-restore --noflush: one transaction.
func restore(ctx context.Context, r converge.Runner, f Family, input []byte) error {
	_, err := r.Run(ctx, converge.Cmd{Name: f.restore(), Args: []string{"--noflush"}, Stdin: input})
	if err != nil {
		return fmt.Errorf("apply %s rules: %w", f, err)
	}
	return nil
}

// checkInterfaces fails when a rule names an interface (not a wildcard)
// that `ip -j link show` does not list.
func checkInterfaces(ctx context.Context, r converge.Runner, fw *hivev1.Firewall) error {
	var names []string
	for _, rule := range fw.GetRules() {
		for _, n := range []string{rule.GetInInterface(), rule.GetOutInterface()} {
			if n != "" && !strings.HasSuffix(n, "+") {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	out, err := r.Run(ctx, converge.Cmd{Name: "ip", Args: []string{"-j", "link", "show"}})
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	have, err := linkNames(out.Stdout)
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	var missing []string
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: %s (the machine has %s)", ErrUnknownInterface, strings.Join(dedup(missing), ", "), strings.Join(sortedKeys(have), ", "))
	}
	return nil
}

// linkNames parses `ip -j link show`.
func linkNames(out []byte) (map[string]bool, error) {
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("parse ip -j link show: %w", err)
	}
	have := map[string]bool{}
	for _, l := range links {
		have[l.Name] = true
	}
	return have, nil
}

func dedup(s []string) []string {
	var out []string
	for i, x := range s {
		if i == 0 || s[i-1] != x {
			out = append(out, x)
		}
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
