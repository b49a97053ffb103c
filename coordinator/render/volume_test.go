package render

import (
	"testing"

	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestVolumePlacement: a volume declared in role "cluster" goes to the
// nodes of its replicas role (disk) and diskless role, never to a node that
// only holds the declaring role; peers carry registration-order node ids,
// the first replica by name makes the first filesystem, and minor and port
// come from the store's allocation.
func TestVolumePlacement(t *testing.T) {
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	s := &hivev1.Site{
		Roles: []*hivev1.Role{
			{Name: "cluster", Resources: []*hivev1.Resource{{Key: "volume:pg", Kind: &hivev1.Resource_Volume{Volume: &hivev1.Volume{
				Name: "pg", SizeBytes: 1 << 30, ReplicaRole: "store", DisklessRole: "web",
				Pool: &hivev1.VolumePool{Disk: "/dev/vdb", Vg: "hive", ThinPool: "volumes"},
			}}}}},
			{Name: "store"}, {Name: "web"},
		},
		Selectors: []*hivev1.Selector{
			{MatchLabels: map[string]string{"tier": "store"}, Roles: []string{"store"}},
			{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}},
			{MatchLabels: map[string]string{"tier": "other"}, Roles: []string{"cluster"}},
		},
	}
	st := state.New()
	if r := st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "v", Site: s}}); r.GetError() != "" {
		t.Fatal(r)
	}
	upsert(st, &hivev1.NodeUpsertCommand{Name: "store-b", Labels: map[string]string{"tier": "store"}, Addresses: []string{"10.0.0.2"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.3"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "store-a", Labels: map[string]string{"tier": "store"}, Addresses: []string{"10.0.0.1"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "other-1", Labels: map[string]string{"tier": "other"}, Addresses: []string{"10.0.0.9"}})
	r := New(kr)
	vol := func(node string) *hivev1.Volume {
		t.Helper()
		out, err := r.Render(st, FactsOf(st.Node(node)))
		if err != nil {
			t.Fatal(err)
		}
		return find(out.State, "volume:pg").GetVolume()
	}
	for _, n := range []string{"store-a", "store-b", "web-1"} {
		v := vol(n)
		if v == nil {
			t.Fatalf("%s has no volume", n)
		}
		if v.GetMinor() != state.VolumeMinorBase || v.GetPort() != state.VolumePortBase || v.GetInitialPrimary() != "store-a" {
			t.Errorf("%s: minor %d port %d initial %s", n, v.GetMinor(), v.GetPort(), v.GetInitialPrimary())
		}
		var got []string
		for _, p := range v.GetPeers() {
			got = append(got, p.GetName()+"="+p.GetAddress())
			if want := map[string]uint32{"store-b": 0, "web-1": 1, "store-a": 2}[p.GetName()]; p.GetNodeId() != want {
				t.Errorf("%s: %s node id %d, want %d", n, p.GetName(), p.GetNodeId(), want)
			}
		}
		if len(got) != 3 || len(v.GetDisklessPeers()) != 1 || v.GetDisklessPeers()[0] != "web-1" {
			t.Errorf("%s: peers %v diskless %v", n, got, v.GetDisklessPeers())
		}
	}
	if v := vol("other-1"); v != nil {
		t.Errorf("other-1 (declaring role only) got the volume: %v", v)
	}
}
