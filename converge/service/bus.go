package service

import (
	"context"
	"fmt"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// UnitState is what the provider observes of a unit.
type UnitState struct {
	// LoadState: "loaded", "not-found", "masked", "error", …
	LoadState string
	// ActiveState: "active", "inactive", "failed", "activating", …
	ActiveState string
	// UnitFileState: "enabled", "disabled", "static", "masked", …
	UnitFileState string
	// NeedDaemonReload: the unit file changed on disk since it was loaded.
	NeedDaemonReload bool
}

// Bus is the part of systemd's D-Bus API the provider uses. SystemdBus is
// the real one; tests use a fake that records the call sequence.
type Bus interface {
	Unit(ctx context.Context, unit string) (UnitState, error)
	Start(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
	Reload(ctx context.Context, unit string) error
	Enable(ctx context.Context, unit string) error
	Disable(ctx context.Context, unit string) error
	DaemonReload(ctx context.Context) error
	Close()
}

// SystemdBus talks to systemd over D-Bus with coreos/go-systemd.
type SystemdBus struct {
	c *sddbus.Conn
}

// ConnectSystem connects to the system's systemd (system bus, or its
// private socket when running as root).
func ConnectSystem(ctx context.Context) (Bus, error) {
	c, err := sddbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return &SystemdBus{c: c}, nil
}

// NewSystemdBus wraps an existing go-systemd connection.
func NewSystemdBus(c *sddbus.Conn) *SystemdBus { return &SystemdBus{c: c} }

// Unit implements Bus.
func (b *SystemdBus) Unit(ctx context.Context, unit string) (UnitState, error) {
	p, err := b.c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return UnitState{}, fmt.Errorf("get properties of %s: %w", unit, err)
	}
	s := UnitState{}
	s.LoadState, _ = p["LoadState"].(string)
	s.ActiveState, _ = p["ActiveState"].(string)
	s.UnitFileState, _ = p["UnitFileState"].(string)
	s.NeedDaemonReload, _ = p["NeedDaemonReload"].(bool)
	return s, nil
}

type jobFn func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

func wait(ctx context.Context, verb, unit string, fn jobFn) error {
	ch := make(chan string, 1)
	if _, err := fn(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("%s %s: job %s (see journalctl -u %s)", verb, unit, res, unit)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", verb, unit, ctx.Err())
	}
}

// Start implements Bus.
func (b *SystemdBus) Start(ctx context.Context, unit string) error {
	return wait(ctx, "start", unit, b.c.StartUnitContext)
}

// Stop implements Bus.
func (b *SystemdBus) Stop(ctx context.Context, unit string) error {
	return wait(ctx, "stop", unit, b.c.StopUnitContext)
}

// Restart implements Bus.
func (b *SystemdBus) Restart(ctx context.Context, unit string) error {
	return wait(ctx, "restart", unit, b.c.RestartUnitContext)
}

// Reload implements Bus.
func (b *SystemdBus) Reload(ctx context.Context, unit string) error {
	return wait(ctx, "reload", unit, b.c.ReloadUnitContext)
}

// Enable implements Bus.
func (b *SystemdBus) Enable(ctx context.Context, unit string) error {
	if _, _, err := b.c.EnableUnitFilesContext(ctx, []string{unit}, false, true); err != nil {
		return fmt.Errorf("enable %s: %w", unit, err)
	}
	return nil
}

// Disable implements Bus.
func (b *SystemdBus) Disable(ctx context.Context, unit string) error {
	if _, err := b.c.DisableUnitFilesContext(ctx, []string{unit}, false); err != nil {
		return fmt.Errorf("disable %s: %w", unit, err)
	}
	return nil
}

// DaemonReload implements Bus.
func (b *SystemdBus) DaemonReload(ctx context.Context) error {
	if err := b.c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

// Close implements Bus.
func (b *SystemdBus) Close() { b.c.Close() }
