package render

import (
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// volumeSource is the part of a Source that knows volume allocations
// (coordinator/state implements it); a Source without it renders volumes
// without minor and port, which the agent refuses.
type volumeSource interface {
	VolumeAllocation(name string) *hivev1.VolumeAllocation
}

// resolveVolume fills the rendered fields of a volume: its peers (replica
// and diskless nodes, in registration order), which of them are diskless,
// the initial primary and the allocated minor and port.
func (v *view) resolveVolume(res *hivev1.Resource, vol *hivev1.Volume) *hivev1.Resource {
	out := proto.Clone(vol).(*hivev1.Volume)
	out.Peers, out.DisklessPeers, out.InitialPrimary = nil, nil, ""
	replica := map[string]bool{}
	all := append([]*hivev1.Peer(nil), v.peers[vol.GetReplicaRole()]...)
	for _, p := range all {
		replica[p.GetName()] = true
		if out.InitialPrimary == "" || p.GetName() < out.InitialPrimary {
			out.InitialPrimary = p.GetName()
		}
	}
	if r := vol.GetDisklessRole(); r != "" {
		for _, p := range v.peers[r] {
			if !replica[p.GetName()] {
				replica[p.GetName()] = false
				all = append(all, p)
			}
		}
	}
	for id, p := range v.byRegistration(all) {
		out.Peers = append(out.Peers, &hivev1.VolumePeer{Name: p.GetName(), Address: p.GetAddress(), NodeId: uint32(id)})
		if !replica[p.GetName()] {
			out.DisklessPeers = append(out.DisklessPeers, p.GetName())
		}
	}
	if vs, ok := v.src.(volumeSource); ok {
		if a := vs.VolumeAllocation(vol.GetName()); a != nil {
			out.Minor, out.Port = a.GetMinor(), a.GetPort()
		}
	}
	nr := proto.Clone(res).(*hivev1.Resource)
	nr.Kind = &hivev1.Resource_Volume{Volume: out}
	return nr
}
