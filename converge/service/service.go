// Package service is the converge provider for "service:" resources:
// systemd units, enabled or disabled at boot, running or stopped, restarted
// (or reloaded) when a resource that notifies them changed in the run.
//
// It talks to systemd over D-Bus (coreos/go-systemd) through the Bus
// interface. Plan observes each unit's LoadState, ActiveState,
// UnitFileState and NeedDaemonReload and lists the actions needed. Apply
// runs `daemon-reload` once first when the unit file or a drop-in of a
// planned unit changed earlier in the run (a file resource under a systemd
// unit directory) or a planned unit reports NeedDaemonReload, then observes each unit again (a unit file
// written in this run is only known to systemd after the reload) and runs,
// per unit: enable/disable (followed by one more daemon-reload), then
// start/stop, or restart/reload when notified and already running. Every
// job is waited for; a job that does not end "done" fails the resource.
//
// Units are managed on the host root, or under another root when
// Config.RootSystemd says the bus reaches a systemd running in it (tests
// boot one). Otherwise, under another root (the agent's --root sandbox),
// there is no systemd to ask: Plan reports what it would ensure,
// unobserved, and the engine must run the provider plan only
// (converge.Config.PlanOnly), which the agent does.
//
// Called by the engine from one goroutine at a time; one D-Bus connection
// per Plan/Apply call.
package service

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Errors of failed service changes.
var (
	// ErrNotFound is returned when systemd does not know the unit (after
	// a daemon-reload).
	ErrNotFound = errors.New("unit not found")
	// ErrMasked is returned when a unit to start or enable is masked.
	ErrMasked = errors.New("unit is masked")
	// ErrNoSystemd is returned by Apply under a root other than "/".
	ErrNoSystemd = errors.New("no systemd for this root")
)

// Config configures the provider.
type Config struct {
	// Connect returns a Bus; default ConnectSystem.
	Connect func(ctx context.Context) (Bus, error)
	// RootSystemd says Connect reaches the systemd running inside
	// Env.Root (a container booted from it), so units are managed under
	// a root other than "/" too.
	RootSystemd bool
}

// Provider manages systemd units.
type Provider struct {
	connect     func(ctx context.Context) (Bus, error)
	rootSystemd bool
}

// New returns a provider.
func New(cfg Config) *Provider {
	if cfg.Connect == nil {
		cfg.Connect = ConnectSystem
	}
	return &Provider{connect: cfg.Connect, rootSystemd: cfg.RootSystemd}
}

// Kind implements converge.Provider.
func (*Provider) Kind() string { return converge.KindService }

// Validate implements converge.Validator.
func (*Provider) Validate(r *hivev1.Resource) error {
	s := r.GetService()
	if s == nil {
		return fmt.Errorf("%w: not a service resource", converge.ErrInvalid)
	}
	n := s.GetName()
	if n == "" || strings.ContainsAny(n, "/ \t\n") {
		return fmt.Errorf("%w: unit name %q", converge.ErrInvalid, n)
	}
	return nil
}

// plan is the provider-private data of a change.
type plan struct {
	unit         string
	svc          *hivev1.Service
	notified     []string
	daemonReload bool
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	changedUnits := unitFilesChanged(b)
	out := make([]*converge.Change, 0, len(b.Items))
	if !env.HostRoot() && !p.rootSystemd {
		for _, it := range b.Items {
			c := &converge.Change{}
			unit := converge.UnitName(it.Resource.GetService().GetName())
			pl := &plan{unit: unit, svc: it.Resource.GetService(), notified: it.Notified, daemonReload: changedUnits[unit]}
			if acts := wanted(pl); len(acts) > 0 {
				c.Needed, c.Data = true, pl
				c.Summary = "not observed (no systemd under root " + env.Root + "); would ensure " + strings.Join(acts, ", ")
			}
			out = append(out, c)
		}
		return out, nil
	}
	bus, err := p.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer bus.Close()
	for _, it := range b.Items {
		c := &converge.Change{}
		out = append(out, c)
		unit := converge.UnitName(it.Resource.GetService().GetName())
		pl := &plan{unit: unit, svc: it.Resource.GetService(), notified: it.Notified, daemonReload: changedUnits[unit]}
		st, err := bus.Unit(ctx, pl.unit)
		if err != nil {
			c.Err = err
			continue
		}
		pl.daemonReload = pl.daemonReload || st.NeedDaemonReload
		acts, err := actions(pl, st)
		if err != nil && !pl.daemonReload {
			c.Err = err
			continue
		}
		if pl.daemonReload && st.LoadState != "loaded" {
			acts = wanted(pl) // the unit file is new: judge after the reload
		}
		if pl.daemonReload {
			acts = append([]string{"daemon-reload"}, acts...)
		}
		if len(acts) > 0 {
			c.Needed, c.Data = true, pl
			c.Summary = strings.Join(acts, ", ")
			c.Diff = fmt.Sprintf("%s: active=%s enabled=%s\n", pl.unit, st.ActiveState, st.UnitFileState)
		}
	}
	return out, nil
}

// unitFilesChanged returns the units whose unit file or drop-in changed
// earlier in the run.
func unitFilesChanged(b *converge.Batch) map[string]bool {
	out := map[string]bool{}
	for k := range b.Changed {
		if converge.KindOf(k) == converge.KindFile {
			if u, ok := converge.IsUnitPath(converge.NameOf(k)); ok {
				out[u] = true
			}
		}
	}
	return out
}

// wanted lists what the resource asks for, unobserved.
func wanted(pl *plan) []string {
	var acts []string
	if pl.svc.Enabled != nil {
		if pl.svc.GetEnabled() {
			acts = append(acts, "enabled")
		} else {
			acts = append(acts, "disabled")
		}
	}
	switch pl.svc.GetState() {
	case hivev1.ServiceState_SERVICE_STATE_RUNNING:
		acts = append(acts, "running")
	case hivev1.ServiceState_SERVICE_STATE_STOPPED:
		acts = append(acts, "stopped")
	}
	if len(pl.notified) > 0 {
		acts = append(acts, notifyVerb(pl)+" (notified by "+strings.Join(pl.notified, ", ")+")")
	}
	return acts
}

func notifyVerb(pl *plan) string {
	if pl.svc.GetReloadOnNotify() {
		return "reload"
	}
	return "restart"
}

func isActive(s string) bool { return s == "active" || s == "activating" || s == "reloading" }

func isEnabled(s string) bool {
	switch s {
	case "enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "linked", "linked-runtime":
		return true
	}
	return false
}

// actions computes the actions for an observed unit.
func actions(pl *plan, st UnitState) ([]string, error) {
	if st.LoadState == "not-found" {
		return nil, fmt.Errorf("%s: %w", pl.unit, ErrNotFound)
	}
	masked := st.LoadState == "masked" || strings.HasPrefix(st.UnitFileState, "masked")
	var acts []string
	if pl.svc.Enabled != nil {
		switch {
		case pl.svc.GetEnabled() && masked:
			return nil, fmt.Errorf("%s: %w (unmask it first)", pl.unit, ErrMasked)
		case pl.svc.GetEnabled() && !isEnabled(st.UnitFileState):
			acts = append(acts, "enable")
		case !pl.svc.GetEnabled() && (st.UnitFileState == "enabled" || st.UnitFileState == "enabled-runtime"):
			acts = append(acts, "disable")
		}
	}
	switch pl.svc.GetState() {
	case hivev1.ServiceState_SERVICE_STATE_RUNNING:
		if masked {
			return nil, fmt.Errorf("%s: %w", pl.unit, ErrMasked)
		}
		if !isActive(st.ActiveState) {
			acts = append(acts, "start")
			return acts, nil // a fresh start needs no restart
		}
	case hivev1.ServiceState_SERVICE_STATE_STOPPED:
		if isActive(st.ActiveState) {
			acts = append(acts, "stop")
		}
		return acts, nil // a stopped unit is not restarted when notified
	}
	if len(pl.notified) > 0 && isActive(st.ActiveState) {
		acts = append(acts, notifyVerb(pl)+" (notified by "+strings.Join(pl.notified, ", ")+")")
	}
	return acts, nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	if !env.HostRoot() && !p.rootSystemd {
		return fmt.Errorf("%w %s: run the service provider plan-only", ErrNoSystemd, env.Root)
	}
	bus, err := p.connect(ctx)
	if err != nil {
		return err
	}
	defer bus.Close()
	for _, c := range changes {
		if pl, ok := c.Data.(*plan); ok && pl.daemonReload {
			if err := bus.DaemonReload(ctx); err != nil {
				return err
			}
			break
		}
	}
	enabledChanged := false
	type todo struct {
		c    *converge.Change
		acts []string
	}
	var todos []todo
	for _, c := range changes {
		pl, ok := c.Data.(*plan)
		if !ok {
			c.Err = errors.New("service: change without plan data")
			continue
		}
		st, err := bus.Unit(ctx, pl.unit)
		if err != nil {
			c.Err = err
			continue
		}
		acts, err := actions(pl, st)
		if err != nil {
			c.Err = err
			continue
		}
		for _, a := range acts {
			switch a {
			case "enable":
				err = bus.Enable(ctx, pl.unit)
				enabledChanged = true
			case "disable":
				err = bus.Disable(ctx, pl.unit)
				enabledChanged = true
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			c.Err = err
			continue
		}
		todos = append(todos, todo{c, acts})
	}
	if enabledChanged {
		if err := bus.DaemonReload(ctx); err != nil {
			return err
		}
	}
	for _, td := range todos {
		pl := td.c.Data.(*plan)
		for _, a := range td.acts {
			var err error
			switch verb, _, _ := strings.Cut(a, " "); verb {
			case "start":
				err = bus.Start(ctx, pl.unit)
			case "stop":
				err = bus.Stop(ctx, pl.unit)
			case "restart":
				err = bus.Restart(ctx, pl.unit)
			case "reload":
				err = bus.Reload(ctx, pl.unit)
			}
			if err != nil {
				td.c.Err = err
				break
			}
		}
	}
	return nil
}
