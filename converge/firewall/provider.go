package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
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
type Provider struct {
	cfg Config
	log *slog.Logger

	// ops serialises every change of the tables: Apply and rollbacks.
	ops    sync.Mutex
	mu     sync.Mutex
	window *Window // open window, or nil
	last   *Window // last window, open or ended
	hold   *hold
	now    func() time.Time
	// recovered is set once the state file was looked at.
	recovered bool
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

// ClearHold lets rolled-back rules be applied again at the next run.
func (p *Provider) ClearHold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold = nil
}

type planData struct {
	hash     string
	confirm  time.Duration
	plans    map[Family]*Plan
	snapshot map[Family]*Ruleset
	desired  map[Family]*Ruleset
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
	if err := p.recover(env); err != nil {
		return err
	}
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
	hash := hashRulesets(desired)
	p.mu.Lock()
	h := p.hold
	if h != nil && (h.hash != hash || (!h.until.IsZero() && p.now().After(h.until))) {
		p.hold, h = nil, nil
	}
	p.mu.Unlock()
	confirm := p.cfg.ConfirmWindow
	if s := fw.GetConfirmSeconds(); s > 0 {
		confirm = time.Duration(s) * time.Second
	}
	return p.plan(ctx, env, ch, desired, hash, confirm, h)
}

func (p *Provider) plan(ctx context.Context, env *converge.Env, ch *converge.Change, desired map[Family]*Ruleset, hash string, confirm time.Duration, h *hold) error {
	d := &planData{hash: hash, confirm: confirm, plans: map[Family]*Plan{}, snapshot: map[Family]*Ruleset{}, desired: desired}
	var changes []string
	for _, f := range Families {
		filter, err := observe(ctx, env.Runner, f)
		if err != nil {
			return err
		}
		pl := Diff(f, filter, desired[f])
		d.plans[f] = pl
		d.snapshot[f] = snapshotOf(filter)
		changes = append(changes, pl.Changes...)
	}
	ch.Data = d
	if len(changes) == 0 {
		ch.Summary = "rules as desired"
		return nil
	}
	if h != nil {
		until := "change the rules to retry"
		if !h.until.IsZero() {
			until = "retried after " + h.until.UTC().Format(time.RFC3339)
		}
		return fmt.Errorf("%w: rules %s were rolled back at %s because no coordinator confirmed them within the window; %s",
			ErrHeldBack, short(h.hash), h.at.UTC().Format(time.RFC3339), until)
	}
	ch.Needed = true
	ch.Diff = strings.Join(changes, "\n") + "\n"
	ch.Summary = summarize(d.plans)
	return nil
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

// snapshotOf is the Ruleset that restores a table to how it is now: its
// hive chains (absent ones stay absent) and all three policies.
func snapshotOf(filter *Table) *Ruleset {
	return Current(filter)
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

func (p *Provider) apply(ctx context.Context, env *converge.Env, d *planData) error {
	p.ops.Lock()
	defer p.ops.Unlock()
	var applied []Family
	for _, f := range Families {
		pl := d.plans[f]
		if pl.Empty() {
			continue
		}
		if err := restore(ctx, env.Runner, f, pl.Restore); err != nil {
			return p.undo(env, d, applied, err)
		}
		applied = append(applied, f)
	}
	// Verify: what iptables-save shows now must be what was rendered, or
	// the next run would change it again.
	for _, f := range applied {
		filter, err := observe(ctx, env.Runner, f)
		if err != nil {
			return p.undo(env, d, applied, err)
		}
		if pl := Diff(f, filter, d.desired[f]); !pl.Empty() {
			return p.undo(env, d, applied, fmt.Errorf("%w: %s", ErrNotStored, strings.Join(pl.Changes, "; ")))
		}
	}
	if len(applied) == 0 {
		return nil
	}
	p.open(env, d)
	return nil
}

// undo restores the families already changed after a failure; the result
// is the original error, with the undo error if that failed too.
func (p *Provider) undo(env *converge.Env, d *planData, applied []Family, cause error) error {
	if len(applied) == 0 {
		return cause
	}
	snap := map[Family]*Ruleset{}
	for _, f := range applied {
		snap[f] = d.snapshot[f]
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := restoreSnapshot(ctx, env.Runner, snap); err != nil {
		return fmt.Errorf("%w; restoring the previous rules failed too: %v", cause, err)
	}
	return fmt.Errorf("%w (previous rules restored)", cause)
}

// open starts the confirm window of a change just applied.
func (p *Provider) open(env *converge.Env, d *planData) {
	p.mu.Lock()
	defer p.mu.Unlock()
	snap := d.snapshot
	if p.window != nil {
		// The previous change was never confirmed: rolling back must go
		// to the rules before it.
		if old := p.window.supersede(); old != nil {
			snap = old
		}
	}
	w := &Window{
		deadline: p.now().Add(d.confirm),
		hash:     d.hash,
		snapshot: snap,
		runner:   env.Runner,
		log:      p.log,
		onEnd:    p.ended,
		ops:      &p.ops,
		done:     make(chan struct{}),
	}
	if err := p.saveWindow(w); err != nil {
		p.log.Error("firewall confirm window not persisted: a restart inside it would not roll back", "err", err)
	}
	w.timer = time.AfterFunc(d.confirm, w.expire)
	p.window, p.last = w, w
	p.log.Info("firewall changed; waiting for confirmation", "rules", short(d.hash), "deadline", w.deadline.UTC().Format(time.RFC3339))
}

// savedWindow is the state file's content.
type savedWindow struct {
	Hash     string              `json:"hash"`
	Deadline time.Time           `json:"deadline"`
	Snapshot map[Family]*Ruleset `json:"snapshot"`
}

func (p *Provider) saveWindow(w *Window) error {
	if p.cfg.StateFile == "" {
		return nil
	}
	data, err := json.Marshal(savedWindow{Hash: w.hash, Deadline: w.deadline, Snapshot: w.snapshot})
	if err != nil {
		return err
	}
	return atomicfile.Write(p.cfg.StateFile, data, atomicfile.Options{Perm: 0o600, MkdirPerm: 0o700})
}

func (p *Provider) dropWindow() {
	if p.cfg.StateFile == "" {
		return
	}
	if err := os.Remove(p.cfg.StateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log.Error("remove firewall window state", "err", err)
	}
}

// recover reopens, once per provider, a window left open by a previous
// agent process (see Config.StateFile).
func (p *Provider) recover(env *converge.Env) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recovered || p.cfg.StateFile == "" {
		return nil
	}
	p.recovered = true
	data, err := os.ReadFile(p.cfg.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read firewall window state: %w", err)
	}
	var sw savedWindow
	if err := json.Unmarshal(data, &sw); err != nil || sw.Snapshot == nil {
		return fmt.Errorf("firewall window state %s is corrupt (%v): remove it after checking the rules", p.cfg.StateFile, err)
	}
	if p.window != nil {
		return nil
	}
	w := &Window{
		deadline: p.now().Add(p.cfg.ConfirmWindow),
		hash:     sw.Hash,
		snapshot: sw.Snapshot,
		runner:   env.Runner,
		log:      p.log,
		onEnd:    p.ended,
		ops:      &p.ops,
		done:     make(chan struct{}),
	}
	w.timer = time.AfterFunc(p.cfg.ConfirmWindow, w.expire)
	p.window, p.last = w, w
	p.log.Warn("unconfirmed firewall change found from before a restart: confirm window reopened", "rules", short(sw.Hash), "deadline", w.deadline.UTC().Format(time.RFC3339))
	return nil
}

func (p *Provider) ended(w *Window) {
	st, at, _ := w.State()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.window == w {
		p.window = nil
		p.dropWindow()
	}
	if st == WindowRolledBack {
		h := &hold{hash: w.hash, at: at}
		if p.cfg.HoldBack > 0 {
			h.until = at.Add(p.cfg.HoldBack)
		}
		p.hold = h
	}
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
	err := p.plan(ctx, env, ch, desired, hashRulesets(desired), p.cfg.ConfirmWindow, nil)
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
