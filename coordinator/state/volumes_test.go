package state

import (
	"bytes"
	"strings"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// volSite is a site with one role "db" declaring the given volumes and
// drbd resources.
func volSite(res ...*hivev1.Resource) *hivev1.Site {
	return &hivev1.Site{Name: "s", Roles: []*hivev1.Role{{Name: "db", Resources: res}}}
}

func vol(name string, size uint64) *hivev1.Resource {
	return &hivev1.Resource{Key: "volume:" + name, Source: "site.yaml:7:9", Kind: &hivev1.Resource_Volume{Volume: &hivev1.Volume{Name: name, SizeBytes: size, ReplicaRole: "db"}}}
}

func hand(name string, minor, port uint32) *hivev1.Resource {
	return &hivev1.Resource{Key: "drbd:" + name, Source: "site.yaml:3:5", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: name, Minor: minor, Port: port}}}
}

func pushSite(s *Store, site *hivev1.Site) *hivev1.CommandResult {
	return s.Push(t0, &hivev1.PushCommand{
		Generation:     &hivev1.Generation{Sha256: site.String(), Site: site},
		BaseGeneration: s.CurrentNumber(),
	})
}

func alloc(t *testing.T, s *Store, name string) (uint32, uint32) {
	t.Helper()
	a := s.VolumeAllocation(name)
	if a == nil {
		t.Fatalf("volume %s not allocated", name)
	}
	return a.GetMinor(), a.GetPort()
}

// TestVolumeAllocation: minors and ports are allocated once, stay across
// pushes, removal from the site and rollback, skip hand-written drbd
// numbers, are never reused, and survive a snapshot.
func TestVolumeAllocation(t *testing.T) {
	s := New()
	const g = 1 << 30
	// A hand-written resource holds the first volume minor and port.
	if r := pushSite(s, volSite(hand("r0", VolumeMinorBase, VolumePortBase), vol("pg", g))); r.GetError() != "" {
		t.Fatal(r)
	}
	if m, p := alloc(t, s, "pg"); m != VolumeMinorBase+1 || p != VolumePortBase+1 {
		t.Fatalf("pg = %d/%d, want the numbers after r0's", m, p)
	}
	// Another volume; pg keeps its numbers; growing is accepted.
	if r := pushSite(s, volSite(vol("pg", 2*g), vol("web", g))); r.GetError() != "" {
		t.Fatal(r)
	}
	if m, p := alloc(t, s, "pg"); m != VolumeMinorBase+1 || p != VolumePortBase+1 {
		t.Fatalf("pg moved to %d/%d", m, p)
	}
	if m, p := alloc(t, s, "web"); m != VolumeMinorBase+2 || p != VolumePortBase+2 {
		t.Fatalf("web = %d/%d", m, p)
	}
	if s.VolumeAllocation("pg").GetSizeBytes() != 2*g || s.VolumeAllocation("pg").GetGeneration() != 1 {
		t.Errorf("pg allocation %v", s.VolumeAllocation("pg"))
	}
	// Shrinking is refused, naming the position and the sizes.
	r := pushSite(s, volSite(vol("pg", g), vol("web", g)))
	if r.GetReason() != ReasonInvalid || !strings.Contains(r.GetError(), "site.yaml:7:9: volume pg: size 1073741824 bytes is smaller than 2147483648 bytes, its size since generation 1: shrinking a volume is refused") {
		t.Fatalf("shrink: %v", r)
	}
	// ... also by a rollback to generation 1.
	if r := s.Rollback(t0, &hivev1.RollbackCommand{Target: 1}); r.GetReason() != ReasonInvalid || !strings.Contains(r.GetError(), "shrinking a volume is refused") {
		t.Fatalf("rollback shrinking: %v", r)
	}
	// A hand-written resource cannot take a volume's numbers, even once the
	// volume left the site.
	r = pushSite(s, volSite(hand("r1", VolumeMinorBase+2, 7000)))
	if r.GetReason() != ReasonInvalid || !strings.Contains(r.GetError(), `site.yaml:3:5: drbd r1: minor 102 is allocated to volume "web"`) {
		t.Fatalf("hand clash: %v", r)
	}
	// Removed from the site: the allocation is kept; re-added: same numbers.
	if r := pushSite(s, volSite(vol("pg", 2*g))); r.GetError() != "" {
		t.Fatal(r)
	}
	if r := pushSite(s, volSite(vol("pg", 2*g), vol("web", g), vol("logs", g))); r.GetError() != "" {
		t.Fatal(r)
	}
	if m, _ := alloc(t, s, "web"); m != VolumeMinorBase+2 {
		t.Errorf("web came back as %d", m)
	}
	if m, p := alloc(t, s, "logs"); m != VolumeMinorBase+3 || p != VolumePortBase+3 {
		t.Errorf("logs = %d/%d", m, p)
	}

	// Snapshot and restore: same allocations, and the next one continues.
	snap, idx := s.Capture()
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, idx); err != nil {
		t.Fatal(err)
	}
	s2, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"pg", "web", "logs"} {
		m1, p1 := alloc(t, s, n)
		m2, p2 := alloc(t, s2, n)
		if m1 != m2 || p1 != p2 {
			t.Errorf("%s after restore: %d/%d, was %d/%d", n, m2, p2, m1, p1)
		}
	}
	if r := pushSite(s2, volSite(vol("pg", 2*g), vol("new", g))); r.GetError() != "" {
		t.Fatal(r)
	}
	if m, p := alloc(t, s2, "new"); m != VolumeMinorBase+4 || p != VolumePortBase+4 {
		t.Errorf("after restore, new = %d/%d: numbers must never be reused", m, p)
	}
}

// TestVolumeSnapshotRejectsClash: a snapshot whose allocations share a
// number is refused.
func TestVolumeSnapshotRejectsClash(t *testing.T) {
	snap := &hivev1.StateSnapshot{Version: SnapshotVersion, NextVolumeMinor: 200, NextVolumePort: 8000, Volumes: []*hivev1.VolumeAllocation{
		{Name: "a", Minor: 100, Port: 7900}, {Name: "b", Minor: 100, Port: 7901},
	}}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, snap, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadSnapshot(&buf); err == nil || !strings.Contains(err.Error(), `volumes "a" and "b" share minor 100`) {
		t.Errorf("err = %v", err)
	}
}
