// Package sysctl is the converge provider of the "sysctl" resource kind:
// one kernel parameter, applied live through /proc/sys and persisted in
// /etc/sysctl.d/60-hive.conf so that systemd-sysctl sets it at boot.
//
// Invariants: the persisted file holds exactly the keys hive set and
// still manages, each with the value it had before hive first set it (a
// "# before:" comment), so that pruning a key puts the live value back
// and drops its line; a key the kernel does not have, or a value it
// refuses, fails that resource alone and is neither persisted nor left
// half-applied (the live value is read back after every write). Other
// files in /etc/sysctl.d are never touched.
//
// Sysctls converge after the node's kernel_module resources (Linker).
// The engine calls Plan, Apply and Prune from one goroutine per run;
// nothing blocks but file I/O. /proc/sys/net is the network namespace's
// of the calling thread: the tests run the provider on a thread that
// entered a fresh namespace.
package sysctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Kind is the resource kind.
const Kind = "sysctl"

// ConfFile is the persisted file, relative to the managed root.
const ConfFile = "/etc/sysctl.d/60-hive.conf"

// Errors, wrapped in Change.Err.
var (
	// ErrNoKey is returned when the running kernel has no such parameter.
	ErrNoKey = errors.New("no such sysctl on this kernel")
	// ErrRefused is returned when the kernel refuses or alters a value.
	ErrRefused = errors.New("kernel refused the value")
)

// Config configures the provider.
type Config struct {
	// ProcSys is the host path of /proc/sys; empty means /proc/sys when
	// the managed root is the host's, and no live values otherwise (a
	// root that is not the running system only gets the persisted file).
	ProcSys string
}

// Provider converges sysctl resources.
type Provider struct{ cfg Config }

// New returns a provider.
func New(cfg Config) *Provider { return &Provider{cfg: cfg} }

var (
	_ converge.Provider  = (*Provider)(nil)
	_ converge.Validator = (*Provider)(nil)
	_ converge.Pruner    = (*Provider)(nil)
	_ converge.Linker    = (*Provider)(nil)
)

// Requires implements converge.Linker: sysctls converge after the node's
// kernel modules, which bring keys of their own (net.bridge.* comes with
// br_netfilter).
func (p *Provider) Requires(r *hivev1.Resource, all []*hivev1.Resource) []string {
	var out []string
	for _, o := range all {
		if o.GetKernelModule() != nil {
			out = append(out, o.GetKey())
		}
	}
	return out
}

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return Kind }

// Validate implements converge.Validator.
func (p *Provider) Validate(r *hivev1.Resource) error {
	s := r.GetSysctl()
	if s == nil {
		return fmt.Errorf("%w: not a sysctl resource", converge.ErrInvalid)
	}
	if err := site.FirstProblem(site.CheckSysctl(s)); err != nil {
		return fmt.Errorf("%w: %v", converge.ErrInvalid, err)
	}
	return nil
}

// plan is what Apply needs for one key.
type plan struct {
	key, value string
	live       string // observed live value
	observed   bool   // false when the root is not the running system's
	setLive    bool
	persist    bool
}

// Normalize makes a sysctl value comparable: whitespace runs become one
// space (the kernel prints vectors tab-separated).
func Normalize(v string) string { return strings.Join(strings.Fields(v), " ") }

func (p *Provider) procPath(env *converge.Env, key string) (string, error) {
	rel := site.SysctlPath(key)
	if p.cfg.ProcSys != "" {
		return converge.SecureJoin(p.cfg.ProcSys, "/"+rel)
	}
	return env.Path("/proc/sys/" + rel)
}

func (p *Provider) readLive(env *converge.Env, key string) (string, error) {
	fp, err := p.procPath(env, key)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(fp)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s (no %s)", ErrNoKey, key, fp)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return Normalize(string(b)), nil
}

// conf is the parsed persisted file.
type conf struct {
	values map[string]string // key → value hive set
	before map[string]string // key → value before hive set it
}

func (p *Provider) readConf(env *converge.Env) (*conf, string, error) {
	path, err := env.Path(ConfFile)
	if err != nil {
		return nil, "", err
	}
	c := &conf{values: map[string]string{}, before: map[string]string{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, path, nil
	}
	if err != nil {
		return nil, path, fmt.Errorf("read %s: %w", ConfFile, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "# before: "); ok {
			if k, v, ok := strings.Cut(rest, " = "); ok {
				c.before[k] = v
			}
			continue
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			c.values[strings.TrimSpace(k)] = Normalize(v)
		}
	}
	return c, path, nil
}

func (c *conf) render() []byte {
	var b strings.Builder
	b.WriteString("# Managed by hive (sysctl resources): edits are overwritten.\n")
	b.WriteString("# \"# before:\" lines keep each key's value from before hive set it.\n")
	keys := make([]string, 0, len(c.values))
	for k := range c.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v, ok := c.before[k]; ok {
			fmt.Fprintf(&b, "# before: %s = %s\n", k, v)
		}
		fmt.Fprintf(&b, "%s = %s\n", k, c.values[k])
	}
	return []byte(b.String())
}

func (c *conf) write(path string) error {
	if len(c.values) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", ConfFile, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(ConfFile), err)
	}
	return atomicfile.WriteFile(path, c.render(), 0o644)
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, _, err := p.readConf(env)
	if err != nil {
		return nil, err
	}
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{}
		out[i] = ch
		s := it.Resource.GetSysctl()
		key, want := s.GetKey(), Normalize(s.GetValue())
		live, observed := want, p.cfg.ProcSys != "" || env.HostRoot()
		if observed {
			if live, err = p.readLive(env, key); err != nil {
				ch.Err = err
				continue
			}
		}
		pl := &plan{key: key, value: want, live: live, setLive: live != want, persist: c.values[key] != want, observed: observed}
		ch.Data, ch.Needed = pl, pl.setLive || pl.persist
		var what []string
		if pl.setLive {
			what = append(what, fmt.Sprintf("set %s %s → %s", key, live, want))
			ch.Diff += fmt.Sprintf("-%s = %s\n+%s = %s\n", key, live, key, want)
		}
		if pl.persist {
			what = append(what, "persist in "+ConfFile)
		}
		if !observed && ch.Needed {
			what = append(what, "live value not set: the root is not the running system's")
		}
		ch.Summary = strings.Join(what, ", ")
	}
	return out, nil
}

// Apply implements converge.Provider: live values first, each read back;
// then the persisted file, once, with the keys that took.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	if len(changes) > 0 {
		if _, ok := changes[0].Data.(*prune); ok {
			return p.applyPrune(ctx, env, changes)
		}
	}
	c, path, err := p.readConf(env)
	if err != nil {
		return err
	}
	dirty := false
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		pl, ok := ch.Data.(*plan)
		if !ok {
			ch.Err = errors.New("sysctl: change without a plan")
			continue
		}
		if pl.setLive {
			if err := p.writeLive(env, pl.key, pl.value); err != nil {
				ch.Err = err
				continue
			}
		}
		if _, managed := c.values[pl.key]; !managed && pl.observed {
			if _, ok := c.before[pl.key]; !ok {
				c.before[pl.key] = pl.live
			}
		}
		if c.values[pl.key] != pl.value {
			c.values[pl.key], dirty = pl.value, true
		}
	}
	if !dirty {
		return nil
	}
	return c.write(path)
}

// writeLive writes value to key and checks that it reads back the same;
// on a refusal the old value stays (the kernel refused the write) or is
// put back (the kernel altered it).
func (p *Provider) writeLive(env *converge.Env, key, value string) error {
	fp, err := p.procPath(env, key)
	if err != nil {
		return err
	}
	old, err := p.readLive(env, key)
	if err != nil {
		return err
	}
	if err := writeProc(fp, value); err != nil {
		return fmt.Errorf("%w: %s = %q: %v", ErrRefused, key, value, err)
	}
	got, err := p.readLive(env, key)
	if err != nil {
		return err
	}
	if got != value {
		_ = writeProc(fp, old)
		return fmt.Errorf("%w: %s = %q reads back as %q (restored %q)", ErrRefused, key, value, got, old)
	}
	return nil
}

func writeProc(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// prune is what Apply needs to undo one key that left the state.
type prune struct {
	key, before string
	hasBefore   bool
}

// Prune implements converge.Pruner: keys in the persisted file that no
// resource holds any more get their value from before hive back and leave
// the file.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, _, err := p.readConf(env)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, it := range present {
		keep[it.Resource.GetSysctl().GetKey()] = true
	}
	var keys []string
	for k := range c.values {
		if !keep[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []*converge.Change
	for _, k := range keys {
		before, has := c.before[k]
		ch := &converge.Change{Key: Kind + ":" + k, Needed: true, Data: &prune{key: k, before: before, hasBefore: has}}
		ch.Summary = "no longer managed: drop from " + ConfFile
		if has {
			ch.Summary = fmt.Sprintf("no longer managed: restore %s = %s, drop from %s", k, before, ConfFile)
		}
		out = append(out, ch)
	}
	return out, nil
}

func (p *Provider) applyPrune(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	c, path, err := p.readConf(env)
	if err != nil {
		return err
	}
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		pr, ok := ch.Data.(*prune)
		if !ok {
			ch.Err = errors.New("sysctl: prune change without its data")
			continue
		}
		if pr.hasBefore && (p.cfg.ProcSys != "" || env.HostRoot()) {
			live, err := p.readLive(env, pr.key)
			switch {
			case errors.Is(err, ErrNoKey):
				// Gone with its interface or module: nothing to restore.
			case err != nil:
				ch.Err = err
				continue
			case live != pr.before:
				if err := p.writeLive(env, pr.key, pr.before); err != nil {
					ch.Err = err
					continue
				}
			}
		}
		delete(c.values, pr.key)
		delete(c.before, pr.key)
	}
	return c.write(path)
}

var _ converge.Snapshotter = (*Provider)(nil)

// snapshot is a key's state before a change with a confirm window: its
// live value (when the root is the running system's) and its lines in
// the persisted file (value and "# before:", each present or not).
type snapshot struct {
	Live      string `json:"live,omitempty"`
	Observed  bool   `json:"observed,omitempty"`
	Value     string `json:"value,omitempty"`
	Managed   bool   `json:"managed,omitempty"`
	Before    string `json:"before,omitempty"`
	HasBefore bool   `json:"has_before,omitempty"`
}

// Snapshot implements converge.Snapshotter.
func (p *Provider) Snapshot(ctx context.Context, env *converge.Env, r *hivev1.Resource) ([]byte, error) {
	key := r.GetSysctl().GetKey()
	c, _, err := p.readConf(env)
	if err != nil {
		return nil, err
	}
	s := snapshot{}
	s.Value, s.Managed = c.values[key]
	s.Before, s.HasBefore = c.before[key]
	if p.cfg.ProcSys != "" || env.HostRoot() {
		if s.Live, err = p.readLive(env, key); err != nil {
			return nil, err
		}
		s.Observed = true
	}
	return json.Marshal(s)
}

// Restore implements converge.Snapshotter: the live value first (read
// back), then the persisted file.
func (p *Provider) Restore(ctx context.Context, env *converge.Env, r *hivev1.Resource, b []byte) error {
	key := r.GetSysctl().GetKey()
	var s snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("bad snapshot: %w", err)
	}
	if s.Observed {
		live, err := p.readLive(env, key)
		if err != nil {
			return err
		}
		if live != s.Live {
			if err := p.writeLive(env, key, s.Live); err != nil {
				return err
			}
		}
	}
	c, path, err := p.readConf(env)
	if err != nil {
		return err
	}
	if s.Managed {
		c.values[key] = s.Value
	} else {
		delete(c.values, key)
	}
	if s.HasBefore {
		c.before[key] = s.Before
	} else {
		delete(c.before, key)
	}
	return c.write(path)
}
