// Package providers builds the default provider set of the converge
// engine: repo (pkgrepo), package (pkg), file, service, group and user
// (users), hosts, hostname, timezone and locale (sysbase), the host
// baseline (sysctl, kernel_module, mount, command), plus any extra
// providers the caller passes (the agent adds firewall, drbd and swarm).
//
// It is called once at start-up by whoever builds a converge.Engine (the
// agent, tests); nothing here blocks.
package providers

import (
	"fmt"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/command"
	"github.com/hivefleet/hive/converge/file"
	"github.com/hivefleet/hive/converge/hosts"
	"github.com/hivefleet/hive/converge/kmod"
	"github.com/hivefleet/hive/converge/mount"
	"github.com/hivefleet/hive/converge/pkg"
	"github.com/hivefleet/hive/converge/pkgrepo"
	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/converge/sysbase"
	"github.com/hivefleet/hive/converge/sysctl"
	"github.com/hivefleet/hive/converge/users"
	"github.com/hivefleet/hive/site/kinds"
)

// Config configures the default providers.
type Config struct {
	File    file.Config
	Package pkg.Config
	Repo    pkgrepo.Config
	Service service.Config
}

// DefaultConfig returns the providers' defaults.
func DefaultConfig() Config {
	return Config{Package: pkg.DefaultConfig()}
}

// Validate checks the config.
func (c Config) Validate() error {
	if err := c.Package.Validate(); err != nil {
		return fmt.Errorf("package provider: %w", err)
	}
	return nil
}

// Default returns a registry holding the default providers and the extra
// ones; two providers of one kind is an error.
func Default(cfg Config, extra ...converge.Provider) (*converge.Registry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pp, err := pkg.New(cfg.Package)
	if err != nil {
		return nil, err
	}
	return converge.NewRegistry(append([]converge.Provider{
		pkgrepo.New(cfg.Repo), pp, file.NewWithConfig(cfg.File), service.New(cfg.Service),
		users.NewGroups(), users.NewUsers(), hosts.New(), sysbase.Hostname(), sysbase.Timezone(), sysbase.Locale(),
		sysctl.New(sysctl.Config{}), kmod.New(kmod.Config{}), mount.New(mount.Config{}), command.New(),
	}, extra...)...)
}

// SandboxPlanOnly is the converge.Config.PlanOnly set for a --root
// sandbox: the kinds whose entry in the kind table (site/kinds) is not
// InRoot. Files and repo definitions are written into the root; packages,
// services and the cluster kinds are only planned.
func SandboxPlanOnly() map[string]bool {
	m := map[string]bool{}
	for _, k := range kinds.All {
		if !k.InRoot {
			m[k.Name] = true
		}
	}
	return m
}
