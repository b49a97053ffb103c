// Package mount is the converge provider of the "mount" resource kind: a
// filesystem on a device, made only when the device is blank, an
// /etc/fstab entry and the mounted state.
//
// Invariants:
//   - mkfs never runs over data: only when blkid finds no signature on
//     the device AND its first MiB is all zero, checked in Plan and again
//     right before mkfs. A device holding another filesystem, or none but
//     non-zero bytes, fails with a message that says so.
//   - hive's fstab entries are the lines right after a "# hive: mount:PATH"
//     marker; lines without a marker are never changed, and an unmarked
//     entry for the same mount point fails the resource (remove it, or
//     let hive own it by deleting it). The file is replaced atomically.
//   - Apply mounts first and writes fstab after, so a mount that fails
//     leaves fstab as it was. A path mounted from another device fails
//     (hive never unmounts what it did not mount); a mount with other
//     options is left alone until its next mount (the plan says so).
//   - Pruning unmounts and removes hive's entries for mount points no
//     longer in the state; it never touches the filesystem.
//
// Device paths are the host's (/dev/…): under a --root sandbox the kind
// is plan-only. The engine calls Plan, Apply and Prune from one goroutine
// per run; blkid, mkfs.<fstype>, mount and umount run through env.Runner.
package mount

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Kind is the resource kind.
const Kind = "mount"

// Fstab is the fstab path, relative to the managed root.
const Fstab = "/etc/fstab"

// marker precedes each of hive's fstab entries.
const marker = "# hive: mount:"

// BlankBytes is how much of a device must be zero for it to count as blank.
const BlankBytes = 1 << 20

// Errors, wrapped in Change.Err.
var (
	// ErrNotBlank is returned when mkfs would write over data.
	ErrNotBlank = errors.New("device is not blank")
	// ErrNoFilesystem is returned when the device has no filesystem and
	// mkfs is not set.
	ErrNoFilesystem = errors.New("device has no filesystem")
	// ErrConflict is returned when the mount point or fstab entry belongs
	// to something hive did not make.
	ErrConflict = errors.New("conflict")
)

// Config configures the provider.
type Config struct {
	// Mountinfo is the host path of the mount table; empty means
	// /proc/self/mountinfo.
	Mountinfo string
}

// Provider converges mount resources.
type Provider struct{ cfg Config }

// New returns a provider.
func New(cfg Config) *Provider {
	if cfg.Mountinfo == "" {
		cfg.Mountinfo = "/proc/self/mountinfo"
	}
	return &Provider{cfg: cfg}
}

var (
	_ converge.Provider  = (*Provider)(nil)
	_ converge.Validator = (*Provider)(nil)
	_ converge.Pruner    = (*Provider)(nil)
)

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return Kind }

// Validate implements converge.Validator.
func (p *Provider) Validate(r *hivev1.Resource) error {
	m := r.GetMount()
	if m == nil {
		return fmt.Errorf("%w: not a mount resource", converge.ErrInvalid)
	}
	if err := site.FirstProblem(site.CheckMount(m)); err != nil {
		return fmt.Errorf("%w: %v", converge.ErrInvalid, err)
	}
	return nil
}

// Entry returns the fstab line of a mount.
func Entry(m *hivev1.Mount) string {
	opts := "defaults"
	if len(m.GetOptions()) > 0 {
		opts = strings.Join(m.GetOptions(), ",")
	}
	return fmt.Sprintf("%s %s %s %s %d %d", m.GetDevice(), m.GetPath(), m.GetFstype(), opts, m.GetDump(), m.GetPass())
}

// mounted is one line of mountinfo.
type mounted struct {
	point, fstype, source, options string
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountTable reads mountinfo; the last mount on a point is the visible one.
func (p *Provider) mountTable() (map[string]mounted, error) {
	b, err := os.ReadFile(p.cfg.Mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	out := map[string]mounted{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		pt := unescape(f[4])
		out[pt] = mounted{point: pt, options: f[5], fstype: f[sep+1], source: unescape(f[sep+2])}
	}
	return out, sc.Err()
}

// fstab is the parsed fstab: lines, and hive's entries by mount point.
type fstab struct {
	lines []string
	hive  map[string]int // path → index of the entry line (marker at index-1)
	other map[string]int // unmarked entries by mount point
}

func readFstab(path string) (*fstab, error) {
	t := &fstab{hive: map[string]int{}, other: map[string]int{}}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", Fstab, err)
	}
	if len(b) > 0 {
		t.lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	for i, l := range t.lines {
		if pt, ok := strings.CutPrefix(l, marker); ok && i+1 < len(t.lines) {
			t.hive[pt] = i + 1
			continue
		}
		f := strings.Fields(l)
		if len(f) >= 2 && !strings.HasPrefix(f[0], "#") && (i == 0 || !strings.HasPrefix(t.lines[i-1], marker)) {
			t.other[unescape(f[1])] = i
		}
	}
	return t, nil
}

func (t *fstab) bytes() []byte {
	if len(t.lines) == 0 {
		return nil
	}
	return []byte(strings.Join(t.lines, "\n") + "\n")
}

// set puts hive's entry for pt (entry "" removes it).
func (t *fstab) set(pt, entry string) {
	i, ok := t.hive[pt]
	switch {
	case ok && entry == "":
		t.lines = append(t.lines[:i-1], t.lines[i+1:]...)
	case ok:
		t.lines[i] = entry
	case entry != "":
		t.lines = append(t.lines, marker+pt, entry)
	}
	// Re-index hive's entries (other is only read by Plan).
	t.hive = map[string]int{}
	for i, l := range t.lines {
		if p, ok := strings.CutPrefix(l, marker); ok && i+1 < len(t.lines) {
			t.hive[p] = i + 1
		}
	}
}

// probe is what blkid says of a device.
func probe(ctx context.Context, env *converge.Env, dev string) (fstype string, err error) {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "blkid", Args: []string{"-p", "-o", "export", "--", dev}})
	if out.ExitCode == 2 {
		return "", nil // nothing found
	}
	if err != nil {
		return "", fmt.Errorf("blkid %s: %w", dev, err)
	}
	for _, l := range strings.Split(string(out.Stdout), "\n") {
		if v, ok := strings.CutPrefix(l, "TYPE="); ok {
			return v, nil
		}
		if v, ok := strings.CutPrefix(l, "PTTYPE="); ok {
			return "partition table " + v, nil
		}
	}
	return "", nil
}

// zeroHead reports whether the first BlankBytes of dev are zero (a
// shorter device must be zero throughout).
func zeroHead(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for n < BlankBytes {
		k, err := f.Read(buf)
		for _, c := range buf[:k] {
			if c != 0 {
				return false, nil
			}
		}
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
	}
	return true, nil
}

// CheckBlank returns nil when dev holds no signature blkid knows and its
// first BlankBytes are zero, else an error wrapping ErrNotBlank that says
// what it holds (converge/volume uses it before making a volume group or a
// filesystem).
func CheckBlank(ctx context.Context, env *converge.Env, dev string) error {
	return checkBlank(ctx, env, dev)
}

// checkBlank returns nil when mkfs may run on dev, or why not.
func checkBlank(ctx context.Context, env *converge.Env, dev string) error {
	fsType, err := probe(ctx, env, dev)
	if err != nil {
		return err
	}
	if fsType != "" {
		return fmt.Errorf("%w: %s holds %s (blkid): refusing mkfs over data", ErrNotBlank, dev, fsType)
	}
	zero, err := zeroHead(dev)
	if err != nil {
		return fmt.Errorf("read %s: %w", dev, err)
	}
	if !zero {
		return fmt.Errorf("%w: %s has no filesystem signature but its first MiB is not zero: refusing mkfs over data (wipe it yourself if it is really unused)", ErrNotBlank, dev)
	}
	return nil
}

type plan struct {
	m                  *hivev1.Mount
	mkfs, mount, entry bool
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	table, err := p.mountTable()
	if err != nil {
		return nil, err
	}
	fp, err := env.Path(Fstab)
	if err != nil {
		return nil, err
	}
	tab, err := readFstab(fp)
	if err != nil {
		return nil, err
	}
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{}
		out[i] = ch
		ch.Data, ch.Summary, ch.Diff, ch.Err = p.plan(ctx, env, it.Resource.GetMount(), table, tab)
		ch.Needed = ch.Err == nil && ch.Data != nil
	}
	return out, nil
}

func (p *Provider) plan(ctx context.Context, env *converge.Env, m *hivev1.Mount, table map[string]mounted, tab *fstab) (any, string, string, error) {
	pt, err := env.Path(m.GetPath())
	if err != nil {
		return nil, "", "", err
	}
	if i, ok := tab.other[m.GetPath()]; ok {
		return nil, "", "", fmt.Errorf("%w: %s line %d already mounts %s and was not written by hive: remove it to let hive manage the mount", ErrConflict, Fstab, i+1, m.GetPath())
	}
	pl := &plan{m: m}
	var what []string
	var diff string
	cur, isMounted := table[pt]
	if isMounted && !sameSource(cur.source, m.GetDevice()) {
		return nil, "", "", fmt.Errorf("%w: %s is mounted from %s (%s), not %s: hive does not unmount what it did not mount", ErrConflict, m.GetPath(), cur.source, cur.fstype, m.GetDevice())
	}
	if !isMounted {
		pl.mount = true
		if site.MountDeviceIsPath(m.GetDevice()) && m.GetFstype() != "tmpfs" {
			if _, err := os.Stat(m.GetDevice()); errors.Is(err, fs.ErrNotExist) {
				return nil, "", "", fmt.Errorf("device %s does not exist", m.GetDevice())
			} else if err != nil {
				return nil, "", "", fmt.Errorf("device %s: %w", m.GetDevice(), err)
			}
			fsType, err := probe(ctx, env, m.GetDevice())
			if err != nil {
				return nil, "", "", err
			}
			switch {
			case fsType == m.GetFstype():
			case fsType != "":
				return nil, "", "", fmt.Errorf("%w: %s holds %s, not %s: refusing to mount it as %s or to mkfs over it", ErrNotBlank, m.GetDevice(), fsType, m.GetFstype(), m.GetFstype())
			case !m.GetMkfs():
				return nil, "", "", fmt.Errorf("%w: %s has no filesystem; set mkfs: true to make %s on it when it is blank", ErrNoFilesystem, m.GetDevice(), m.GetFstype())
			default:
				if err := checkBlank(ctx, env, m.GetDevice()); err != nil {
					return nil, "", "", err
				}
				pl.mkfs = true
				what = append(what, fmt.Sprintf("mkfs.%s %s (blank)", m.GetFstype(), m.GetDevice()))
			}
		}
		what = append(what, fmt.Sprintf("mount %s on %s", m.GetDevice(), m.GetPath()))
	} else if want := strings.Join(m.GetOptions(), ","); want != "" && !optionsHeld(cur.options, m.GetOptions()) {
		what = append(what, fmt.Sprintf("mounted with %s: options %s take effect at the next mount", cur.options, want))
	}
	line := Entry(m)
	i, has := tab.hive[m.GetPath()]
	if !has || tab.lines[i] != line {
		pl.entry = true
		old := ""
		if has {
			old = tab.lines[i]
			diff += "-" + old + "\n"
		}
		diff += "+" + line + "\n"
		what = append(what, "fstab entry")
	}
	if !pl.mkfs && !pl.mount && !pl.entry {
		return nil, strings.Join(what, ", "), "", nil
	}
	return pl, strings.Join(what, ", "), diff, nil
}

// sameSource reports whether a mounted source is the device (tmpfs and
// tag devices are compared loosely: the kernel shows tmpfs as "tmpfs"
// and resolves UUID=…).
func sameSource(src, dev string) bool {
	if !site.MountDeviceIsPath(dev) {
		return true
	}
	if src == dev {
		return true
	}
	a, err1 := filepath.EvalSymlinks(src)
	b, err2 := filepath.EvalSymlinks(dev)
	return err1 == nil && err2 == nil && a == b
}

// optionsHeld reports whether the simple flag options wanted show in the
// mount's options (others, e.g. size=, are not compared).
func optionsHeld(have string, want []string) bool {
	h := map[string]bool{}
	for _, o := range strings.Split(have, ",") {
		h[o] = true
	}
	for _, o := range want {
		if o == "defaults" || strings.Contains(o, "=") {
			continue
		}
		if !h[o] {
			return false
		}
	}
	return true
}

// Apply implements converge.Provider: per mount, mkfs (re-checked blank),
// mount, then the fstab entry; fstab is written once at the end.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	fp, err := env.Path(Fstab)
	if err != nil {
		return err
	}
	tab, err := readFstab(fp)
	if err != nil {
		return err
	}
	dirty := false
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		var entryFor string
		var entry string
		switch d := ch.Data.(type) {
		case *plan:
			if ch.Err = p.apply(ctx, env, d); ch.Err != nil {
				continue
			}
			if !d.entry {
				continue
			}
			entryFor, entry = d.m.GetPath(), Entry(d.m)
		case *prune:
			if ch.Err = p.unmount(ctx, env, d.path); ch.Err != nil {
				continue
			}
			entryFor = d.path
		default:
			ch.Err = errors.New("mount: change without a plan")
			continue
		}
		tab.set(entryFor, entry)
		dirty = true
	}
	if !dirty {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(fp, tab.bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", Fstab, err)
	}
	return nil
}

func (p *Provider) apply(ctx context.Context, env *converge.Env, pl *plan) error {
	m := pl.m
	if pl.mkfs {
		if err := checkBlank(ctx, env, m.GetDevice()); err != nil {
			return err
		}
		args := append(append([]string(nil), m.GetMkfsArgs()...), m.GetDevice())
		if m.GetFstype() == "ext4" || m.GetFstype() == "ext3" || m.GetFstype() == "ext2" {
			args = append([]string{"-q"}, args...)
		}
		if _, err := env.Runner.Run(ctx, converge.Cmd{Name: "mkfs." + m.GetFstype(), Args: args}); err != nil {
			return fmt.Errorf("make %s on %s: %w", m.GetFstype(), m.GetDevice(), err)
		}
	}
	if !pl.mount {
		return nil
	}
	pt, err := env.Path(m.GetPath())
	if err != nil {
		return err
	}
	created := false
	if _, err := os.Stat(pt); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(pt, 0o755); err != nil {
			return fmt.Errorf("create mount point %s: %w", m.GetPath(), err)
		}
		created = true
	}
	opts := "defaults"
	if len(m.GetOptions()) > 0 {
		opts = strings.Join(m.GetOptions(), ",")
	}
	if _, err := env.Runner.Run(ctx, converge.Cmd{Name: "mount", Args: []string{"-t", m.GetFstype(), "-o", opts, "--", m.GetDevice(), pt}}); err != nil {
		if created {
			_ = os.Remove(pt)
		}
		return fmt.Errorf("mount %s on %s: %w", m.GetDevice(), m.GetPath(), err)
	}
	return nil
}

func (p *Provider) unmount(ctx context.Context, env *converge.Env, path string) error {
	pt, err := env.Path(path)
	if err != nil {
		return err
	}
	table, err := p.mountTable()
	if err != nil {
		return err
	}
	if _, ok := table[pt]; !ok {
		return nil
	}
	if _, err := env.Runner.Run(ctx, converge.Cmd{Name: "umount", Args: []string{"--", pt}}); err != nil {
		return fmt.Errorf("unmount %s (its fstab entry is kept): %w", path, err)
	}
	return nil
}

type prune struct{ path string }

// Prune implements converge.Pruner: hive's fstab entries for mount points
// no resource holds are unmounted and removed.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fp, err := env.Path(Fstab)
	if err != nil {
		return nil, err
	}
	tab, err := readFstab(fp)
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, it := range present {
		keep[it.Resource.GetMount().GetPath()] = true
	}
	var paths []string
	for pt := range tab.hive {
		if !keep[pt] {
			paths = append(paths, pt)
		}
	}
	sort.Strings(paths)
	var out []*converge.Change
	for _, pt := range paths {
		out = append(out, &converge.Change{Key: Kind + ":" + pt, Needed: true, Data: &prune{path: pt},
			Summary: "no longer managed: unmount " + pt + " and remove its fstab entry (the filesystem is kept)",
			Diff:    "-" + tab.lines[tab.hive[pt]] + "\n"})
	}
	return out, nil
}
