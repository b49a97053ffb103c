package drbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// ConfDir is where resource files go, below Env.Root.
const ConfDir = "/etc/drbd.d"

// Errors of planning and applying.
var (
	// ErrHasData is wrapped when a disk without DRBD metadata holds
	// something (a filesystem signature, a partition table, non-zero
	// bytes): create-md would write over it, so hive refuses.
	ErrHasData = errors.New("disk holds data but no drbd metadata")
	// ErrNoKernel is wrapped when the drbd kernel module cannot be used.
	ErrNoKernel = errors.New("drbd kernel module not available")
	// ErrRejected is wrapped when drbdadm's parser rejects the rendered
	// configuration.
	ErrRejected = errors.New("drbdadm rejected the configuration")
	// ErrSandbox is returned by Apply in sandbox mode.
	ErrSandbox = errors.New("drbd provider in sandbox mode: plan only")
)

// Config configures the provider.
type Config struct {
	// Drbdadm, Blkid and Dd are the program names run through the Runner.
	Drbdadm, Blkid, Dd string
	// Sandbox: never observe or change the machine (the agent under
	// --root). Plan checks and renders each resource and plans writing it,
	// creating metadata if the disk has none and adjusting; Apply refuses
	// with ErrSandbox.
	Sandbox bool
}

// DefaultConfig returns the standard program names.
func DefaultConfig() Config { return Config{Drbdadm: "drbdadm", Blkid: "blkid", Dd: "dd"} }

// Validate checks the config.
func (c Config) Validate() error {
	if c.Drbdadm == "" || c.Blkid == "" || c.Dd == "" {
		return errors.New("drbd: program names must be set")
	}
	return nil
}

// Provider converges the "drbd" resource kind. It keeps no state between
// calls.
type Provider struct {
	cfg Config
	log *slog.Logger
}

// New returns a provider.
func New(cfg Config, log *slog.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &Provider{cfg: cfg, log: log.With("component", "drbd")}, nil
}

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return converge.KindDrbd }

// Requires implements converge.Linker: drbd-utils, when the state installs
// it, comes first.
func (p *Provider) Requires(r *hivev1.Resource, all []*hivev1.Resource) []string {
	return []string{"package:drbd-utils"}
}

type planData struct {
	cfg      *Spec
	remove   string // name of a resource to take down (Prune)
	node     string // node name the file to remove was rendered for
	path     string // host path of the .res file
	text     string // rendered file
	old      []byte // previous file, nil when absent
	write    bool
	createMD bool
	adjust   []string // what drbdadm -d adjust would run
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	self := env.Facts.GetName()
	others, err := p.existing(env)
	if err != nil {
		return nil, err
	}
	out := make([]*converge.Change, len(b.Items))
	cfgs := make([]*Spec, len(b.Items))
	for i, it := range b.Items {
		out[i] = &converge.Change{Key: it.Key, Resource: it.Resource}
		d := it.Resource.GetDrbd()
		if d == nil {
			out[i].Err = fmt.Errorf("%w: %s is not a drbd resource", ErrInvalid, it.Key)
			continue
		}
		c, err := Check(d, self)
		if err != nil {
			out[i].Err = err
			continue
		}
		if want := converge.KindDrbd + ":" + c.Name; it.Key != want {
			out[i].Err = fmt.Errorf("%w: key %s does not match name %q (want %s)", ErrInvalid, it.Key, c.Name, want)
			continue
		}
		cfgs[i] = c
	}
	p.planSpecs(ctx, env, b, cfgs, out, others)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, nil
}

func (p *Provider) planSpecs(ctx context.Context, env *converge.Env, b *converge.Batch, cfgs []*Spec, out []*converge.Change, others map[string]fileInfo) {
	clashes(b, cfgs, out, others)
	for i, c := range cfgs {
		if c == nil || out[i].Err != nil {
			continue
		}
		if err := p.planOne(ctx, env, c, out[i]); err != nil {
			if ctx.Err() != nil {
				return
			}
			out[i].Err = err
		}
	}
}

// PlanSpec plans one resource checked elsewhere (a volume's, by
// converge/volume), with the same port and minor clash check against
// every other hive-rendered file on the node; Apply carries the change
// out. The change's Err holds a per-resource failure.
func (p *Provider) PlanSpec(ctx context.Context, env *converge.Env, key string, c *Spec) (*converge.Change, error) {
	others, err := p.existing(env)
	if err != nil {
		return nil, err
	}
	ch := &converge.Change{Key: key}
	p.planSpecs(ctx, env, &converge.Batch{Items: []converge.Item{{Key: key}}}, []*Spec{c}, []*converge.Change{ch}, others)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return ch, nil
}

// Owned reports the names of the hive-rendered resource files on the node
// whose owner (Spec.Owner) is owner.
func (p *Provider) Owned(env *converge.Env, owner string) ([]string, error) {
	files, err := p.existing(env)
	if err != nil {
		return nil, err
	}
	var out []string
	for n, f := range files {
		if f.owner == owner {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Remove takes the resource name down and deletes its file, when hive
// rendered it; a resource without a file is already removed.
func (p *Provider) Remove(ctx context.Context, env *converge.Env, name string) error {
	files, err := p.existing(env)
	if err != nil {
		return err
	}
	f, ok := files[name]
	if !ok {
		return nil
	}
	path, err := env.Path(ConfDir + "/" + name + ".res")
	if err != nil {
		return err
	}
	return p.applyRemove(ctx, env, &planData{remove: name, path: path, node: f.node})
}

// clashes fails resources sharing a port or minor with another resource of
// the batch or with another hive-rendered file on the node.
func clashes(b *converge.Batch, cfgs []*Spec, out []*converge.Change, others map[string]fileInfo) {
	type use struct{ key, what string }
	ports, minors := map[uint16][]use{}, map[uint32][]use{}
	inBatch := map[string]bool{}
	for i, c := range cfgs {
		if c != nil {
			inBatch[c.Name] = true
			ports[c.Port] = append(ports[c.Port], use{b.Items[i].Key, "resource " + c.Name})
			minors[c.Minor] = append(minors[c.Minor], use{b.Items[i].Key, "resource " + c.Name})
		}
	}
	names := make([]string, 0, len(others))
	for n := range others {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if inBatch[n] {
			continue
		}
		f := others[n]
		ports[f.port] = append(ports[f.port], use{"", "file " + ConfDir + "/" + n + ".res"})
		minors[f.minor] = append(minors[f.minor], use{"", "file " + ConfDir + "/" + n + ".res"})
	}
	for i, c := range cfgs {
		if c == nil {
			continue
		}
		var with []string
		for _, u := range ports[c.Port] {
			if u.key != b.Items[i].Key {
				with = append(with, fmt.Sprintf("port %d also used by %s", c.Port, u.what))
			}
		}
		for _, u := range minors[c.Minor] {
			if u.key != b.Items[i].Key {
				with = append(with, fmt.Sprintf("minor %d also used by %s", c.Minor, u.what))
			}
		}
		if len(with) > 0 {
			out[i].Err = fmt.Errorf("%w: %s", ErrClash, strings.Join(with, "; "))
		}
	}
}

// existing reads the hive-rendered resource files on the node, by name.
func (p *Provider) existing(env *converge.Env) (map[string]fileInfo, error) {
	dir, err := env.Path(ConfDir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]fileInfo{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ConfDir, err)
	}
	out := map[string]fileInfo{}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".res") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read %s/%s: %w", ConfDir, e.Name(), err)
		}
		if fi, ok := parseHiveFile(string(data)); ok && fi.name+".res" == e.Name() {
			out[fi.name] = fi
		}
	}
	return out, nil
}

func (p *Provider) planOne(ctx context.Context, env *converge.Env, c *Spec, ch *converge.Change) error {
	d := &planData{cfg: c, text: c.Render()}
	if p.cfg.Sandbox {
		ch.Needed = true
		ch.Summary = "not observed (sandbox root): would write " + ConfDir + "/" + c.Name + ".res and adjust"
		ch.Diff = fmt.Sprintf("write %s/%s.res (%d bytes)\ndrbdadm create-md %s if %s has no metadata and no data\ndrbdadm adjust %s\n", ConfDir, c.Name, len(d.text), c.Name, mdDevice(c), c.Name)
		return nil
	}
	var err error
	if d.path, err = env.Path(ConfDir + "/" + c.Name + ".res"); err != nil {
		return err
	}
	d.old, err = os.ReadFile(d.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", d.path, err)
	}
	d.write = !bytes.Equal(d.old, []byte(d.text))

	// Everything below reads the rendered text from a temporary file, so
	// Plan never writes the real configuration.
	tmp, err := writeTemp(d.text)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if _, err := p.drbdadm(ctx, env, c.Self, "-c", tmp, "dump", c.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrRejected, err)
	}
	out, err := p.drbdadm(ctx, env, c.Self, "-c", tmp, "-d", "adjust", c.Name)
	if err != nil {
		return fmt.Errorf("drbdadm -d adjust %s: %w", c.Name, err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			d.adjust = append(d.adjust, l)
		}
	}
	attaching := false
	for _, l := range d.adjust {
		if strings.Contains(l, " attach ") {
			attaching = true
		}
	}
	if attaching {
		has, err := p.hasMetadata(ctx, env, c, tmp)
		if err != nil {
			return err
		}
		if !has {
			if err := p.checkEmpty(ctx, env, c); err != nil {
				return err
			}
			d.createMD = true
		}
	}
	ch.Data = d
	var diff []string
	if d.write {
		if d.old == nil {
			diff = append(diff, fmt.Sprintf("create %s (%d bytes)", ConfDir+"/"+c.Name+".res", len(d.text)))
		} else {
			diff = append(diff, fmt.Sprintf("rewrite %s (%d bytes)", ConfDir+"/"+c.Name+".res", len(d.text)))
		}
	}
	if d.createMD {
		diff = append(diff, fmt.Sprintf("drbdadm create-md %s (%s has no drbd metadata and no data)", c.Name, mdDevice(c)))
	}
	for _, l := range d.adjust {
		diff = append(diff, "adjust: "+l)
	}
	if len(diff) == 0 {
		ch.Summary = "up to date"
		if st, err := p.Status(ctx, env, c.Name); err == nil {
			ch.Summary += ": " + compactStatus(st)
		}
		return nil
	}
	ch.Needed = true
	ch.Diff = strings.Join(diff, "\n") + "\n"
	ch.Summary = fmt.Sprintf("%d step(s): %s", len(diff), diff[0])
	return nil
}

func mdDevice(c *Spec) string {
	if c.MetaDisk == "internal" {
		return c.Disk
	}
	return c.MetaDisk
}

// hasMetadata asks drbdmeta (through drbdadm dump-md) whether the disk has
// DRBD metadata.
func (p *Provider) hasMetadata(ctx context.Context, env *converge.Env, c *Spec, conf string) (bool, error) {
	_, err := p.drbdadm(ctx, env, c.Self, "-c", conf, "dump-md", c.Name)
	if err == nil {
		return true, nil
	}
	if strings.Contains(err.Error(), "No valid meta data found") {
		return false, nil
	}
	return false, fmt.Errorf("check drbd metadata on %s: %w", mdDevice(c), err)
}

// checkEmpty fails with ErrHasData unless the metadata device has no
// signature blkid knows and its first 64 KiB are zero.
func (p *Provider) checkEmpty(ctx context.Context, env *converge.Env, c *Spec) error {
	dev := mdDevice(c)
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: p.cfg.Blkid, Args: []string{"-p", "-o", "export", dev}})
	var ee *converge.ExitError
	switch {
	case err == nil:
		var sig []string
		for _, l := range strings.Split(string(out.Stdout), "\n") {
			if strings.HasPrefix(l, "TYPE=") || strings.HasPrefix(l, "PTTYPE=") || strings.HasPrefix(l, "USAGE=") {
				sig = append(sig, l)
			}
		}
		return fmt.Errorf("%w: %s has %s; refusing create-md", ErrHasData, dev, strings.Join(sig, " "))
	case errors.As(err, &ee) && ee.Code == 2:
		// No signature found.
	default:
		return fmt.Errorf("probe %s: %w", dev, err)
	}
	out, err = env.Runner.Run(ctx, converge.Cmd{Name: p.cfg.Dd, Args: []string{"if=" + dev, "bs=65536", "count=1", "status=none"}})
	if err != nil {
		return fmt.Errorf("read %s: %w", dev, err)
	}
	if len(out.Stdout) == 0 {
		return fmt.Errorf("read %s: empty device", dev)
	}
	for _, b := range out.Stdout {
		if b != 0 {
			return fmt.Errorf("%w: %s has non-zero bytes in its first 64 KiB; refusing create-md", ErrHasData, dev)
		}
	}
	return nil
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
		if d.remove != "" {
			ch.Err = p.applyRemove(ctx, env, d)
		} else {
			ch.Err = p.apply(ctx, env, d)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (p *Provider) apply(ctx context.Context, env *converge.Env, d *planData) error {
	c := d.cfg
	if d.createMD {
		tmp, err := writeTemp(d.text)
		if err != nil {
			return err
		}
		defer os.Remove(tmp)
		// Checked again right before writing: never over data.
		if has, err := p.hasMetadata(ctx, env, c, tmp); err != nil {
			return err
		} else if !has {
			if err := p.checkEmpty(ctx, env, c); err != nil {
				return err
			}
			if _, err := p.drbdadm(ctx, env, c.Self, "-c", tmp, "create-md", "--force", c.Name); err != nil {
				return fmt.Errorf("create-md %s: %w", c.Name, err)
			}
			p.log.Info("drbd metadata created", "resource", c.Name, "device", mdDevice(c))
		}
	}
	if d.write {
		if err := writeFile(d.path, []byte(d.text)); err != nil {
			return err
		}
	}
	if _, err := p.drbdadm(ctx, env, c.Self, "-c", d.path, "adjust", c.Name); err != nil {
		if d.write {
			if rerr := p.restoreFile(d); rerr != nil {
				err = fmt.Errorf("%w; restoring the previous file failed: %v", err, rerr)
			}
		}
		if strings.Contains(err.Error(), "modprobe") || strings.Contains(err.Error(), "Module drbd not found") {
			return fmt.Errorf("adjust %s: %w: %v", c.Name, ErrNoKernel, err)
		}
		return fmt.Errorf("adjust %s: %w", c.Name, err)
	}
	p.log.Info("drbd resource adjusted", "resource", c.Name, "steps", len(d.adjust))
	return nil
}

func (p *Provider) restoreFile(d *planData) error {
	if d.old == nil {
		return os.Remove(d.path)
	}
	return writeFile(d.path, d.old)
}

// Prune plans taking down and deleting every hive-rendered resource file
// whose resource is not among present (the node's drbd resources); Apply
// carries it out. (Optional converge interface: Prune(ctx, env, present).)
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if p.cfg.Sandbox {
		return nil, nil
	}
	files, err := p.existing(env)
	if err != nil {
		return nil, err
	}
	kept := map[string]bool{}
	for _, it := range present {
		kept[it.Resource.GetDrbd().GetName()] = true
	}
	names := make([]string, 0, len(files))
	for n, f := range files {
		if !kept[n] && f.owner == "" { // volumes' files are converge/volume's
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []*converge.Change
	for _, n := range names {
		path, err := env.Path(ConfDir + "/" + n + ".res")
		if err != nil {
			return nil, err
		}
		out = append(out, &converge.Change{
			Key:     converge.KindDrbd + ":" + n,
			Needed:  true,
			Summary: "down and remove " + n,
			Diff:    fmt.Sprintf("drbdadm down %s\nremove %s/%s.res\n", n, ConfDir, n),
			Data:    &planData{remove: n, path: path, node: files[n].node},
		})
	}
	return out, nil
}

func (p *Provider) applyRemove(ctx context.Context, env *converge.Env, d *planData) error {
	// The resource file names this node's "on" section by the node name
	// it was rendered for (the engine's prune Env carries no facts).
	self := d.node
	if self == "" {
		self = env.Facts.GetName()
	}
	if _, err := p.drbdadm(ctx, env, self, "-c", d.path, "down", d.remove); err != nil {
		// Not running (or no kernel module, so it cannot be running):
		// fine; anything else keeps the file so the next run retries.
		st, serr := env.Runner.Run(ctx, converge.Cmd{Name: "drbdsetup", Args: []string{"status", d.remove}})
		if serr == nil {
			return fmt.Errorf("down %s: %w (still running: %s)", d.remove, err, strings.TrimSpace(string(st.Stdout)))
		}
	}
	if err := os.Remove(d.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", d.path, err)
	}
	p.log.Info("drbd resource removed", "resource", d.remove)
	return nil
}

// Status returns `drbdsetup status NAME` output (Plan puts it, folded,
// into the summary of an up-to-date resource), or an error when the
// resource is not running or the kernel module is missing.
func (p *Provider) Status(ctx context.Context, env *converge.Env, name string) (string, error) {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "drbdsetup", Args: []string{"status", name}})
	if err != nil {
		return "", fmt.Errorf("drbd status %s: %w", name, err)
	}
	return string(out.Stdout), nil
}

// compactStatus folds drbdsetup status output into one line.
func compactStatus(s string) string {
	f := strings.Fields(s)
	if len(f) > 24 {
		f = append(f[:24], "…")
	}
	return strings.Join(f, " ")
}

// drbdadm runs drbdadm as node self (__DRBD_NODE__, so the "on" sections
// use hive node names whatever the hostname) and returns its stdout; an
// error carries drbdadm's stderr without its chatter.
func (p *Provider) drbdadm(ctx context.Context, env *converge.Env, self string, args ...string) ([]byte, error) {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: p.cfg.Drbdadm, Args: args, Env: []string{"__DRBD_NODE__=" + self}})
	if err != nil {
		msg := cleanStderr(out.Stderr)
		var ee *converge.ExitError
		if errors.As(err, &ee) {
			return out.Stdout, fmt.Errorf("drbdadm %s: exit status %d: %s", strings.Join(args, " "), ee.Code, msg)
		}
		return out.Stdout, fmt.Errorf("drbdadm %s: %w", strings.Join(args, " "), err)
	}
	return out.Stdout, nil
}

// cleanStderr drops drbdadm's informational lines.
func cleanStderr(b []byte) string {
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(l)
		switch {
		case t == "",
			strings.Contains(t, "found __DRBD_NODE__"),
			strings.Contains(t, "PRETENDING that I am"),
			strings.Contains(t, "modinfo: not found"):
		default:
			keep = append(keep, t)
		}
	}
	return strings.Join(keep, "; ")
}

func writeTemp(text string) (string, error) {
	f, err := os.CreateTemp("", "hive-drbd-*.res")
	if err != nil {
		return "", fmt.Errorf("temp config: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("temp config: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("temp config: %w", err)
	}
	return f.Name(), nil
}

// writeFile writes atomically (internal/atomicfile).
func writeFile(path string, data []byte) error {
	return atomicfile.Write(path, data, atomicfile.Options{Perm: 0o644, MkdirPerm: 0o755})
}
