package render

import (
	"maps"
	"slices"
	"strings"
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

// TestServiceMountsVolumeOnItsNodes: the swarm initializer's state labels
// the swarm nodes that hold a volume (replica or diskless) and constrains a
// service mounting it to them; a service without a volume mount and the
// site's own services stay as they are.
func TestServiceMountsVolumeOnItsNodes(t *testing.T) {
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	swarm := func(role hivev1.SwarmRole, init bool) *hivev1.Resource {
		return &hivev1.Resource{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: role, Init: init, Labels: map[string]string{"zone": "a"}}}}
	}
	s := &hivev1.Site{
		Roles: []*hivev1.Role{
			{Name: "mgr", Resources: []*hivev1.Resource{swarm(hivev1.SwarmRole_SWARM_ROLE_MANAGER, true)}},
			{Name: "store", Resources: []*hivev1.Resource{swarm(hivev1.SwarmRole_SWARM_ROLE_WORKER, false), {Key: "volume:pg", Kind: &hivev1.Resource_Volume{Volume: &hivev1.Volume{
				Name: "pg", SizeBytes: 1 << 30, ReplicaRole: "store", Pool: &hivev1.VolumePool{Disk: "/dev/vdb", Vg: "hive", ThinPool: "volumes"},
			}}}}},
		},
		Selectors: []*hivev1.Selector{
			{MatchLabels: map[string]string{"tier": "mgr"}, Roles: []string{"mgr"}},
			{MatchLabels: map[string]string{"tier": "store"}, Roles: []string{"store"}},
		},
		Services: []*hivev1.SwarmService{
			{Name: "db", Image: "r/db:1", Replicas: 1, Constraints: []string{"node.role==worker"}, Mounts: []*hivev1.SwarmServiceMount{{Type: "volume", Source: "pg", Target: "/data"}}},
			{Name: "web", Image: "r/web:1", Replicas: 2},
		},
	}
	st := state.New()
	if r := st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "v", Site: s}}); r.GetError() != "" {
		t.Fatal(r)
	}
	upsert(st, &hivev1.NodeUpsertCommand{Name: "m1", Labels: map[string]string{"tier": "mgr"}, Addresses: []string{"10.0.0.1"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "s1", Labels: map[string]string{"tier": "store"}, Addresses: []string{"10.0.0.2"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "s2", Labels: map[string]string{"tier": "store"}, Addresses: []string{"10.0.0.3"}})
	out, err := New(kr).Render(st, FactsOf(st.Node("m1")))
	if err != nil {
		t.Fatal(err)
	}
	sw := find(out.State, "swarm:node").GetSwarm()
	labels := map[string]string{}
	for _, m := range sw.GetMembers() {
		labels[m.GetName()] = m.GetLabels()["hive.volume.pg"] + "/" + m.GetLabels()["zone"]
	}
	if want := map[string]string{"m1": "/a", "s1": "true/a", "s2": "true/a"}; !maps.Equal(labels, want) {
		t.Errorf("member labels %v, want %v", labels, want)
	}
	var got []string
	for _, svc := range sw.GetServices() {
		got = append(got, svc.GetName()+":"+strings.Join(svc.GetConstraints(), ","))
	}
	if want := []string{"db:node.role==worker,node.labels.hive.volume.pg==true", "web:"}; !slices.Equal(got, want) {
		t.Errorf("services %q, want %q", got, want)
	}
	if c := s.GetServices()[0].GetConstraints(); len(c) != 1 {
		t.Errorf("the site's own service was changed: %v", c)
	}
	if l := s.GetRoles()[1].GetResources()[0].GetSwarm().GetLabels(); len(l) != 1 {
		t.Errorf("the site's own swarm labels were changed: %v", l)
	}
}
