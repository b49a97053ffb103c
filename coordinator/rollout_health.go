package coordinator

import (
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
)

// expectsHealth reports whether node, rendered at generation gen, has
// site health checks (the checks: of its roles). Such a node counts as
// healthy only with health passing: unspecified means its checks have not
// run yet. The built-in DRBD and swarm checks are not expected (an agent
// in a --root sandbox never runs them, and they need three failures 10 s
// apart): they count when reported, a failing one fails the node.
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
		if roles[r.GetName()] && len(r.GetChecks()) > 0 {
			return true
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
