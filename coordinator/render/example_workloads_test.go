package render

import (
	"os"
	"slices"
	"testing"

	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	sitepkg "github.com/hivefleet/hive/site"
)

// TestExampleWorkloads renders deploy/examples/workloads.yaml for its three
// nodes: db-1 and db-2 hold the volume on disk with web-1 diskless, web-1
// initialises the swarm and deploys both services, and the database
// service is kept on the volume's nodes.
func TestExampleWorkloads(t *testing.T) {
	data, err := os.ReadFile("../../deploy/examples/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sitepkg.Parse("workloads.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	st := state.New()
	if r := st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "w", Site: s}}); r.GetError() != "" {
		t.Fatal(r)
	}
	upsert(st, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.1"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-1", Labels: map[string]string{"tier": "db"}, Addresses: []string{"10.0.0.2"}})
	upsert(st, &hivev1.NodeUpsertCommand{Name: "db-2", Labels: map[string]string{"tier": "db"}, Addresses: []string{"10.0.0.3"}})
	r := New(kr)
	render := func(n string) *hivev1.NodeState {
		t.Helper()
		out, err := r.Render(st, FactsOf(st.Node(n)))
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		return out.State
	}
	for _, n := range []string{"web-1", "db-1", "db-2"} {
		v := find(render(n), "volume:pgdata").GetVolume()
		if v == nil || v.GetInitialPrimary() != "db-1" || len(v.GetPeers()) != 3 || !slices.Equal(v.GetDisklessPeers(), []string{"web-1"}) {
			t.Errorf("%s: volume %v", n, v)
		}
	}
	sw := find(render("web-1"), "swarm:node").GetSwarm()
	if !sw.GetInitializer() || len(sw.GetServices()) != 2 || sw.GetRegistry().GetAddress() != "repo.example.internal:5000" {
		t.Fatalf("web-1 swarm: initializer %v, %d services, registry %v", sw.GetInitializer(), len(sw.GetServices()), sw.GetRegistry())
	}
	for _, svc := range sw.GetServices() {
		has := slices.Contains(svc.GetConstraints(), "node.labels.hive.volume.pgdata==true")
		if has != (svc.GetName() == "db") {
			t.Errorf("service %s constraints %v", svc.GetName(), svc.GetConstraints())
		}
	}
	for _, m := range sw.GetMembers() {
		if m.GetLabels()["hive.volume.pgdata"] != "true" {
			t.Errorf("swarm member %s lacks the volume label: %v", m.GetName(), m.GetLabels())
		}
	}
	if sw := find(render("db-1"), "swarm:node").GetSwarm(); sw.GetInitializer() || len(sw.GetServices()) != 0 {
		t.Errorf("db-1 deploys services: %v", sw)
	}
}
