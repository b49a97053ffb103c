package site

import (
	"fmt"
	"path"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// VolumeNodeLabel is the swarm node label the coordinators render onto
// every swarm node that holds volume name (a replica or a diskless peer),
// and VolumeConstraint the placement constraint they add to every service
// that mounts it: a task of such a service runs only where the volume's
// DRBD device exists.
func VolumeNodeLabel(name string) string { return "hive.volume." + name }

// VolumeConstraint is the placement constraint of a service mounting
// volume name (see VolumeNodeLabel).
func VolumeConstraint(name string) string { return "node.labels." + VolumeNodeLabel(name) + "==true" }

// checkServiceVolumes checks that every hive volume a service mounts is
// declared and reachable by the service's placement: the nodes holding the
// volume must be able to be swarm nodes, the service's node.role
// constraints must leave some of them, and at most one task may use the
// volume at a time (a DRBD device is used on one node at a time), so a
// global service or more than one replica cannot mount it.
func (c *checker) checkServiceVolumes(s *hivev1.Site, svc *hivev1.SwarmService) {
	var names []string
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			if v := res.GetVolume(); v != nil {
				names = append(names, v.GetName())
			}
		}
	}
	for i, m := range svc.GetMounts() {
		if m.GetType() != "volume" || m.GetSource() == "" {
			continue
		}
		p := fmt.Sprintf("mounts[%d]", i)
		v := FindVolume(s, m.GetSource())
		if v == nil {
			msg := fmt.Sprintf("unknown volume %q: declare it under a role's volumes:", m.GetSource())
			if sg := suggest(m.GetSource(), names); sg != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sg)
			}
			c.serviceErr(svc, p+".volume", "%s", msg)
			continue
		}
		if v.GetAbsent() {
			c.serviceErr(svc, p+".volume", "volume %q is declared with state: absent", v.GetName())
			continue
		}
		if svc.GetMode() == "global" {
			c.serviceErr(svc, p+".volume", "a global service runs a task on every node, but volume %q (DRBD) is used on one node at a time: use mode: replicated with replicas: 1", v.GetName())
			continue
		}
		if svc.GetReplicas() > 1 {
			c.serviceErr(svc, p+".volume", "%d replicas would mount volume %q on different nodes, but a DRBD volume is used on one node at a time: use replicas: 1", svc.GetReplicas(), v.GetName())
			continue
		}
		holders := []string{v.GetReplicaRole()}
		if d := v.GetDisklessRole(); d != "" {
			holders = append(holders, d)
		}
		roles := map[hivev1.SwarmRole]bool{}
		for _, h := range holders {
			for r := range possibleSwarmRoles(s, h) {
				roles[r] = true
			}
		}
		if len(roles) == 0 {
			c.serviceErr(svc, p+".volume", "volume %q is held by the nodes of role %s, and none of them can be a swarm node (no role with swarm: is given to them by a selector), so no task can mount it", v.GetName(), strings.Join(holders, " and "))
			continue
		}
		for j, k := range svc.GetConstraints() {
			want, neg, ok := roleConstraint(k)
			if !ok {
				continue
			}
			left := 0
			for r := range roles {
				if (r == want) != neg {
					left++
				}
			}
			if left == 0 {
				c.serviceErr(svc, fmt.Sprintf("placement.constraints[%d]", j), "%q excludes every node holding volume %q (role %s: swarm %s)", k, v.GetName(), strings.Join(holders, " and "), swarmRoleNames(roles))
			}
		}
	}
}

// roleConstraint reads a node.role==X or node.role!=X constraint.
func roleConstraint(k string) (hivev1.SwarmRole, bool, bool) {
	k = strings.ReplaceAll(k, " ", "")
	neg := false
	var val string
	switch {
	case strings.HasPrefix(k, "node.role=="):
		val = strings.TrimPrefix(k, "node.role==")
	case strings.HasPrefix(k, "node.role!="):
		val, neg = strings.TrimPrefix(k, "node.role!="), true
	default:
		return 0, false, false
	}
	switch val {
	case "manager":
		return hivev1.SwarmRole_SWARM_ROLE_MANAGER, neg, true
	case "worker":
		return hivev1.SwarmRole_SWARM_ROLE_WORKER, neg, true
	}
	return 0, false, false
}

func swarmRoleNames(m map[hivev1.SwarmRole]bool) string {
	var out []string
	for r := range m {
		out = append(out, strings.ToLower(strings.TrimPrefix(r.String(), "SWARM_ROLE_")))
	}
	sort.Strings(out)
	return strings.Join(out, " or ")
}

// possibleSwarmRoles returns the swarm roles a node holding role may get:
// from the role's own swarm resource, and from the roles of every selector
// that may match a node together with a selector giving role.
func possibleSwarmRoles(s *hivev1.Site, role string) map[hivev1.SwarmRole]bool {
	swarmOf := map[string]hivev1.SwarmRole{}
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			if sw := res.GetSwarm(); sw != nil {
				swarmOf[r.GetName()] = sw.GetRole()
			}
		}
	}
	out := map[hivev1.SwarmRole]bool{}
	if sr, ok := swarmOf[role]; ok {
		out[sr] = true
	}
	for _, a := range s.GetSelectors() {
		if !contains(a.GetRoles(), role) {
			continue
		}
		for _, b := range s.GetSelectors() {
			if a != b && !selectorsMayOverlap(a, b) {
				continue
			}
			for _, r := range b.GetRoles() {
				if sr, ok := swarmOf[r]; ok {
					out[sr] = true
				}
			}
		}
	}
	return out
}

// selectorsMayOverlap reports whether one node may match both a and b:
// false only when both list plain names (no glob) with none in common, or
// when they require different values of one label.
func selectorsMayOverlap(a, b *hivev1.Selector) bool {
	for k, v := range a.GetMatchLabels() {
		if w, ok := b.GetMatchLabels()[k]; ok && w != v {
			return false
		}
	}
	plain := func(names []string) bool {
		for _, n := range names {
			if strings.ContainsAny(n, `*?[\`) {
				return false
			}
		}
		return len(names) > 0
	}
	if !plain(a.GetNames()) || !plain(b.GetNames()) {
		return true
	}
	for _, x := range a.GetNames() {
		for _, y := range b.GetNames() {
			if ok, _ := path.Match(x, y); ok {
				return true
			}
		}
	}
	return false
}
