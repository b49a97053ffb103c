package state

import (
	"fmt"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Volume allocation (issue 16). Each volume of the site gets a DRBD minor
// and port when a generation first declares it. Allocations live in the
// store (and its snapshots) for the volume's whole life: a volume removed
// from the site keeps them (its data is kept on the nodes), and a number is
// never handed out twice (the counters only grow), so no two volumes, now
// or later, share one. Numbers that hand-written drbd resources of the new
// generation use are skipped, and a generation whose drbd resource takes a
// number a volume holds is refused. A push that makes a volume smaller
// than the largest size the store accepted for it is refused too.
//
// Everything here runs inside Push and Rollback, under mu, deterministic.
const (
	// VolumeMinorBase and VolumePortBase are the first minor and port
	// handed to volumes.
	VolumeMinorBase uint32 = 100
	VolumePortBase  uint32 = 7900
	// volumeMinorMax and volumePortMax are the highest DRBD minor and
	// TCP port.
	volumeMinorMax uint32 = 1<<20 - 1
	volumePortMax  uint32 = 65535
)

// volumeState is the store's volume bookkeeping.
type volumeState struct {
	allocs    map[string]*hivev1.VolumeAllocation // by volume name
	nextMinor uint32                              // 0: VolumeMinorBase
	nextPort  uint32                              // 0: VolumePortBase
}

// VolumeAllocation returns the allocation of the volume named name, or nil.
func (s *Store) VolumeAllocation(name string) *hivev1.VolumeAllocation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.vols.allocs[name]
}

// VolumeAllocations returns every allocation, by name.
func (s *Store) VolumeAllocations() []*hivev1.VolumeAllocation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.volumeAllocationsLocked()
}

func (s *Store) volumeAllocationsLocked() []*hivev1.VolumeAllocation {
	out := make([]*hivev1.VolumeAllocation, 0, len(s.vols.allocs))
	for _, a := range s.vols.allocs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// siteVolumes returns the volume resources of site, by name (the site
// check makes names unique; the first wins otherwise).
func siteVolumes(site *hivev1.Site) ([]string, map[string]*hivev1.Resource) {
	byName := map[string]*hivev1.Resource{}
	var names []string
	for _, r := range site.GetRoles() {
		for _, res := range r.GetResources() {
			if v := res.GetVolume(); v != nil && byName[v.GetName()] == nil {
				byName[v.GetName()] = res
				names = append(names, v.GetName())
			}
		}
	}
	sort.Strings(names)
	return names, byName
}

func where(res *hivev1.Resource) string {
	if s := res.GetSource(); s != "" {
		return s + ": "
	}
	return ""
}

// allocateVolumesLocked checks the volumes of site against the store and
// returns the allocations the generation gen needs (new ones and grown
// sizes), or a rejection. Nothing is stored: commitVolumesLocked does that
// once the generation is accepted.
func (s *Store) allocateVolumesLocked(site *hivev1.Site, gen uint64) (map[string]*hivev1.VolumeAllocation, uint32, uint32, *hivev1.CommandResult) {
	names, vols := siteVolumes(site)
	// Numbers taken by hand-written drbd resources.
	drbdMinor, drbdPort := map[uint32]*hivev1.Resource{}, map[uint32]*hivev1.Resource{}
	for _, r := range site.GetRoles() {
		for _, res := range r.GetResources() {
			if d := res.GetDrbd(); d != nil {
				drbdMinor[d.GetMinor()] = res
				drbdPort[d.GetPort()] = res
			}
		}
	}
	// A hand-written resource may not take a volume's number, whether the
	// volume is still in the site or not.
	var errs []string
	for _, a := range s.volumeAllocationsLocked() {
		if res := drbdMinor[a.GetMinor()]; res != nil {
			errs = append(errs, fmt.Sprintf("%sdrbd %s: minor %d is allocated to volume %q", where(res), res.GetDrbd().GetName(), a.GetMinor(), a.GetName()))
		}
		if res := drbdPort[a.GetPort()]; res != nil {
			errs = append(errs, fmt.Sprintf("%sdrbd %s: port %d is allocated to volume %q", where(res), res.GetDrbd().GetName(), a.GetPort(), a.GetName()))
		}
	}
	nextMinor, nextPort := max(s.vols.nextMinor, VolumeMinorBase), max(s.vols.nextPort, VolumePortBase)
	out := map[string]*hivev1.VolumeAllocation{}
	for _, name := range names {
		res := vols[name]
		v := res.GetVolume()
		old := s.vols.allocs[name]
		if old != nil {
			if !v.GetAbsent() && v.GetSizeBytes() < old.GetSizeBytes() {
				errs = append(errs, fmt.Sprintf("%svolume %s: size %d bytes is smaller than %d bytes, its size since generation %d: shrinking a volume is refused", where(res), name, v.GetSizeBytes(), old.GetSizeBytes(), old.GetGeneration()))
			} else if v.GetSizeBytes() > old.GetSizeBytes() {
				grown := &hivev1.VolumeAllocation{Name: name, Minor: old.GetMinor(), Port: old.GetPort(), SizeBytes: v.GetSizeBytes(), Generation: old.GetGeneration()}
				out[name] = grown
			}
			continue
		}
		for drbdMinor[nextMinor] != nil {
			nextMinor++
		}
		for drbdPort[nextPort] != nil {
			nextPort++
		}
		if nextMinor > volumeMinorMax || nextPort > volumePortMax {
			errs = append(errs, fmt.Sprintf("%svolume %s: no DRBD minor or port left to allocate", where(res), name))
			continue
		}
		out[name] = &hivev1.VolumeAllocation{Name: name, Minor: nextMinor, Port: nextPort, SizeBytes: v.GetSizeBytes(), Generation: gen}
		nextMinor++
		nextPort++
	}
	if len(errs) > 0 {
		return nil, 0, 0, reject(ReasonInvalid, "%s", strings.Join(errs, "; "))
	}
	return out, nextMinor, nextPort, nil
}

// commitVolumesLocked stores what allocateVolumesLocked returned.
func (s *Store) commitVolumesLocked(allocs map[string]*hivev1.VolumeAllocation, nextMinor, nextPort uint32) {
	if s.vols.allocs == nil {
		s.vols.allocs = map[string]*hivev1.VolumeAllocation{}
	}
	for n, a := range allocs {
		s.vols.allocs[n] = a
	}
	if len(allocs) > 0 {
		s.vols.nextMinor, s.vols.nextPort = nextMinor, nextPort
	}
}

// captureVolumesLocked puts the volume bookkeeping into snap.
func (s *Store) captureVolumesLocked(snap *hivev1.StateSnapshot) {
	snap.Volumes = s.volumeAllocationsLocked()
	snap.NextVolumeMinor = s.vols.nextMinor
	snap.NextVolumePort = s.vols.nextPort
}

// restoreVolumes reads the volume bookkeeping of a snapshot, checking
// that no two volumes share a number and the counters are past them all.
func (s *Store) restoreVolumes(snap *hivev1.StateSnapshot) error {
	s.vols = volumeState{allocs: map[string]*hivev1.VolumeAllocation{}, nextMinor: snap.GetNextVolumeMinor(), nextPort: snap.GetNextVolumePort()}
	minors, ports := map[uint32]string{}, map[uint32]string{}
	for _, a := range snap.GetVolumes() {
		switch {
		case a.GetName() == "":
			return fmt.Errorf("%w: volume allocation without a name", ErrSnapshotFormat)
		case s.vols.allocs[a.GetName()] != nil:
			return fmt.Errorf("%w: volume %q allocated twice", ErrSnapshotFormat, a.GetName())
		case minors[a.GetMinor()] != "":
			return fmt.Errorf("%w: volumes %q and %q share minor %d", ErrSnapshotFormat, minors[a.GetMinor()], a.GetName(), a.GetMinor())
		case ports[a.GetPort()] != "":
			return fmt.Errorf("%w: volumes %q and %q share port %d", ErrSnapshotFormat, ports[a.GetPort()], a.GetName(), a.GetPort())
		case a.GetMinor() >= max(s.vols.nextMinor, VolumeMinorBase) || a.GetPort() >= max(s.vols.nextPort, VolumePortBase):
			return fmt.Errorf("%w: volume %q has minor %d port %d at or past the next ones", ErrSnapshotFormat, a.GetName(), a.GetMinor(), a.GetPort())
		}
		minors[a.GetMinor()], ports[a.GetPort()] = a.GetName(), a.GetName()
		s.vols.allocs[a.GetName()] = a
	}
	return nil
}
