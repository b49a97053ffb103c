package render

import (
	"container/heap"
	"fmt"
	"path"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
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
	switch k := r.GetKind().(type) {
	case *hivev1.Resource_Repo:
		return "repo:" + k.Repo.GetName()
	case *hivev1.Resource_Package:
		return "package:" + k.Package.GetName()
	case *hivev1.Resource_File:
		return "file:" + k.File.GetPath()
	case *hivev1.Resource_Service:
		return "service:" + k.Service.GetName()
	case *hivev1.Resource_Firewall:
		return "firewall:filter"
	case *hivev1.Resource_Drbd:
		return "drbd:" + k.Drbd.GetName()
	case *hivev1.Resource_Swarm:
		return "swarm:node"
	case *hivev1.Resource_Certificate:
		return "certificate:" + k.Certificate.GetName()
	case *hivev1.Resource_CaTrust:
		return "ca_trust:site"
	}
	return ""
}

// rank orders kinds: repo → package → file → service → firewall → drbd →
// swarm (the implicit dependency order).
func rank(r *hivev1.Resource) int {
	switch r.GetKind().(type) {
	case *hivev1.Resource_Repo:
		return 0
	case *hivev1.Resource_Package:
		return 1
	case *hivev1.Resource_File:
		return 2
	case *hivev1.Resource_Service:
		return 3
	case *hivev1.Resource_Firewall:
		return 4
	case *hivev1.Resource_Drbd:
		return 5
	case *hivev1.Resource_Swarm:
		return 6
	}
	return 7
}

// payload returns the kind message of a resource.
func payload(r *hivev1.Resource) proto.Message {
	switch k := r.GetKind().(type) {
	case *hivev1.Resource_Repo:
		return k.Repo
	case *hivev1.Resource_Package:
		return k.Package
	case *hivev1.Resource_File:
		return k.File
	case *hivev1.Resource_Service:
		return k.Service
	case *hivev1.Resource_Firewall:
		return k.Firewall
	case *hivev1.Resource_Drbd:
		return k.Drbd
	case *hivev1.Resource_Swarm:
		return k.Swarm
	case *hivev1.Resource_Certificate:
		return k.Certificate
	case *hivev1.Resource_CaTrust:
		return k.CaTrust
	}
	return nil
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
	out := make([]*hivev1.Resource, 0, len(order))
	for _, k := range order {
		out = append(out, merged[k])
	}
	return sortResources(out)
}

func mergeInto(prev, res *hivev1.Resource, role string) error {
	k := prev.GetKey()
	switch p := prev.GetKind().(type) {
	case *hivev1.Resource_Firewall:
		f := res.GetFirewall()
		if f == nil {
			return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: "different kinds"}
		}
		p.Firewall.Rules = append(p.Firewall.Rules, cloneRules(f.GetRules())...)
		for chain, act := range f.GetPolicies() {
			if old, ok := p.Firewall.GetPolicies()[chain]; ok && old != act {
				return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: fmt.Sprintf("policy of chain %s: %s vs %s", chain, old, act)}
			}
			if p.Firewall.Policies == nil {
				p.Firewall.Policies = map[string]hivev1.FirewallAction{}
			}
			p.Firewall.Policies[chain] = act
		}
		if f.GetConfirmSeconds() > p.Firewall.GetConfirmSeconds() {
			p.Firewall.ConfirmSeconds = f.GetConfirmSeconds()
		}
	case *hivev1.Resource_Swarm:
		s := res.GetSwarm()
		if s == nil {
			return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: "different kinds"}
		}
		if s.GetRole() == hivev1.SwarmRole_SWARM_ROLE_MANAGER {
			p.Swarm.Role = s.GetRole()
		}
		p.Swarm.Init = p.Swarm.Init || s.GetInit()
		for lk, lv := range s.GetLabels() {
			if old, ok := p.Swarm.GetLabels()[lk]; ok && old != lv {
				return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: fmt.Sprintf("label %s: %q vs %q", lk, old, lv)}
			}
			if p.Swarm.Labels == nil {
				p.Swarm.Labels = map[string]string{}
			}
			p.Swarm.Labels[lk] = lv
		}
		have := map[string]bool{}
		for _, n := range p.Swarm.GetNetworks() {
			have[n.GetName()] = true
		}
		for _, n := range s.GetNetworks() {
			if !have[n.GetName()] {
				p.Swarm.Networks = append(p.Swarm.Networks, proto.Clone(n).(*hivev1.SwarmNetwork))
			}
		}
		if a := s.GetAdvertiseAddr(); a != "" {
			if p.Swarm.GetAdvertiseAddr() != "" && p.Swarm.GetAdvertiseAddr() != a {
				return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role, Detail: "advertise_addr differs"}
			}
			p.Swarm.AdvertiseAddr = a
		}
	default:
		if !proto.Equal(payload(prev), payload(res)) {
			return &ConflictError{Key: k, RoleA: prev.GetRole(), RoleB: role}
		}
	}
	prev.Requires = union(prev.GetRequires(), res.GetRequires())
	prev.Notify = union(prev.GetNotify(), res.GetNotify())
	return nil
}

func cloneRules(rs []*hivev1.FirewallRule) []*hivev1.FirewallRule {
	out := make([]*hivev1.FirewallRule, len(rs))
	for i, r := range rs {
		out[i] = proto.Clone(r).(*hivev1.FirewallRule)
	}
	return out
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
