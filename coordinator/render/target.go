package render

import (
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Targeter is a Source that renders each node at its own target
// generation (a rollout's waves: coordinator/state implements it). A
// Source without it renders every node at Current().
type Targeter interface {
	// TargetGeneration returns the generation node is rendered at, or nil
	// (none). It must not block on anything but the source's own lock.
	TargetGeneration(node string) *hivev1.Generation
}

// Drainer is a Source that knows which nodes the swarm must drain
// (coordinator/state: maintenance, a reboot holding the lock); the
// initializer's state lists them (NodeState.swarm_drain). A change of the
// answer must change the source's RegistryVersion, so cached states are
// rendered again.
type Drainer interface {
	SwarmDrained(node string) bool
}

func targetOf(src Source, node string) *hivev1.Generation {
	if t, ok := src.(Targeter); ok {
		return t.TargetGeneration(node)
	}
	return src.Current()
}

// maxViews bounds the generations the renderer keeps a view of at once. A
// rollout has two (its generation and the one its nodes come from), more
// only while nodes of earlier paused or rolled back rollouts remain.
const maxViews = 8

// keepViewLocked installs v as the view of its generation, drops views and
// cached node states of another source or registry version (they can no
// longer be hit) and those of generations no node targets, and keeps at
// most maxViews views: the newest generations. Callers hold r.mu.
func (r *Renderer) keepViewLocked(v *view) {
	num := v.gen.GetNumber()
	r.views[num] = v
	for n, o := range r.views {
		if o.src != v.src || o.registry != v.registry {
			delete(r.views, n)
		}
	}
	// A view holds a few hundred bytes per node (at 10,000 nodes about
	// 6 MB), so the views of generations that no node is rendered at any
	// more (every node moved on: the common case after a push) go at once
	// rather than when maxViews newer ones have been built. One that is
	// needed again (a rollback, a plan's RenderAt) is built again.
	if t, ok := v.src.(Targeter); ok && len(r.views) > 1 {
		live := map[uint64]bool{num: true, v.src.Current().GetNumber(): true}
		for _, n := range v.nodes {
			live[t.TargetGeneration(n.GetName()).GetNumber()] = true
		}
		for n := range r.views {
			if !live[n] {
				delete(r.views, n)
			}
		}
	}
	for len(r.views) > maxViews {
		oldest := num
		for n := range r.views {
			oldest = min(oldest, n)
		}
		if oldest == num {
			break
		}
		delete(r.views, oldest)
	}
	for name, e := range r.nodes {
		if r.views[e.view.gen.GetNumber()] != e.view {
			delete(r.nodes, name)
		}
	}
}
