package coordinator

import (
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// expectsHealth reports whether node, rendered at generation gen, has
// health checks: its roles' checks, or the built-in DRBD and swarm checks
// of a node holding such resources. Such a node counts as healthy only
// with health passing: unspecified means its checks have not run yet.
func expectsHealth(st *state.Store, gen uint64, node string) bool {
	g, n := st.Generation(gen), st.Node(node)
	if g == nil || n == nil {
		return false
	}
	labels, _ := state.TrustedLabels(n)
	roles := map[string]bool{}
	for _, r := range render.SelectRoles(g.GetSite(), node, labels) {
		roles[r] = true
	}
	for _, r := range g.GetSite().GetRoles() {
		if !roles[r.GetName()] {
			continue
		}
		if len(r.GetChecks()) > 0 {
			return true
		}
		for _, res := range r.GetResources() {
			switch res.GetKind().(type) {
			case *hivev1.Resource_Drbd, *hivev1.Resource_Swarm:
				return true
			}
		}
	}
	return false
}

// expectsHealth is expectsHealth cached for the gate's rollout. Callers
// hold g.mu.
func (g *rolloutGate) expectsHealth(st *state.Store, gen uint64, node string) bool {
	if v := st.RegistryVersion(); g.expect == nil || g.expectRegistry != v {
		g.expect, g.expectRegistry = map[string]bool{}, v
	}
	e, ok := g.expect[node]
	if !ok {
		e = expectsHealth(st, gen, node)
		g.expect[node] = e
	}
	return e
}
