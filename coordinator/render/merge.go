package render

import (
	"container/heap"
	"fmt"
	"path"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/kinds"
	"google.golang.org/protobuf/proto"
)

// Matches reports whether a selector matches a node: every match_labels
// entry equals the node's label, and, when names is not empty, the node's
// name matches one of the globs (path.Match syntax).
func Matches(sel *hivev1.Selector, name string, labels map[string]string) bool {
	for k, v := range sel.GetMatchLabels() {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	if len(sel.GetNames()) == 0 {
		return true
	}
	for _, g := range sel.GetNames() {
		if ok, err := path.Match(g, name); err == nil && ok {
			return true
		}
	}
	return false
}

// SelectRoles returns the sorted, de-duplicated roles of every selector of
// site that matches the node, keeping only roles the site defines.
func SelectRoles(site *hivev1.Site, name string, labels map[string]string) []string {
	defined := map[string]bool{}
	for _, r := range site.GetRoles() {
		defined[r.GetName()] = true
	}
	set := map[string]bool{}
	for _, sel := range site.GetSelectors() {
		if Matches(sel, name, labels) {
			for _, r := range sel.GetRoles() {
				if defined[r] {
					set[r] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// Key returns a resource's key, deriving it from its kind when empty.
func Key(r *hivev1.Resource) string {
	if r.GetKey() != "" {
		return r.GetKey()
	}
	return kinds.Key(r)
}

// rank orders resources by kind, in the order of kinds.All (the implicit
// dependency order).
func rank(r *hivev1.Resource) int {
	if k := kinds.Of(r); k != nil {
		return kinds.Rank(k.Name)
	}
	return len(kinds.All)
}

// ConflictError is returned when two roles of a node declare one resource
// differently.
type ConflictError struct {
	Key          string
	RoleA, RoleB string
	Detail       string
}

func (e *ConflictError) Error() string {
	s := fmt.Sprintf("resource %s is declared differently by roles %q and %q", e.Key, e.RoleA, e.RoleB)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// mergeRoles merges the resources of roles (sorted) into one list in
// dependency order. Resources are clones with Role set.
func mergeRoles(site *hivev1.Site, roles []string) ([]*hivev1.Resource, error) {
	byName := map[string]*hivev1.Role{}
	for _, r := range site.GetRoles() {
		byName[r.GetName()] = r
	}
	merged := map[string]*hivev1.Resource{}
	var order []string
	for _, rn := range roles {
		role := byName[rn]
		for _, res := range role.GetResources() {
			if res.GetVolume() != nil {
				continue // placed below, by its roles
			}
			k := Key(res)
			if k == "" {
				return nil, fmt.Errorf("role %q: resource without a kind", rn)
			}
			prev, ok := merged[k]
			if !ok {
				c := proto.Clone(res).(*hivev1.Resource)
				c.Key = k
				c.Role = rn
				merged[k] = c
				order = append(order, k)
				continue
			}
			if err := mergeInto(prev, res, rn); err != nil {
				return nil, err
			}
		}
	}
	// A volume goes to the nodes of its replicas and diskless roles,
	// whichever role declares it (the site check makes its name unique).
	holds := map[string]bool{}
	for _, rn := range roles {
		holds[rn] = true
	}
	for _, r := range site.GetRoles() {
		for _, res := range r.GetResources() {
			v := res.GetVolume()
			if v == nil || !(holds[v.GetReplicaRole()] || (v.GetDisklessRole() != "" && holds[v.GetDisklessRole()])) {
				continue
			}
			k := Key(res)
			if _, dup := merged[k]; dup {
				continue
			}
			c := proto.Clone(res).(*hivev1.Resource)
			c.Key = k
			c.Role = r.GetName()
			merged[k] = c
			order = append(order, k)
		}
	}
	out := make([]*hivev1.Resource, 0, len(order))
	for _, k := range order {
		out = append(out, merged[k])
	}
	return sortResources(out)
}

// mergeInto merges res, declared by role, into prev by the kind's merge
// rule (kinds.Kind.Merge); kinds without one must be declared equally.
func mergeInto(prev, res *hivev1.Resource, role string) error {
	k := prev.GetKey()
	kind := kinds.Of(prev)
	if kind != nil && kind.Merge != nil {
		if kinds.Of(res) != kind {
			return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: "different kinds"}
		}
		if err := kind.Merge(kinds.Payload(prev), kinds.Payload(res)); err != nil {
			return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: err.Error()}
		}
	} else if !proto.Equal(kinds.Payload(prev), kinds.Payload(res)) {
		return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role}
	}
	prev.Requires = union(prev.GetRequires(), res.GetRequires())
	prev.Notify = union(prev.GetNotify(), res.GetNotify())
	// The longer confirm window wins, as for the firewall's.
	prev.ConfirmSeconds = max(prev.GetConfirmSeconds(), res.GetConfirmSeconds())
	return nil
}

func union(a, b []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range append(append([]string(nil), a...), b...) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// sortResources orders resources topologically by their explicit requires,
// breaking ties by kind rank then key, so the implicit order repo →
// package → file → service holds whenever explicit requires allow.
func sortResources(rs []*hivev1.Resource) ([]*hivev1.Resource, error) {
	byKey := map[string]*hivev1.Resource{}
	for _, r := range rs {
		byKey[r.GetKey()] = r
	}
	indeg := map[string]int{}
	dependents := map[string][]string{}
	for _, r := range rs {
		indeg[r.GetKey()] += 0
		for _, req := range r.GetRequires() {
			if _, ok := byKey[req]; !ok {
				return nil, fmt.Errorf("resource %s (role %q) requires %s, which no role of this node declares", r.GetKey(), r.GetRole(), req)
			}
			indeg[r.GetKey()]++
			dependents[req] = append(dependents[req], r.GetKey())
		}
	}
	h := &resHeap{}
	for _, r := range rs {
		if indeg[r.GetKey()] == 0 {
			heap.Push(h, r)
		}
	}
	out := make([]*hivev1.Resource, 0, len(rs))
	for h.Len() > 0 {
		r := heap.Pop(h).(*hivev1.Resource)
		out = append(out, r)
		for _, d := range dependents[r.GetKey()] {
			indeg[d]--
			if indeg[d] == 0 {
				heap.Push(h, byKey[d])
			}
		}
	}
	if len(out) != len(rs) {
		var cyc []string
		for _, r := range rs {
			if indeg[r.GetKey()] > 0 {
				cyc = append(cyc, r.GetKey())
			}
		}
		sort.Strings(cyc)
		return nil, fmt.Errorf("resources require each other in a cycle: %s", strings.Join(cyc, ", "))
	}
	return out, nil
}

type resHeap []*hivev1.Resource

func (h resHeap) Len() int { return len(h) }
func (h resHeap) Less(i, j int) bool {
	ri, rj := rank(h[i]), rank(h[j])
	if ri != rj {
		return ri < rj
	}
	return h[i].GetKey() < h[j].GetKey()
}
func (h resHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *resHeap) Push(x any)   { *h = append(*h, x.(*hivev1.Resource)) }
func (h *resHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
