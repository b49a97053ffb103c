// Package sysbase is the converge provider of three one-per-node kinds
// of the host baseline: "hostname", "timezone" and "locale".
//
//   - hostname: /etc/hostname holds the name (the resource's, or the
//     node's own when empty); on the host itself (Env.Root "/") the
//     kernel's name is set too, with hostname(1).
//   - timezone: /etc/localtime is a symbolic link to
//     /usr/share/zoneinfo/ZONE (replaced atomically: a link made beside it
//     and renamed over it), and on the Debian family /etc/timezone holds
//     ZONE. A zone the root's zoneinfo does not have is an error (install
//     tzdata: the provider makes timezone:system require package:tzdata
//     when the node declares it).
//   - locale: /etc/default/locale (Debian) or /etc/locale.conf (RHEL) holds
//     LANG and the other variables given, nothing else. Locales are not
//     generated (locale-gen): that is the locales package's job.
//
// Files are written through the file provider (atomic, confined to the
// root, 0644 root:root), so plans carry their unified diff. None of these
// kinds is pruned: a machine always has a name, a zone and a locale, and
// taking the resource away leaves them as they are.
//
// The engine calls one method at a time; everything blocks on disk I/O or
// hostname(1).
package sysbase

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/file"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Kinds.
const (
	KindHostname = "hostname"
	KindTimezone = "timezone"
	KindLocale   = "locale"
)

// ZoneInfo is where time zone files live.
const ZoneInfo = "/usr/share/zoneinfo"

// plan is what Apply does for one resource.
type plan struct {
	files []*converge.Change
	// link: make /etc/localtime point to target.
	link string
	// hostname: set the kernel's host name.
	hostname string
}

// base holds what the three providers share.
type base struct {
	kind  string
	files *file.Provider
	// want returns the files to write and the extra actions, with summaries.
	want func(env *converge.Env, r *hivev1.Resource) ([]*hivev1.File, *plan, []string, error)
}

// Hostname returns the hostname provider.
func Hostname() converge.Provider {
	return &hostnameP{base{kind: KindHostname, files: file.New(), want: wantHostname}}
}

// Timezone returns the timezone provider.
func Timezone() converge.Provider {
	return &timezoneP{base{kind: KindTimezone, files: file.New(), want: wantTimezone}}
}

// Locale returns the locale provider.
func Locale() converge.Provider {
	return &localeP{base{kind: KindLocale, files: file.New(), want: wantLocale}}
}

type hostnameP struct{ base }
type timezoneP struct{ base }
type localeP struct{ base }

var (
	_ converge.Validator = (*hostnameP)(nil)
	_ converge.Validator = (*timezoneP)(nil)
	_ converge.Validator = (*localeP)(nil)
	_ converge.Linker    = (*timezoneP)(nil)
)

// Kind implements converge.Provider.
func (b *base) Kind() string { return b.kind }

func invalid(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
}

// Validate implements converge.Validator.
func (*hostnameP) Validate(r *hivev1.Resource) error {
	if r.GetHostname() == nil {
		return invalid(errors.New("not a hostname resource"))
	}
	if n := r.GetHostname().GetName(); n != "" {
		return invalid(site.CheckHostName(n, 64))
	}
	return nil
}

// Validate implements converge.Validator.
func (*timezoneP) Validate(r *hivev1.Resource) error {
	if r.GetTimezone() == nil {
		return invalid(errors.New("not a timezone resource"))
	}
	return invalid(site.CheckTimezone(r.GetTimezone().GetName()))
}

// Requires implements converge.Linker: zone files come with tzdata.
func (*timezoneP) Requires(*hivev1.Resource, []*hivev1.Resource) []string {
	return []string{converge.KindPackage + ":tzdata"}
}

// Validate implements converge.Validator.
func (*localeP) Validate(r *hivev1.Resource) error {
	l := r.GetLocale()
	if l == nil {
		return invalid(errors.New("not a locale resource"))
	}
	if err := site.CheckLocale("LANG", l.GetLang()); err != nil {
		return invalid(err)
	}
	for k, v := range l.GetVariables() {
		if err := site.CheckLocale(k, v); err != nil {
			return invalid(err)
		}
	}
	return nil
}

func textFile(p, content string) *hivev1.File {
	return &hivev1.File{Path: p, Content: content, Mode: 0o644, Owner: "root", Group: "root", State: hivev1.FileState_FILE_STATE_FILE}
}

func wantHostname(env *converge.Env, r *hivev1.Resource) ([]*hivev1.File, *plan, []string, error) {
	name := r.GetHostname().GetName()
	if name == "" {
		name = env.Facts.GetName()
		if name == "" {
			return nil, nil, nil, errors.New("no host name given and the node's name is unknown")
		}
		if err := site.CheckHostName(name, 64); err != nil {
			return nil, nil, nil, fmt.Errorf("the node's name cannot be the host name: %w; give hostname: NAME", err)
		}
	}
	pl := &plan{}
	var sums []string
	if env.HostRoot() {
		cur, err := os.Hostname()
		if err != nil {
			return nil, nil, nil, err
		}
		if cur != name {
			pl.hostname = name
			sums = append(sums, fmt.Sprintf("host name %s → %s", cur, name))
		}
	}
	return []*hivev1.File{textFile("/etc/hostname", name+"\n")}, pl, sums, nil
}

// localtime returns the host path of /etc/localtime itself (the link, not
// what it points to).
func localtime(env *converge.Env) (string, error) {
	etc, err := env.Path("/etc")
	if err != nil {
		return "", err
	}
	return filepath.Join(etc, "localtime"), nil
}

func wantTimezone(env *converge.Env, r *hivev1.Resource) ([]*hivev1.File, *plan, []string, error) {
	zone := r.GetTimezone().GetName()
	target := path.Join(ZoneInfo, zone)
	zp, err := env.Path(target)
	if err != nil {
		return nil, nil, nil, err
	}
	if fi, err := os.Stat(zp); err != nil || !fi.Mode().IsRegular() {
		return nil, nil, nil, fmt.Errorf("unknown time zone %q: no %s in the root (is tzdata installed?)", zone, target)
	}
	lt, err := localtime(env)
	if err != nil {
		return nil, nil, nil, err
	}
	pl := &plan{}
	var sums []string
	if cur, err := os.Readlink(lt); err != nil || cur != target {
		pl.link = target
		was := cur
		if err != nil {
			was = "(not a link)"
			if errors.Is(err, fs.ErrNotExist) {
				was = "(none)"
			}
		}
		sums = append(sums, fmt.Sprintf("/etc/localtime → %s (was %s)", target, was))
	}
	var files []*hivev1.File
	if env.Family == converge.FamilyDebian {
		files = append(files, textFile("/etc/timezone", zone+"\n"))
	}
	return files, pl, sums, nil
}

// LocalePath returns the locale file of a family.
func LocalePath(f converge.Family) (string, error) {
	switch f {
	case converge.FamilyDebian:
		return "/etc/default/locale", nil
	case converge.FamilyRHEL:
		return "/etc/locale.conf", nil
	}
	return "", fmt.Errorf("locale: unknown os family %q", f)
}

func wantLocale(env *converge.Env, r *hivev1.Resource) ([]*hivev1.File, *plan, []string, error) {
	l := r.GetLocale()
	p, err := LocalePath(env.Family)
	if err != nil {
		return nil, nil, nil, err
	}
	var b strings.Builder
	b.WriteString("# Managed by hive (locale:system); local changes are overwritten.\n")
	fmt.Fprintf(&b, "LANG=%s\n", l.GetLang())
	keys := make([]string, 0, len(l.GetVariables()))
	for k := range l.GetVariables() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, l.GetVariables()[k])
	}
	return []*hivev1.File{textFile(p, b.String())}, &plan{}, nil, nil
}

// Plan implements converge.Provider.
func (b *base) Plan(ctx context.Context, env *converge.Env, batch *converge.Batch) ([]*converge.Change, error) {
	out := make([]*converge.Change, 0, len(batch.Items))
	for _, it := range batch.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := &converge.Change{Key: it.Key, Resource: it.Resource}
		out = append(out, c)
		files, pl, sums, err := b.want(env, it.Resource)
		if err != nil {
			c.Err = err
			continue
		}
		var diffs []string
		if len(files) > 0 {
			fb := &converge.Batch{Changed: map[string]bool{}}
			for _, f := range files {
				r := &hivev1.Resource{Key: converge.KindFile + ":" + f.GetPath(), Kind: &hivev1.Resource_File{File: f}}
				fb.Items = append(fb.Items, converge.Item{Key: r.Key, Resource: r})
			}
			fchs, err := b.files.Plan(ctx, env, fb)
			if err != nil {
				return nil, err
			}
			for i, fc := range fchs {
				fc.Key, fc.Resource = fb.Items[i].Key, fb.Items[i].Resource
				if fc.Err != nil {
					c.Err = fmt.Errorf("%s: %w", files[i].GetPath(), fc.Err)
					break
				}
				if fc.Needed {
					pl.files = append(pl.files, fc)
					sums = append(sums, files[i].GetPath()+": "+fc.Summary)
					diffs = append(diffs, fc.Diff)
				}
			}
		}
		if c.Err == nil && len(sums) > 0 {
			c.Needed, c.Data, c.Summary = true, pl, strings.Join(sums, "; ")
			c.Diff = strings.Join(diffs, "")
		}
	}
	return out, nil
}

// Apply implements converge.Provider.
func (b *base) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, c := range changes {
		pl, ok := c.Data.(*plan)
		if !ok {
			c.Err = errors.New(b.kind + ": change without plan data")
			continue
		}
		c.Err = b.apply(ctx, env, pl)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (b *base) apply(ctx context.Context, env *converge.Env, pl *plan) error {
	if len(pl.files) > 0 {
		if err := b.files.Apply(ctx, env, pl.files); err != nil {
			return err
		}
		for _, fc := range pl.files {
			if fc.Err != nil {
				return fmt.Errorf("%s: %w", converge.NameOf(fc.Key), fc.Err)
			}
		}
	}
	if pl.link != "" {
		lt, err := localtime(env)
		if err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(lt), ".localtime.hive-new")
		_ = os.Remove(tmp)
		if err := os.Symlink(pl.link, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, lt); err != nil {
			_ = os.Remove(tmp)
			return err
		}
	}
	if pl.hostname != "" {
		if _, err := env.Runner.Run(ctx, converge.Cmd{Name: "hostname", Args: []string{pl.hostname}}); err != nil {
			return err
		}
	}
	return nil
}
