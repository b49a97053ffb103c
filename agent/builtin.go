package agent

import (
	"context"
	"slices"
	"time"

	"github.com/hivefleet/hive/agent/health"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/drbd"
	"github.com/hivefleet/hive/converge/swarm"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Built-in checks run every BuiltinInterval with BuiltinTimeout and count
// after BuiltinFailures consecutive failures (a DRBD resync or a swarm
// leader election takes a few seconds).
const (
	BuiltinInterval = 10 * time.Second
	BuiltinTimeout  = 5 * time.Second
	BuiltinFailures = 3
)

// builtinChecks returns the function giving a state's built-in checks:
// "builtin/drbd:R" for each DRBD resource, "builtin/volume:V" for each
// volume this node holds a replica of, "builtin/swarm" with a swarm
// membership.
func builtinChecks(dp *drbd.Provider, sp *swarm.Provider) func(*hivev1.NodeState) []health.Check {
	return func(st *hivev1.NodeState) []health.Check {
		var out []health.Check
		for _, res := range st.GetResources() {
			switch k := res.GetKind().(type) {
			case *hivev1.Resource_Drbd:
				name := k.Drbd.GetName()
				out = append(out, health.Check{
					Name: "builtin/drbd:" + name, Kind: "drbd", Def: "drbd:" + name,
					Interval: BuiltinInterval, Timeout: BuiltinTimeout, Failures: BuiltinFailures,
					Probe: func(ctx context.Context) error { return dp.Health(ctx, converge.ExecRunner{}, name) },
				})
			case *hivev1.Resource_Volume:
				// A replica's DRBD resource, as for drbd (a diskless
				// node's disk is never UpToDate; an absent volume is
				// going away).
				name, v := k.Volume.GetName(), k.Volume
				if v.GetAbsent() || slices.Contains(v.GetDisklessPeers(), st.GetNode()) {
					continue
				}
				out = append(out, health.Check{
					Name: "builtin/volume:" + name, Kind: "drbd", Def: "volume:" + name,
					Interval: BuiltinInterval, Timeout: BuiltinTimeout, Failures: BuiltinFailures,
					Probe: func(ctx context.Context) error { return dp.Health(ctx, converge.ExecRunner{}, name) },
				})
			case *hivev1.Resource_Swarm:
				out = append(out, health.Check{
					Name: "builtin/swarm", Kind: "swarm", Def: "swarm",
					Interval: BuiltinInterval, Timeout: BuiltinTimeout, Failures: BuiltinFailures,
					Probe: sp.Health,
				})
			}
		}
		return out
	}
}
