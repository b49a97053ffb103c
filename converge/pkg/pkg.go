// Package pkg is the converge provider for "package:" resources: system
// packages present, absent, pinned to a version or held (hold.go), through
// apt/dpkg on the Debian family and dnf/rpm on the RHEL family.
//
// Observation reads the package database, never human output: the dpkg
// status file (<root>/var/lib/dpkg/status) on Debian, `rpm --root <root> -qa
// --queryformat` on RHEL. Plan only reads; Apply
//
//  1. waits for the package manager's lock (fcntl lock on dpkg's
//     lock-frontend/lock or rpm's .rpm.lock) up to Config.LockTimeout and
//     fails every change with ErrLocked and the holder's pid otherwise;
//  2. refreshes the metadata (apt-get update / dnf makecache) only when a
//     repo resource changed earlier in the run or a wanted package (or
//     pinned version) is unknown to the cached metadata;
//  3. fails, one by one, wanted packages that no repository offers
//     (ErrNotFound), without touching the others;
//  4. installs and removes the rest in one transaction: one `apt-get
//     install` (removals as "name-"), or one dnf transaction (`dnf
//     install`, `dnf remove`, or `dnf shell` with both);
//  5. reads the database again and fails any change that did not take.
//
// Under a root other than "/" the Debian tools run inside it with chroot
// (so the root's own apt configuration, dpkg database and maintainer
// scripts are used, as on the real machine), and dnf with --installroot.
//
// The provider is called from one goroutine at a time. Plan and Apply
// block on external commands; they honour ctx through the Runner.
package pkg

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Errors carried by failed changes.
var (
	// ErrLocked is returned when the package database stays locked by
	// another process for longer than Config.LockTimeout.
	ErrLocked = errors.New("package database locked")
	// ErrNotFound is returned for a wanted package (or pinned version)
	// that no configured repository offers, after a metadata refresh.
	ErrNotFound = errors.New("package not found in any repository")
	// ErrUnknownFamily is returned when the OS family is neither forced
	// nor detectable.
	ErrUnknownFamily = errors.New("unknown os family")
)

// Config configures the provider.
type Config struct {
	// Family forces the OS family; empty uses Env.Family (detected from
	// /etc/os-release by the engine).
	Family converge.Family
	// LockTimeout is how long to wait for the package manager's lock.
	LockTimeout time.Duration
	// AptArgs are extra arguments for apt-get and apt-cache (e.g. "-o",
	// "Acquire::Retries=0").
	AptArgs []string
	// DnfArgs are extra arguments for every dnf call (e.g. "-c", conf,
	// "--releasever=1", "--noplugins").
	DnfArgs []string
	// PollInterval is how often a held lock is checked again.
	PollInterval time.Duration
}

// DefaultConfig returns the defaults: wait 5 minutes for locks.
func DefaultConfig() Config {
	return Config{LockTimeout: 5 * time.Minute, PollInterval: 500 * time.Millisecond}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.LockTimeout < 0 {
		return errors.New("pkg: negative lock timeout")
	}
	switch c.Family {
	case converge.FamilyUnknown, converge.FamilyDebian, converge.FamilyRHEL:
	default:
		return fmt.Errorf("pkg: family %q: %w", c.Family, ErrUnknownFamily)
	}
	return nil
}

// Provider manages packages.
type Provider struct {
	cfg Config
}

// New returns a provider.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	return &Provider{cfg: cfg}, nil
}

// Kind implements converge.Provider.
func (*Provider) Kind() string { return converge.KindPackage }

// Validate implements converge.Validator.
func (*Provider) Validate(r *hivev1.Resource) error {
	p := r.GetPackage()
	if p == nil {
		return fmt.Errorf("%w: not a package resource", converge.ErrInvalid)
	}
	// The rules hivectl validate applies, so that it refuses first.
	if err := site.CheckPackageName(p.GetName()); err != nil {
		return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
	}
	if err := site.CheckPackageVersion(p.GetVersion()); err != nil {
		return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
	}
	if p.GetState() == hivev1.PackageState_PACKAGE_STATE_ABSENT && p.GetVersion() != "" {
		return fmt.Errorf("%w: an absent package cannot pin a version", converge.ErrInvalid)
	}
	if p.GetState() == hivev1.PackageState_PACKAGE_STATE_ABSENT && p.GetHold() {
		return fmt.Errorf("%w: an absent package cannot be held", converge.ErrInvalid)
	}
	return nil
}

// installed is one installed package.
type installed struct {
	Version string // [epoch:]version[-release]
	Arch    string
}

// backend is one family's tool set.
type backend interface {
	debian() bool
	installed(ctx context.Context) (map[string]installed, error)
	lockFiles(ctx context.Context) ([]string, error)
	// available returns, for each name, the versions the cached metadata
	// offers (empty when unknown).
	available(ctx context.Context, names []string) (map[string][]string, error)
	refresh(ctx context.Context) error
	transact(ctx context.Context, install []want, remove []string) error
}

type want struct {
	name, version string
	// exact is the repository's full version matching version, resolved
	// in Apply.
	exact string
}

func (w want) String() string {
	if w.version == "" {
		return w.name
	}
	return w.name + "=" + w.version
}

type plan struct {
	install *want
	remove  bool
	// repoChanged: a repo resource changed earlier in the run.
	repoChanged bool
	// hold is the hold action (hold.go).
	hold int
}

func (p *Provider) backend(env *converge.Env) (backend, error) {
	fam := p.cfg.Family
	if fam == converge.FamilyUnknown {
		fam = env.Family
	}
	switch fam {
	case converge.FamilyDebian:
		return &apt{env: env, args: p.cfg.AptArgs, lockTimeout: p.cfg.LockTimeout}, nil
	case converge.FamilyRHEL:
		return &dnf{env: env, args: p.cfg.DnfArgs}, nil
	}
	return nil, fmt.Errorf("%w: not forced and not detected from %s/etc/os-release", ErrUnknownFamily, env.Root)
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	be, err := p.backend(env)
	if err != nil {
		return nil, err
	}
	inst, err := be.installed(ctx)
	if err != nil {
		return nil, fmt.Errorf("read installed packages: %w", err)
	}
	hs, err := loadHolds(env, be, b.Items)
	if err != nil {
		return nil, err
	}
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		pk := it.Resource.GetPackage()
		c := &converge.Change{}
		cur, have := inst[pk.GetName()]
		switch {
		case pk.GetState() == hivev1.PackageState_PACKAGE_STATE_ABSENT:
			if have {
				c.Needed, c.Data = true, &plan{remove: true}
				c.Summary = "remove " + pk.GetName() + " " + cur.Version
				c.Diff = "-" + pk.GetName() + " " + cur.Version + "\n"
			}
		case !have:
			w := want{name: pk.GetName(), version: pk.GetVersion()}
			c.Needed, c.Data = true, &plan{install: &w}
			c.Summary = "install " + w.String()
			c.Diff = "+" + w.String() + "\n"
		case !Matches(be.debian(), cur.Version, pk.GetVersion()):
			w := want{name: pk.GetName(), version: pk.GetVersion()}
			c.Needed, c.Data = true, &plan{install: &w}
			verb := "upgrade"
			cmp := RPMCompare
			if be.debian() {
				cmp = DebCompare
			}
			if cmp(cur.Version, pk.GetVersion()) > 0 {
				verb = "downgrade"
			}
			c.Summary = fmt.Sprintf("%s %s %s → %s", verb, pk.GetName(), cur.Version, pk.GetVersion())
			c.Diff = fmt.Sprintf("-%s %s\n+%s %s\n", pk.GetName(), cur.Version, pk.GetName(), pk.GetVersion())
		}
		planHold(c, pk, hs)
		if pl, ok := c.Data.(*plan); ok {
			pl.repoChanged = b.ChangedKind(converge.KindRepo)
		}
		out = append(out, c)
	}
	return out, nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	if len(changes) > 0 {
		if _, ok := changes[0].Data.(*holdPrune); ok {
			return p.applyHoldPrune(ctx, env, changes)
		}
	}
	if err := p.transaction(ctx, env, changes); err != nil {
		return err
	}
	be, err := p.backend(env)
	if err != nil {
		return err
	}
	return applyHolds(ctx, env, be, changes)
}

// transaction installs and removes packages (steps 1-5 of the package
// comment).
func (p *Provider) transaction(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	be, err := p.backend(env)
	if err != nil {
		return err
	}
	if err := p.waitLocks(ctx, env, be); err != nil {
		return err
	}
	var installs []*converge.Change
	var removes []*converge.Change
	for _, c := range changes {
		pl, _ := c.Data.(*plan)
		switch {
		case pl == nil:
			c.Err = errors.New("pkg: change without plan data")
		case pl.install != nil:
			installs = append(installs, c)
		case pl.remove:
			removes = append(removes, c)
		}
	}
	if len(installs) > 0 {
		names := make([]string, 0, len(installs))
		repoChanged := false
		for _, c := range installs {
			names = append(names, c.Data.(*plan).install.name)
			repoChanged = repoChanged || c.Data.(*plan).repoChanged
		}
		avail, err := be.available(ctx, names)
		missing := err != nil || len(unavailable(be, installs, avail)) > 0
		if repoChanged || missing {
			if err := be.refresh(ctx); err != nil {
				return fmt.Errorf("refresh package metadata: %w", err)
			}
			if avail, err = be.available(ctx, names); err != nil {
				return fmt.Errorf("query available packages: %w", err)
			}
		}
		bad := unavailable(be, installs, avail)
		var ok []*converge.Change
		for _, c := range installs {
			if msg, isBad := bad[c.Key]; isBad {
				c.Err = fmt.Errorf("%s: %w%s", c.Data.(*plan).install, ErrNotFound, msg)
				continue
			}
			ok = append(ok, c)
		}
		installs = ok
	}
	var iw []want
	var rn []string
	for _, c := range installs {
		iw = append(iw, *c.Data.(*plan).install)
	}
	for _, c := range removes {
		rn = append(rn, c.Resource.GetPackage().GetName())
	}
	if len(iw) == 0 && len(rn) == 0 {
		return nil
	}
	if err := releaseForTransaction(ctx, env, be, installs); err != nil {
		return err
	}
	terr := be.transact(ctx, iw, rn)
	// Judge every change by the database, also after a failed
	// transaction (dnf's install may have succeeded before its remove
	// failed; dpkg may have configured some packages before an error).
	inst, err := be.installed(ctx)
	if err != nil {
		if terr != nil {
			return terr
		}
		return fmt.Errorf("read installed packages after transaction: %w", err)
	}
	for _, c := range installs {
		w := c.Data.(*plan).install
		cur, have := inst[w.name]
		switch {
		case have && Matches(be.debian(), cur.Version, w.version):
		case terr != nil:
			c.Err = terr
		default:
			c.Err = fmt.Errorf("transaction succeeded but %s is %s", w, describe(cur, have))
		}
	}
	for _, c := range removes {
		cur, have := inst[c.Resource.GetPackage().GetName()]
		switch {
		case !have:
		case terr != nil:
			c.Err = terr
		default:
			c.Err = fmt.Errorf("transaction succeeded but %s is still installed (%s)", c.Resource.GetPackage().GetName(), cur.Version)
		}
	}
	return nil
}

func describe(cur installed, have bool) string {
	if !have {
		return "not installed"
	}
	return "at version " + cur.Version
}

// unavailable returns the install changes whose package (or pinned
// version) the metadata does not offer, with a detail message.
func unavailable(be backend, installs []*converge.Change, avail map[string][]string) map[string]string {
	bad := map[string]string{}
	for _, c := range installs {
		w := c.Data.(*plan).install
		vs := avail[w.name]
		if len(vs) == 0 {
			bad[c.Key] = ""
			continue
		}
		if w.version == "" {
			continue
		}
		exact := ""
		for _, v := range vs {
			if Matches(be.debian(), v, w.version) && (exact == "" || compare(be, v, exact) > 0) {
				exact = v
			}
		}
		if exact != "" {
			w.exact = exact
		} else {
			sort.Strings(vs)
			bad[c.Key] = " (available: " + strings.Join(vs, ", ") + ")"
		}
	}
	return bad
}

func compare(be backend, a, b string) int {
	if be.debian() {
		return DebCompare(a, b)
	}
	return RPMCompare(a, b)
}
