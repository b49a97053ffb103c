package pkg

// Package holds (`hold: true`): the package stays at its installed
// version through upgrades, so that, e.g., a kernel and the DRBD module
// built for it stay paired.
//
//   - Debian: `apt-mark hold|unhold` (inside the root with chroot);
//     observed from the selection in dpkg's status file ("hold ok
//     installed").
//   - RHEL: `dnf versionlock add|delete` (the versionlock plugin, package
//     python3-dnf-plugin-versionlock on RHEL, dnf-plugins-core on
//     Debian); observed from the plugin's lock list
//     /etc/dnf/plugins/versionlock.list.
//
// hive records the holds it made in /var/lib/hive/package-holds (in the
// root) and only ever releases those: `hold: false` (the default) or a
// package leaving the state (Prune) unholds a package hive held, never one
// an operator held by hand (a package already held when hive is asked to
// hold it is left as it is, and stays the operator's). A version change of a package hive holds
// releases the hold for the transaction and puts it back after.

import (
	"bufio"
	"bytes"
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
)

// HoldLedger is the file, in the managed root, listing the packages hive
// holds, one name per line.
const HoldLedger = "/var/lib/hive/package-holds"

// VersionlockList is the dnf versionlock plugin's lock list.
const VersionlockList = "/etc/dnf/plugins/versionlock.list"

// holdState is what Plan saw of holds.
type holdState struct {
	held   map[string]bool // held now (by anyone)
	ledger map[string]bool // held by hive
}

// Hold actions.
const (
	holdNone = iota
	holdSet
	holdRelease
)

func readLedger(env *converge.Env) (map[string]bool, error) {
	p, err := env.Path(HoldLedger)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", HoldLedger, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out[l] = true
		}
	}
	return out, nil
}

func writeLedger(env *converge.Env, names map[string]bool) error {
	p, err := env.Path(HoldLedger)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	l := make([]string, 0, len(names))
	for n := range names {
		l = append(l, n)
	}
	sort.Strings(l)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(p, []byte("# Packages held by hive (package resources with hold: true).\n"+strings.Join(l, "\n")+"\n"), 0o644)
}

// heldPackages returns the packages held now.
func heldPackages(env *converge.Env, debian bool) (map[string]bool, error) {
	out := map[string]bool{}
	if debian {
		p, err := env.Path("/var/lib/dpkg/status")
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		var name string
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				name = ""
			case strings.HasPrefix(line, "Package:"):
				name = strings.TrimSpace(strings.TrimPrefix(line, "Package:"))
			case strings.HasPrefix(line, "Status:"):
				if f := strings.Fields(strings.TrimPrefix(line, "Status:")); len(f) == 3 && f[0] == "hold" && name != "" {
					out[name] = true
				}
			}
		}
		return out, sc.Err()
	}
	p, err := env.Path(VersionlockList)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == '!' {
			continue
		}
		if n := versionlockName(l); n != "" {
			out[n] = true
		}
	}
	return out, nil
}

// versionlockName returns the package name of a lock list entry
// "NAME-EPOCH:VERSION-RELEASE.ARCH" (the arch may be "*").
func versionlockName(entry string) string {
	i := strings.LastIndexByte(entry, '-')
	if i <= 0 {
		return ""
	}
	j := strings.LastIndexByte(entry[:i], '-')
	if j <= 0 {
		return ""
	}
	return entry[:j]
}

// loadHolds reads holds and the ledger when any item holds or the ledger
// is not empty; nil otherwise (nothing to do, nothing read).
func loadHolds(env *converge.Env, be backend, items []converge.Item) (*holdState, error) {
	ledger, err := readLedger(env)
	if err != nil {
		return nil, err
	}
	any := len(ledger) > 0
	for _, it := range items {
		any = any || it.Resource.GetPackage().GetHold()
	}
	if !any {
		return nil, nil
	}
	held, err := heldPackages(env, be.debian())
	if err != nil {
		return nil, fmt.Errorf("read package holds: %w", err)
	}
	return &holdState{held: held, ledger: ledger}, nil
}

// planHold adds the hold action of one package to its change.
func planHold(c *converge.Change, pk *hivev1.Package, hs *holdState) {
	if hs == nil || pk.GetState() == hivev1.PackageState_PACKAGE_STATE_ABSENT {
		return
	}
	n := pk.GetName()
	op := holdNone
	switch {
	case pk.GetHold() && !hs.held[n]:
		op = holdSet
	case !pk.GetHold() && hs.ledger[n]:
		op = holdRelease
	}
	if op == holdNone {
		return
	}
	pl, _ := c.Data.(*plan)
	if pl == nil {
		pl = &plan{}
		c.Data = pl
	}
	pl.hold = op
	c.Needed = true
	what := "hold " + n
	if op == holdRelease {
		what = "release hive's hold on " + n
	}
	if c.Summary == "" {
		c.Summary = what
	} else {
		c.Summary += ", " + what
	}
	c.Diff += "~" + what + "\n"
}

// holdCmd runs the family's hold tool.
func holdCmd(ctx context.Context, env *converge.Env, be backend, hold bool, names []string) error {
	if len(names) == 0 {
		return nil
	}
	switch b := be.(type) {
	case *apt:
		verb := "unhold"
		if hold {
			verb = "hold"
		}
		_, err := b.cmd(ctx, "apt-mark", append([]string{verb}, names...)...)
		return err
	case *dnf:
		verb := "delete"
		if hold {
			verb = "add"
		}
		_, err := b.run(ctx, append([]string{"versionlock", verb}, names...)...)
		return err
	}
	return fmt.Errorf("package holds: unsupported backend %T", be)
}

// releaseForTransaction lifts hive's holds on packages the transaction
// changes (a new pinned version); applyHolds puts them back.
func releaseForTransaction(ctx context.Context, env *converge.Env, be backend, installs []*converge.Change) error {
	ledger, err := readLedger(env)
	if err != nil || len(ledger) == 0 {
		return err
	}
	held, err := heldPackages(env, be.debian())
	if err != nil {
		return err
	}
	var names []string
	for _, c := range installs {
		if n := c.Data.(*plan).install.name; ledger[n] && held[n] {
			names = append(names, n)
		}
	}
	if err := holdCmd(ctx, env, be, false, names); err != nil {
		return fmt.Errorf("release hold for the upgrade: %w", err)
	}
	return nil
}

// applyHolds sets and releases holds after the transaction, judged by the
// holds observed now, and records hive's holds in the ledger.
func applyHolds(ctx context.Context, env *converge.Env, be backend, changes []*converge.Change) error {
	ledger, err := readLedger(env)
	if err != nil {
		return err
	}
	held, err := heldPackages(env, be.debian())
	if err != nil {
		return err
	}
	var hold, release []*converge.Change
	for _, c := range changes {
		pk := c.Resource.GetPackage()
		if c.Err != nil || pk == nil || pk.GetState() == hivev1.PackageState_PACKAGE_STATE_ABSENT {
			continue
		}
		switch {
		case pk.GetHold() && !held[pk.GetName()]:
			hold = append(hold, c)
		case !pk.GetHold() && ledger[pk.GetName()]:
			release = append(release, c)
		}
	}
	run := func(set bool, cs []*converge.Change) {
		var names []string
		for _, c := range cs {
			n := c.Resource.GetPackage().GetName()
			names = append(names, n)
		}
		if set {
			// Recorded first, so a crash between cannot leave a hive hold
			// unrecorded.
			for _, n := range names {
				ledger[n] = true
			}
			if err := writeLedger(env, ledger); err != nil {
				for _, c := range cs {
					c.Err = err
				}
				return
			}
		}
		if err := holdCmd(ctx, env, be, set, names); err != nil {
			for _, c := range cs {
				c.Err = err
			}
			return
		}
		if !set {
			for _, n := range names {
				delete(ledger, n)
			}
		}
	}
	run(true, hold)
	run(false, release)
	if err := writeLedger(env, ledger); err != nil {
		return fmt.Errorf("write %s: %w", HoldLedger, err)
	}
	// Judge by the tool's own record.
	held, err = heldPackages(env, be.debian())
	if err != nil {
		return err
	}
	for _, c := range hold {
		if c.Err == nil && !held[c.Resource.GetPackage().GetName()] {
			c.Err = fmt.Errorf("hold %s did not take", c.Resource.GetPackage().GetName())
		}
	}
	for _, c := range release {
		if c.Err == nil && held[c.Resource.GetPackage().GetName()] {
			c.Err = fmt.Errorf("release of the hold on %s did not take", c.Resource.GetPackage().GetName())
		}
	}
	return nil
}

// holdPrune releases hive's hold on a package that left the state.
type holdPrune struct{ name string }

var _ converge.Pruner = (*Provider)(nil)

// Prune implements converge.Pruner: packages hive holds that no package
// resource holds any more are released.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ledger, err := readLedger(env)
	if err != nil || len(ledger) == 0 {
		return nil, err
	}
	for _, it := range present {
		delete(ledger, it.Resource.GetPackage().GetName()) // Plan handles those
	}
	var out []*converge.Change
	for _, n := range sortedNames(ledger) {
		out = append(out, &converge.Change{Key: converge.KindPackage + ":" + n, Needed: true, Data: &holdPrune{name: n},
			Summary: "no longer managed: release hive's hold on " + n})
	}
	return out, nil
}

func sortedNames(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (p *Provider) applyHoldPrune(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	be, err := p.backend(env)
	if err != nil {
		return err
	}
	if err := p.waitLocks(ctx, env, be); err != nil {
		return err
	}
	ledger, err := readLedger(env)
	if err != nil {
		return err
	}
	held, err := heldPackages(env, be.debian())
	if err != nil {
		return err
	}
	for _, c := range changes {
		n := c.Data.(*holdPrune).name
		if held[n] {
			if err := holdCmd(ctx, env, be, false, []string{n}); err != nil {
				c.Err = err
				continue
			}
		}
		delete(ledger, n)
	}
	return writeLedger(env, ledger)
}
