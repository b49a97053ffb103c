package render

import (
	"slices"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestReportedLabelsSelectNothing: a node that reports tier=db about
// itself (a fact) without it being bound in its certificate or set by an
// operator gets neither the db role nor its firewall or DRBD peers, and
// does not appear among db's peers; the reported label is in its facts.
func TestReportedLabelsSelectNothing(t *testing.T) {
	f := newFixture(t)
	f.st.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "db"}, Addresses: []string{"10.0.1.1"},
		Identity: &hivev1.NodeIdentity{Source: "certificate", Labels: map[string]string{"tier": "web"}}})
	out, err := f.r.Render(f.st, FactsOf(f.st.Node("web-1")))
	if err != nil {
		t.Fatal(err)
	}
	facts := out.State.GetFacts()
	if slices.Contains(facts.GetRoles(), "db") {
		t.Fatalf("reported tier=db gave the db role: %v", facts.GetRoles())
	}
	if facts.GetLabels()["tier"] != "web" || facts.GetReportedLabels()["tier"] != "db" {
		t.Fatalf("facts labels %v reported %v", facts.GetLabels(), facts.GetReportedLabels())
	}
	// db-a's firewall admits web's addresses, not web-1 as a db peer.
	db, err := f.r.Render(f.st, FactsOf(f.st.Node("db-a")))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range db.State.GetResources() {
		if d := r.GetDrbd(); d != nil {
			for _, p := range d.GetPeers() {
				if p.GetName() == "web-1" {
					t.Fatalf("web-1 is a drbd peer of db-a: %v", d.GetPeers())
				}
			}
		}
	}
	// An operator label does select.
	if r := f.st.LabelNode(t0, &hivev1.NodeLabelCommand{Name: "web-1", Set: map[string]string{"tier": "db"}}); r.GetError() != "" {
		t.Fatal(r)
	}
	out, err = f.r.Render(f.st, FactsOf(f.st.Node("web-1")))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(out.State.GetFacts().GetRoles(), "db") {
		t.Fatalf("operator tier=db: roles %v", out.State.GetFacts().GetRoles())
	}
}
