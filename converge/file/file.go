// Package file is the converge provider for "file:" resources: regular
// files (literal content or a Go text/template rendered with the node's
// facts and the `secret "name"` function), directories and absent paths,
// with mode, owner and group. Templates are rendered with
// site.RenderTemplate, the same language the site parser checks.
//
// Invariants:
//   - Every path is confined to Env.Root: the parent directory is resolved
//     with converge.SecureJoin (symlinks followed as in a chroot; ".." and
//     escaping links rejected); a symlink at the final component is
//     replaced, never followed.
//   - Files are replaced atomically with internal/atomicfile (temporary
//     file ".<name>.hive-tmp-<n>" in the same directory, chown, chmod,
//     fsync, rename, directory fsync). A failed write removes its
//     temporary file; one left by a crash is removed by the agent at start.
//   - No secret value, current or past, appears in a Change's summary or
//     diff. A file is "secret-rendering" when it is a template that lists
//     secrets or mentions "secret" at all. Such a file gets no line diff,
//     no hashes and no sizes: only that its content changes. Its host path
//     is recorded in a ledger (Config.Ledger) before it is written, and a
//     path in the ledger gets no line diff either, whatever its resource
//     now says, because its old content may hold a value the node no
//     longer knows (the one before a rotation). A path leaves the ledger
//     when hive has replaced its content by secret-free content or removed
//     it. Other diffs are masked with Env.Mask as a second line.
//   - Owner and group names are resolved in <root>/etc/passwd and
//     <root>/etc/group, not the host's.
//
// The provider is called by the engine from one goroutine at a time; Plan
// only reads the filesystem. A directory in state "absent" is removed with
// everything below it.
package file

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Config configures a Provider.
type Config struct {
	// Ledger is the file recording the paths hive rendered secrets into
	// (see the package comment), in a directory only the agent reads
	// (mode 0600). Empty: kept in memory, for the provider's lifetime.
	Ledger string
}

// Provider manages file resources. The zero value is ready to use (with
// an in-memory ledger).
type Provider struct {
	ledger ledger
}

// New returns a file provider with an in-memory ledger.
func New() *Provider { return &Provider{} }

// NewWithConfig returns a file provider configured by cfg.
func NewWithConfig(cfg Config) *Provider { return &Provider{ledger: ledger{file: cfg.Ledger}} }

// Kind implements converge.Provider.
func (*Provider) Kind() string { return converge.KindFile }

// Default modes.
const (
	DefaultFileMode = 0o644
	DefaultDirMode  = 0o755
)

// maxDiff is the size above which no line diff is computed.
const maxDiff = 256 << 10

// Validate implements converge.Validator.
func (*Provider) Validate(r *hivev1.Resource) error {
	f := r.GetFile()
	if f == nil {
		return fmt.Errorf("%w: not a file resource", converge.ErrInvalid)
	}
	p := f.GetPath()
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("%w: path %q must be absolute and clean", converge.ErrInvalid, p)
	}
	if strings.Contains(p, "/../") || strings.HasSuffix(p, "/..") {
		return fmt.Errorf("%w: path %q contains \"..\"", converge.ErrInvalid, p)
	}
	if f.GetMode() > 0o7777 {
		return fmt.Errorf("%w: mode %#o out of range", converge.ErrInvalid, f.GetMode())
	}
	// Templates are parsed and checked by package site when the site is
	// pushed; rendering errors fail the resource at Plan.
	return nil
}

type action int

const (
	actNone action = iota
	actWrite
	actMkdir
	actAttrs // chmod/chown only
	actRemove
)

type op struct {
	act        action
	target     string // host path
	content    []byte
	mode       os.FileMode
	uid, gid   int // -1: leave
	chmod      bool
	chown      bool
	removeTree bool
	secret     bool // content renders secrets
	// Dry run only: an owner or group the run plans to create (see
	// pendingAccount); its id is not known yet.
	pendingUser, pendingGroup string
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	ids := &converge.IDs{Root: env.Root}
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := &converge.Change{}
		if err := p.plan(ctx, env, ids, b, it.Resource.GetFile(), c); err != nil {
			c.Err = err
		}
		out = append(out, c)
	}
	return out, nil
}

func (p *Provider) plan(ctx context.Context, env *converge.Env, ids *converge.IDs, b *converge.Batch, f *hivev1.File, c *converge.Change) error {
	target, err := hostPath(env, f.GetPath())
	if err != nil {
		return err
	}
	o := &op{target: target, uid: -1, gid: -1}
	c.Data = o
	fi, err := os.Lstat(target)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat: %w", err)
	}
	state := f.GetState()
	if state == hivev1.FileState_FILE_STATE_ABSENT {
		if exists {
			o.act = actRemove
			o.removeTree = fi.IsDir()
			c.Needed = true
			if fi.IsDir() {
				c.Summary = "remove directory " + f.GetPath() + " and its contents"
			} else {
				c.Summary = "remove " + f.GetPath()
			}
			c.Diff = "-" + f.GetPath() + "\n"
		}
		return nil
	}
	dir := state == hivev1.FileState_FILE_STATE_DIRECTORY
	o.mode = os.FileMode(f.GetMode())
	if o.mode == 0 {
		o.mode = DefaultFileMode
		if dir {
			o.mode = DefaultDirMode
		}
	}
	if f.GetOwner() != "" {
		if o.uid, err = ids.Lookup("passwd", f.GetOwner()); err != nil {
			if !pendingAccount(env, b, "passwd", f.GetOwner(), err) {
				return err
			}
			o.uid, o.pendingUser = -1, f.GetOwner()
		}
	}
	if f.GetGroup() != "" {
		if o.gid, err = ids.Lookup("group", f.GetGroup()); err != nil {
			if !pendingAccount(env, b, "group", f.GetGroup(), err) {
				return err
			}
			o.gid, o.pendingGroup = -1, f.GetGroup()
		}
	}
	var attrs []string
	checkAttrs := func(fi fs.FileInfo) {
		if fi.Mode().Perm()|fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != toFileMode(o.mode) {
			o.chmod = true
			attrs = append(attrs, fmt.Sprintf("mode %#o → %#o", unixPerm(fi.Mode()), o.mode))
		}
		st := fi.Sys().(*syscall.Stat_t)
		if (o.uid >= 0 && int(st.Uid) != o.uid) || (o.gid >= 0 && int(st.Gid) != o.gid) || o.pendingUser != "" || o.pendingGroup != "" {
			o.chown = true
			attrs = append(attrs, fmt.Sprintf("owner %d:%d → %s", st.Uid, st.Gid, ownerString(o)))
		}
	}
	if dir {
		switch {
		case !exists:
			o.act = actMkdir
			c.Needed = true
			c.Summary = fmt.Sprintf("create directory, mode %#o%s", o.mode, ownerSuffix(o))
			c.Diff = "+" + f.GetPath() + "/\n"
		case !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory (%s)", f.GetPath(), typeName(fi))
		default:
			checkAttrs(fi)
			if len(attrs) > 0 {
				o.act = actAttrs
				c.Needed = true
				c.Summary = strings.Join(attrs, ", ")
			}
		}
		return nil
	}
	o.secret = rendersSecrets(f)
	if o.secret {
		// Before anything is written: a crash must not leave a rendered
		// secret outside the ledger.
		if err := p.ledger.set(target, true); err != nil {
			return err
		}
	}
	content := []byte(f.GetContent())
	if f.GetTemplate() {
		// Bounded by site.DefaultTemplateLimits, and abandoned when the
		// run's context ends.
		r, err := site.RenderTemplate(ctx, f.GetContent(), env.Facts, env.Secrets, site.TemplateLimits{})
		if err != nil {
			return err
		}
		content = []byte(r)
	}
	o.content = content
	if exists && fi.IsDir() {
		return fmt.Errorf("%s is a directory, want a file", f.GetPath())
	}
	if !exists || !fi.Mode().IsRegular() {
		o.act = actWrite
		c.Needed = true
		what := "create"
		if exists {
			what = "replace " + typeName(fi) + " with file"
		}
		if o.secret {
			c.Summary = fmt.Sprintf("%s, mode %#o%s (renders secrets: content not shown)", what, o.mode, ownerSuffix(o))
			c.Diff = hiddenRenders
			return nil
		}
		c.Summary = fmt.Sprintf("%s, %d bytes, mode %#o%s", what, len(content), o.mode, ownerSuffix(o))
		c.Diff = diff(env, f, nil, content, !exists)
		return nil
	}
	cur, err := os.ReadFile(target)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	checkAttrs(fi)
	tainted, err := p.ledger.has(target)
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, content) {
		o.act = actWrite
		o.chmod, o.chown = true, true
		c.Needed = true
		switch {
		case o.secret:
			c.Summary = "update content (renders secrets: content not shown)"
			c.Diff = hiddenRenders
		case tainted:
			c.Summary = fmt.Sprintf("update content, → %d bytes (previous content rendered secrets: not shown)", len(content))
			c.Diff = hiddenPrevious
		default:
			c.Summary = fmt.Sprintf("update content, %d → %d bytes", len(cur), len(content))
			c.Diff = diff(env, f, cur, content, false)
		}
		if len(attrs) > 0 {
			c.Summary += ", " + strings.Join(attrs, ", ")
		}
		return nil
	}
	if tainted && !o.secret {
		// The file already holds the secret-free content.
		if err := p.ledger.set(target, false); err != nil {
			return err
		}
	}
	if len(attrs) > 0 {
		o.act = actAttrs
		c.Needed = true
		c.Summary = strings.Join(attrs, ", ")
	}
	return nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, c := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		o, ok := c.Data.(*op)
		if !ok {
			c.Err = errors.New("file: change without plan data")
			continue
		}
		if err := apply(o); err != nil {
			c.Err = err
			continue
		}
		// Replaced by secret-free content, or gone: nothing to hide.
		if (o.act == actWrite && !o.secret) || o.act == actRemove {
			if err := p.ledger.set(o.target, false); err != nil {
				c.Err = err
			}
		}
	}
	return nil
}

func apply(o *op) error {
	switch o.act {
	case actNone:
		return nil
	case actRemove:
		if o.removeTree {
			if err := os.RemoveAll(o.target); err != nil {
				return fmt.Errorf("remove: %w", err)
			}
		} else if err := os.Remove(o.target); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove: %w", err)
		}
		return syncDir(filepath.Dir(o.target))
	case actMkdir:
		if err := os.MkdirAll(filepath.Dir(o.target), DefaultDirMode); err != nil {
			return fmt.Errorf("create parents: %w", err)
		}
		if err := os.Mkdir(o.target, 0o700); err != nil {
			// Created meanwhile (e.g. by another change of the batch):
			// fine if it is a directory; the attributes are set below.
			if fi, serr := os.Lstat(o.target); serr != nil || !fi.IsDir() {
				return fmt.Errorf("mkdir: %w", err)
			}
		}
		if err := setAttrs(o.target, o, true, true); err != nil {
			return err
		}
		return syncDir(filepath.Dir(o.target))
	case actAttrs:
		return setAttrs(o.target, o, o.chmod, o.chown)
	case actWrite:
		return writeAtomic(o)
	}
	return fmt.Errorf("file: unknown action %d", o.act)
}

func writeAtomic(o *op) error {
	// Fields not managed keep the replaced file's owner.
	uid, gid := o.uid, o.gid
	if fi, serr := os.Lstat(o.target); serr == nil && fi.Mode().IsRegular() {
		st := fi.Sys().(*syscall.Stat_t)
		if uid < 0 {
			uid = int(st.Uid)
		}
		if gid < 0 {
			gid = int(st.Gid)
		}
	}
	return atomicfile.Write(o.target, o.content, atomicfile.Options{
		Perm:      toFileMode(o.mode),
		MkdirPerm: DefaultDirMode,
		Prepare: func(f *os.File) error {
			if uid >= 0 || gid >= 0 {
				if err := f.Chown(uid, gid); err != nil {
					return fmt.Errorf("chown: %w", err)
				}
			}
			return nil
		},
	})
}

func setAttrs(p string, o *op, chmod, chown bool) error {
	if chown && (o.uid >= 0 || o.gid >= 0) {
		if err := os.Lchown(p, o.uid, o.gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if chmod {
		if err := os.Chmod(p, toFileMode(o.mode)); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return nil
}

func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// hostPath resolves the parent of p inside the root and joins the last
// element, so a symlink at p itself is replaced, not followed.
func hostPath(env *converge.Env, p string) (string, error) {
	parent, err := env.Path(path.Dir(p))
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, path.Base(p)), nil
}

func toFileMode(m os.FileMode) os.FileMode {
	fm := m & 0o777
	if m&0o4000 != 0 {
		fm |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		fm |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

func unixPerm(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func typeName(fi fs.FileInfo) string {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m.IsRegular():
		return "file"
	default:
		return "special file"
	}
}

func ownerString(o *op) string {
	u, g := "-", "-"
	switch {
	case o.uid >= 0:
		u = fmt.Sprint(o.uid)
	case o.pendingUser != "":
		u = o.pendingUser + " (created in this run)"
	}
	switch {
	case o.gid >= 0:
		g = fmt.Sprint(o.gid)
	case o.pendingGroup != "":
		g = o.pendingGroup + " (created in this run)"
	}
	return u + ":" + g
}

func ownerSuffix(o *op) string {
	if o.uid < 0 && o.gid < 0 && o.pendingUser == "" && o.pendingGroup == "" {
		return ""
	}
	return ", owner " + ownerString(o)
}

// Diffs of files whose content may hold secrets.
const (
	hiddenRenders  = "(content renders secrets: not shown)\n"
	hiddenPrevious = "(previous content rendered secrets: not shown)\n"
)

// rendersSecrets reports whether f's content may carry a secret value: a
// template that lists secrets or calls (or merely mentions) "secret".
func rendersSecrets(f *hivev1.File) bool {
	return f.GetTemplate() && (len(f.GetSecrets()) > 0 || strings.Contains(f.GetContent(), "secret"))
}

// diff returns a unified diff of old and new content, masked. It is only
// called for content hive can vouch holds no secret (see the package
// comment); masking is a second line of defence.
func diff(env *converge.Env, f *hivev1.File, old, new []byte, created bool) string {
	name := f.GetPath()
	if isBinary(old) || isBinary(new) || len(old) > maxDiff || len(new) > maxDiff {
		return fmt.Sprintf("binary or large content: %d bytes sha256:%x → %d bytes sha256:%x\n",
			len(old), sha256.Sum256(old), len(new), sha256.Sum256(new))
	}
	a, b := env.Mask(string(old)), env.Mask(string(new))
	if a == b {
		return "(content differs only in secret values, masked)\n"
	}
	from := name
	if created {
		from = "/dev/null"
	}
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: splitLines(a), B: splitLines(b),
		FromFile: from, ToFile: name, Context: 3,
	})
	if err != nil {
		return "(diff failed: " + err.Error() + ")\n"
	}
	return d
}

func isBinary(b []byte) bool {
	return bytes.IndexByte(b, 0) >= 0 || !utf8.Valid(b)
}

// splitLines splits s after each newline; a last line without one gets one
// (so it diffs like the others).
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	l := strings.SplitAfter(s, "\n")
	if l[len(l)-1] == "" {
		return l[:len(l)-1]
	}
	l[len(l)-1] += "\n"
	return l
}
