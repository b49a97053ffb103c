package render

import (
	"testing"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRenderChecks: a node's state carries the checks of its roles (role
// filled, source cleared), and a change of a check changes the state hash.
func TestRenderChecks(t *testing.T) {
	f := newFixture(t)
	s := proto.Clone(site()).(*hivev1.Site)
	for _, r := range s.Roles {
		switch r.Name {
		case "web":
			r.Checks = []*hivev1.HealthCheck{{Name: "home", IntervalMs: 10000, TimeoutMs: 5000, Failures: 3, Source: "x.yaml:1:1",
				Kind: &hivev1.HealthCheck_Http{Http: &hivev1.CheckHTTP{Url: "http://127.0.0.1/", Status: 200}}}}
		case "base":
			r.Checks = []*hivev1.HealthCheck{{Name: "ssh", IntervalMs: 10000, TimeoutMs: 5000, Failures: 3,
				Kind: &hivev1.HealthCheck_Tcp{Tcp: &hivev1.CheckTCP{Address: "127.0.0.1:22"}}}}
		}
	}
	before := f.render(t, "web-1").GetHash()
	f.st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Number: 2, Parent: 1, Sha256: "s2", Site: s}, BaseGeneration: 1})
	web := f.render(t, "web-1")
	if len(web.GetChecks()) != 2 || web.Checks[0].GetRole() != "base" || web.Checks[1].GetRole() != "web" || web.Checks[1].GetSource() != "" {
		t.Fatalf("checks = %v", web.GetChecks())
	}
	if web.GetHash() == before {
		t.Fatal("hash did not change with the checks")
	}
	if h, _ := Hash(web); h != web.GetHash() {
		t.Fatalf("Hash = %s, rendered %s", h, web.GetHash())
	}
	if db := f.render(t, "db-a"); len(db.GetChecks()) != 1 || db.Checks[0].GetName() != "ssh" {
		t.Fatalf("db checks = %v", db.GetChecks())
	}
}
