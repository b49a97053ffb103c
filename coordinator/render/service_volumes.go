package render

import (
	"maps"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	sitepkg "github.com/hivefleet/hive/site"
	"google.golang.org/protobuf/proto"
)

// siteVolumes lists the volumes of s that are present (not absent).
func siteVolumes(s *hivev1.Site) []*hivev1.Volume {
	var out []*hivev1.Volume
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			if v := res.GetVolume(); v != nil && !v.GetAbsent() {
				out = append(out, v)
			}
		}
	}
	return out
}

// volumeNodeLabels returns the swarm node labels of a node with roles:
// its swarm labels plus site.VolumeNodeLabel(V)=true for every volume V of
// vols whose replica or diskless role it holds. labels itself is not
// changed.
func volumeNodeLabels(vols []*hivev1.Volume, roles []string, labels map[string]string) map[string]string {
	if len(vols) == 0 {
		return labels
	}
	has := map[string]bool{}
	for _, r := range roles {
		has[r] = true
	}
	var out map[string]string
	for _, v := range vols {
		if !has[v.GetReplicaRole()] && (v.GetDisklessRole() == "" || !has[v.GetDisklessRole()]) {
			continue
		}
		if out == nil {
			out = maps.Clone(labels)
			if out == nil {
				out = map[string]string{}
			}
		}
		out[sitepkg.VolumeNodeLabel(v.GetName())] = "true"
	}
	if out == nil {
		return labels
	}
	return out
}

// servicesOnVolumeNodes returns the site's services with, for every hive
// volume a service mounts, the placement constraint that keeps its tasks
// on the nodes holding the volume (sitepkg.VolumeConstraint). Services that
// mount none are returned as they are; the site is not changed.
func servicesOnVolumeNodes(s *hivev1.Site) []*hivev1.SwarmService {
	svcs := s.GetServices()
	var out []*hivev1.SwarmService
	for i, svc := range svcs {
		var add []string
		for _, m := range svc.GetMounts() {
			if m.GetType() == "volume" && sitepkg.FindVolume(s, m.GetSource()) != nil {
				add = append(add, sitepkg.VolumeConstraint(m.GetSource()))
			}
		}
		if len(add) == 0 {
			if out != nil {
				out = append(out, svc)
			}
			continue
		}
		if out == nil {
			out = append(make([]*hivev1.SwarmService, 0, len(svcs)), svcs[:i]...)
		}
		c := proto.Clone(svc).(*hivev1.SwarmService)
		c.Constraints = append(c.Constraints, add...)
		out = append(out, c)
	}
	if out == nil {
		return svcs
	}
	return out
}
