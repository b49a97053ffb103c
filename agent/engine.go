package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/hivefleet/hive/agent/health"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/certs"
	"github.com/hivefleet/hive/converge/confirm"
	"github.com/hivefleet/hive/converge/drbd"
	"github.com/hivefleet/hive/converge/firewall"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/converge/swarm"
	"github.com/hivefleet/hive/converge/volume"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Engine converges a node state; *converge.Engine is the real one, unit
// tests use fakes. Run is called from the agent's run loop, and with
// RunOptions.DryRun from a watch stream's plan runner (hivectl plan):
// implementations serialise runs (*converge.Engine holds a mutex for a
// whole run), so a dry run never overlaps a real one.
type Engine interface {
	Run(ctx context.Context, st *hivev1.NodeState, opts converge.RunOptions) (*converge.Report, error)
}

// Window is an open confirm window: the firewall's (*firewall.Window) or
// the agent's own over the other kinds (*confirm.Window).
type Window interface {
	ConfirmWith(ctx context.Context, interval time.Duration, probe func(context.Context) error) confirm.State
}

// Deps are the agent's collaborators besides its Config.
type Deps struct {
	Engine Engine
	// Published returns values the node publishes (swarm join tokens),
	// copied into each report; nil for none.
	Published func() map[string][]byte
	// Services returns the swarm services this node manages (the swarm
	// initializer) with their task counts, copied into each report; nil
	// for none.
	Services func() []*hivev1.SwarmServiceStatus
	// OpenWindow returns the firewall's open confirm window, or nil.
	OpenWindow func() Window
	// Close releases what the engine holds (nil: nothing).
	Close func() error
	// Builtins returns the built-in health checks of a state (DRBD,
	// swarm); nil for none.
	Builtins func(st *hivev1.NodeState) []health.Check
	// NextDue returns when a resource is next due for a run by itself (a
	// service certificate's renewal), or zero; nil for none.
	NextDue func() time.Time

	// issuer is bound to the agent by New (see certs.go).
	issuer *certIssuer
}

// NewEngine builds the real engine with every provider for cfg: on the
// host, everything is applied (unless DryRun); under a sandbox root, files
// and repo definitions are written below the root and every kind that
// would touch the host (packages, services, firewall, drbd, swarm) is only
// planned.
func NewEngine(cfg Config, log *slog.Logger) (Deps, error) {
	sandbox := cfg.sandbox()
	fwc := firewall.DefaultConfig()
	fwc.Sandbox = sandbox
	if !sandbox {
		fwc.StateFile = filepath.Join(cfg.DataDir, "firewall-window.json")
	}
	fw, err := firewall.New(fwc, log)
	if err != nil {
		return Deps{}, err
	}
	dc := drbd.DefaultConfig()
	dc.Sandbox = sandbox
	dp, err := drbd.New(dc, log)
	if err != nil {
		return Deps{}, err
	}
	sc := swarm.DefaultConfig()
	if cfg.DockerHost != "" {
		sc.Host = cfg.DockerHost
	}
	sc.Sandbox = sandbox
	sc.CAFile = cfg.TLSCA
	sc.ReloadCommand = cfg.DockerReload
	sp, err := swarm.New(sc, log)
	if err != nil {
		return Deps{}, err
	}
	vc := volume.DefaultConfig()
	if cfg.DockerHost != "" {
		vc.DockerHost = cfg.DockerHost
	}
	vc.Sandbox = sandbox
	vp, err := volume.New(vc, dp, log)
	if err != nil {
		sp.Close()
		return Deps{}, err
	}
	pc := providers.DefaultConfig()
	pc.File.Ledger = filepath.Join(cfg.DataDir, SecretFilesLedger)
	issuer := &certIssuer{}
	cp := certs.New(certs.Config{Issuer: issuer, CAFile: cfg.TLSCA, Logger: log})
	reg, err := providers.Default(pc, fw, dp, sp, vp, cp, certs.NewTrust(certs.TrustConfig{CAFile: cfg.TLSCA}))
	if err != nil {
		sp.Close()
		vp.Close()
		return Deps{}, err
	}
	ec := converge.DefaultConfig()
	ec.Logger = log
	if sandbox {
		ec.Root = cfg.Root
		ec.PlanOnly = providers.SandboxPlanOnly()
		// A sandbox root rarely has an os-release: plan packages for the
		// host's family then.
		if fam, err := converge.DetectFamily(cfg.Root); err != nil || fam == converge.FamilyUnknown {
			if hf, err := converge.DetectFamily("/"); err == nil {
				ec.Family = hf
			}
		}
	}
	eng, err := converge.New(ec, reg)
	if err != nil {
		sp.Close()
		vp.Close()
		return Deps{}, fmt.Errorf("converge engine: %w", err)
	}
	var builtins func(*hivev1.NodeState) []health.Check
	if !sandbox {
		builtins = builtinChecks(dp, sp)
	}
	return Deps{
		Engine:    eng,
		Published: sp.Published,
		Services:  sp.Services,
		OpenWindow: func() Window {
			if w := fw.Window(); w != nil {
				return w
			}
			return nil
		},
		Close:    func() error { return errors.Join(sp.Close(), vp.Close()) },
		Builtins: builtins,
		NextDue:  cp.NextRenewal,
		issuer:   issuer,
	}, nil
}
