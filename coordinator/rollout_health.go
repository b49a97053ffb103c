package coordinator

import (
	"github.com/hivefleet/hive/coordinator/state"
)

// expectsHealth reports whether node, rendered at generation gen, has
// health checks, so that it counts as healthy only with health passing
// (unspecified then means its checks have not run yet). Until the site
// model carries checks (issue 14, branch checks) no node has any: a
// converged report is healthy unless its health fails.
func expectsHealth(st *state.Store, gen uint64, node string) bool {
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
