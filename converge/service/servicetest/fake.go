// Package servicetest has what service-provider tests need: an in-memory
// systemd (units with a file on disk and a loaded state, jobs that succeed
// or fail, a record of every call in order) that also serves itself on a
// private dbus-daemon (ServeDBus), and BootSystemd, which boots a real
// systemd as PID 1 of its own namespaces in a root filesystem. It is
// imported by tests only.
package servicetest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hivefleet/hive/converge/service"
)

// Unit is one fake unit.
type Unit struct {
	// OnDisk: the unit file exists; Loaded: systemd has read it (set by
	// DaemonReload).
	OnDisk, Loaded bool
	Masked         bool
	Active         bool
	Enabled        bool
	Static         bool
	// FailStart makes start/restart jobs end "failed".
	FailStart bool
	// Restarts and Reloads count notifications handled.
	Restarts, Reloads int
}

// Systemd is an in-memory systemd implementing service.Bus.
type Systemd struct {
	mu    sync.Mutex
	Units map[string]*Unit
	calls []string
}

// New returns a fake with the given units, all loaded.
func New(units map[string]*Unit) *Systemd {
	if units == nil {
		units = map[string]*Unit{}
	}
	return &Systemd{Units: units}
}

// Connect returns the fake as a service.Bus (for service.Config.Connect).
func (s *Systemd) Connect(ctx context.Context) (service.Bus, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// Calls returns the mutating calls made so far, e.g. "start nginx.service".
func (s *Systemd) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// ResetCalls forgets the recorded calls.
func (s *Systemd) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// State is a fingerprint of every unit, for "plan never changes" checks.
func (s *Systemd) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n := range s.Units {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %+v\n", n, *s.Units[n])
	}
	return b.String()
}

func (s *Systemd) unit(name string) *Unit {
	u := s.Units[name]
	if u == nil {
		u = &Unit{}
		s.Units[name] = u
	}
	return u
}

// Unit implements service.Bus.
func (s *Systemd) Unit(ctx context.Context, name string) (service.UnitState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return service.UnitState{}, err
	}
	u := s.Units[name]
	if u == nil {
		u = &Unit{} // unknown: not created by a query
	}
	st := service.UnitState{LoadState: "loaded", ActiveState: "inactive", UnitFileState: "disabled"}
	switch {
	case u.Masked:
		st.LoadState, st.UnitFileState = "masked", "masked"
	case !u.Loaded:
		st.LoadState, st.UnitFileState = "not-found", ""
	}
	if u.Active {
		st.ActiveState = "active"
	}
	if u.Enabled {
		st.UnitFileState = "enabled"
	}
	if u.Static {
		st.UnitFileState = "static"
	}
	st.NeedDaemonReload = u.OnDisk != u.Loaded
	return st, nil
}

func (s *Systemd) job(ctx context.Context, verb, name string, fn func(u *Unit) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	s.calls = append(s.calls, verb+" "+name)
	u := s.unit(name)
	if !u.Loaded || u.Masked {
		return fmt.Errorf("%s %s: Unit %s not found or masked", verb, name, name)
	}
	return fn(u)
}

// Start implements service.Bus.
func (s *Systemd) Start(ctx context.Context, name string) error {
	return s.job(ctx, "start", name, func(u *Unit) error {
		if u.FailStart {
			return fmt.Errorf("start %s: job failed (see journalctl -u %s)", name, name)
		}
		u.Active = true
		return nil
	})
}

// Stop implements service.Bus.
func (s *Systemd) Stop(ctx context.Context, name string) error {
	return s.job(ctx, "stop", name, func(u *Unit) error { u.Active = false; return nil })
}

// Restart implements service.Bus.
func (s *Systemd) Restart(ctx context.Context, name string) error {
	return s.job(ctx, "restart", name, func(u *Unit) error {
		if u.FailStart {
			u.Active = false
			return fmt.Errorf("restart %s: job failed (see journalctl -u %s)", name, name)
		}
		u.Active = true
		u.Restarts++
		return nil
	})
}

// Reload implements service.Bus.
func (s *Systemd) Reload(ctx context.Context, name string) error {
	return s.job(ctx, "reload", name, func(u *Unit) error { u.Reloads++; return nil })
}

// Enable implements service.Bus.
func (s *Systemd) Enable(ctx context.Context, name string) error {
	return s.job(ctx, "enable", name, func(u *Unit) error { u.Enabled = true; return nil })
}

// Disable implements service.Bus.
func (s *Systemd) Disable(ctx context.Context, name string) error {
	return s.job(ctx, "disable", name, func(u *Unit) error { u.Enabled = false; return nil })
}

// DaemonReload implements service.Bus.
func (s *Systemd) DaemonReload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	s.calls = append(s.calls, "daemon-reload")
	for _, u := range s.Units {
		u.Loaded = u.OnDisk
	}
	return nil
}

// Close implements service.Bus.
func (s *Systemd) Close() {}

// Get returns a copy of a unit's state (zero when unknown), safe to call
// while the fake serves calls from other goroutines.
func (s *Systemd) Get(name string) Unit {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.Units[name]; u != nil {
		return *u
	}
	return Unit{}
}
