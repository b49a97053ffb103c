// Package kmod is the converge provider of the "kernel_module" resource
// kind: a module loaded now (modprobe) and at boot
// (/etc/modules-load.d/hive-NAME.conf), with its options in
// /etc/modprobe.d/hive-NAME.conf.
//
// Invariants: hive's files are named hive-NAME.conf and hold only what
// the resource says; a module that fails to load leaves no file behind
// (modprobe runs first, with the options on its command line, and the
// files are written only when it succeeded). A module already loaded with
// other options is not reloaded: the new options take effect at its next
// load, and the plan says so. Pruning removes hive's files of modules no
// longer in the state and asks `modprobe -r` to unload them, which the
// kernel refuses for a module in use (the module then stays loaded until
// reboot, and the result says so).
//
// The engine calls Plan, Apply and Prune from one goroutine per run;
// modprobe is the only command run, through env.Runner.
package kmod

import (
	"context"
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
const Kind = "kernel_module"

// Directories of hive's files, relative to the managed root.
const (
	LoadDir    = "/etc/modules-load.d"
	OptionsDir = "/etc/modprobe.d"
)

// ErrLoad is returned (wrapped, with modprobe's message) when a module
// does not load.
var ErrLoad = errors.New("modprobe failed")

// Config configures the provider.
type Config struct {
	// SysModule is the host path of /sys/module, where loaded modules
	// appear; empty means /sys/module when the managed root is the
	// host's, and no loading otherwise (a root that is not the running
	// system only gets the boot files).
	SysModule string
}

// Provider converges kernel_module resources.
type Provider struct{ cfg Config }

// New returns a provider.
func New(cfg Config) *Provider { return &Provider{cfg: cfg} }

var (
	_ converge.Provider  = (*Provider)(nil)
	_ converge.Validator = (*Provider)(nil)
	_ converge.Pruner    = (*Provider)(nil)
)

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return Kind }

// Validate implements converge.Validator.
func (p *Provider) Validate(r *hivev1.Resource) error {
	m := r.GetKernelModule()
	if m == nil {
		return fmt.Errorf("%w: not a kernel_module resource", converge.ErrInvalid)
	}
	if err := site.FirstProblem(site.CheckKernelModule(m)); err != nil {
		return fmt.Errorf("%w: %v", converge.ErrInvalid, err)
	}
	return nil
}

// LoadFile and OptionsFile return the paths of a module's files.
func LoadFile(name string) string    { return LoadDir + "/hive-" + name + ".conf" }
func OptionsFile(name string) string { return OptionsDir + "/hive-" + name + ".conf" }

func loadContent(name string) string {
	return "# Managed by hive (kernel_module:" + name + ")\n" + name + "\n"
}

func optionsContent(m *hivev1.KernelModule) string {
	if len(m.GetOptions()) == 0 {
		return ""
	}
	return "# Managed by hive (kernel_module:" + m.GetName() + ")\noptions " + m.GetName() + " " + strings.Join(m.GetOptions(), " ") + "\n"
}

// loaded reports whether the module is in /sys/module (loaded or built
// in); the kernel shows '-' in names as '_'.
func (p *Provider) loaded(env *converge.Env, name string) (bool, error) {
	if p.cfg.SysModule == "" && !env.HostRoot() {
		return true, nil // not the running kernel's root: boot files only
	}
	rel := "/" + strings.ReplaceAll(name, "-", "_")
	var dir string
	var err error
	if p.cfg.SysModule != "" {
		dir, err = converge.SecureJoin(p.cfg.SysModule, rel)
	} else {
		dir, err = env.Path("/sys/module" + rel)
	}
	if err != nil {
		return false, err
	}
	_, err = os.Stat(dir)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

// readOr returns a file's content, "" when it does not exist.
func readOr(path string) (string, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	return string(b), err == nil, err
}

type plan struct {
	m       *hivev1.KernelModule
	load    bool
	files   map[string]string // root path → content ("" = remove)
	fileOps []string
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{}
		out[i] = ch
		m := it.Resource.GetKernelModule()
		pl := &plan{m: m, files: map[string]string{}}
		isLoaded, err := p.loaded(env, m.GetName())
		if err != nil {
			ch.Err = fmt.Errorf("observe module %s: %w", m.GetName(), err)
			continue
		}
		pl.load = !isLoaded
		want := map[string]string{LoadFile(m.GetName()): loadContent(m.GetName()), OptionsFile(m.GetName()): optionsContent(m)}
		for _, f := range []string{LoadFile(m.GetName()), OptionsFile(m.GetName())} {
			hp, err := env.Path(f)
			if err != nil {
				ch.Err = err
				break
			}
			have, exists, err := readOr(hp)
			if err != nil {
				ch.Err = fmt.Errorf("read %s: %w", f, err)
				break
			}
			switch {
			case want[f] == "" && exists:
				pl.files[f] = ""
				pl.fileOps = append(pl.fileOps, "remove "+f)
			case want[f] != "" && have != want[f]:
				pl.files[f] = want[f]
				pl.fileOps = append(pl.fileOps, "write "+f)
			}
		}
		if ch.Err != nil {
			continue
		}
		var what []string
		if pl.load {
			what = append(what, strings.TrimSpace("modprobe "+m.GetName()+" "+strings.Join(m.GetOptions(), " ")))
		}
		what = append(what, pl.fileOps...)
		live := p.cfg.SysModule != "" || env.HostRoot()
		if live && !pl.load && (pl.files[OptionsFile(m.GetName())] != "" || contains(pl.fileOps, "remove "+OptionsFile(m.GetName()))) {
			what = append(what, "new options take effect at the module's next load (it is loaded)")
		}
		ch.Needed = pl.load || len(pl.files) > 0
		ch.Summary, ch.Data = strings.Join(what, ", "), pl
		for _, op := range pl.fileOps {
			ch.Diff += op + "\n"
		}
	}
	return out, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch d := ch.Data.(type) {
		case *plan:
			ch.Err = p.apply(ctx, env, d)
		case *prune:
			p.applyPrune(ctx, env, ch, d)
		default:
			ch.Err = errors.New("kernel_module: change without a plan")
		}
	}
	return nil
}

func (p *Provider) apply(ctx context.Context, env *converge.Env, pl *plan) error {
	name := pl.m.GetName()
	if pl.load {
		out, err := env.Runner.Run(ctx, converge.Cmd{Name: "modprobe", Args: append([]string{"--", name}, pl.m.GetOptions()...)})
		if err != nil || out.ExitCode != 0 {
			msg := strings.TrimSpace(string(out.Stderr))
			if msg == "" && err != nil {
				msg = err.Error()
			}
			return fmt.Errorf("%w: load %s: %s", ErrLoad, name, msg)
		}
	}
	files := make([]string, 0, len(pl.files))
	for f := range pl.files {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		hp, err := env.Path(f)
		if err != nil {
			return err
		}
		if pl.files[f] == "" {
			if err := os.Remove(hp); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("remove %s: %w", f, err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(hp), 0o755); err != nil {
			return fmt.Errorf("create %s: %w", filepath.Dir(f), err)
		}
		if err := atomicfile.WriteFile(hp, []byte(pl.files[f]), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f, err)
		}
	}
	return nil
}

type prune struct{ name string }

// Prune implements converge.Pruner: hive-NAME.conf files of modules no
// resource holds.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, it := range present {
		keep[it.Resource.GetKernelModule().GetName()] = true
	}
	names := map[string]bool{}
	for _, dir := range []string{LoadDir, OptionsDir} {
		hd, err := env.Path(dir)
		if err != nil {
			return nil, err
		}
		ents, err := os.ReadDir(hd)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read %s: %w", dir, err)
		}
		for _, e := range ents {
			n, ok := strings.CutPrefix(e.Name(), "hive-")
			if !ok || !strings.HasSuffix(n, ".conf") || e.IsDir() {
				continue
			}
			n = strings.TrimSuffix(n, ".conf")
			if !keep[n] {
				names[n] = true
			}
		}
	}
	var out []*converge.Change
	for _, n := range sortedKeys(names) {
		out = append(out, &converge.Change{Key: Kind + ":" + n, Needed: true, Data: &prune{name: n},
			Summary: fmt.Sprintf("no longer managed: remove %s and %s, modprobe -r %s", LoadFile(n), OptionsFile(n), n)})
	}
	return out, nil
}

func (p *Provider) applyPrune(ctx context.Context, env *converge.Env, ch *converge.Change, pr *prune) {
	for _, f := range []string{LoadFile(pr.name), OptionsFile(pr.name)} {
		hp, err := env.Path(f)
		if err == nil {
			err = os.Remove(hp)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			ch.Err = fmt.Errorf("remove %s: %w", f, err)
			return
		}
	}
	isLoaded, err := p.loaded(env, pr.name)
	if err != nil || !isLoaded {
		ch.Summary = fmt.Sprintf("no longer managed: removed %s and %s", LoadFile(pr.name), OptionsFile(pr.name))
		return
	}
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "modprobe", Args: []string{"-r", "--", pr.name}})
	if err != nil || out.ExitCode != 0 {
		msg := strings.TrimSpace(string(out.Stderr))
		if msg == "" && err != nil {
			msg = err.Error()
		}
		ch.Summary = fmt.Sprintf("no longer managed: removed %s and %s; still loaded until reboot (modprobe -r: %s)", LoadFile(pr.name), OptionsFile(pr.name), msg)
		return
	}
	ch.Summary = fmt.Sprintf("no longer managed: removed %s and %s, unloaded %s", LoadFile(pr.name), OptionsFile(pr.name), pr.name)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
