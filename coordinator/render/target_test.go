package render

import (
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRenderTargets: during a rollout each node is rendered at its own
// target generation, and renders of both generations are cached side by
// side (one view per generation; the second round is all hits).
func TestRenderTargets(t *testing.T) {
	f := newFixture(t)
	next := site()
	next.Roles[0].Resources[0] = pkg("curl", "8.0")
	next.Roles[3].Resources[0] = pkg("curl", "8.0")
	r := f.st.StartRollout(t0, &hivev1.RolloutPushCommand{
		Push:  &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "s2", Site: next}, BaseGeneration: 1},
		Waves: []*hivev1.RolloutWave{{Nodes: []string{"web-1"}}, {Nodes: []string{"web-2"}}},
	})
	if r.GetError() != "" {
		t.Fatal(r)
	}
	version := func(name string) (uint64, string) {
		st := f.render(t, name)
		return st.GetGeneration(), find(st, "package:curl").GetPackage().GetVersion()
	}
	for round := 0; round < 2; round++ {
		for name, want := range map[string]uint64{"web-1": 2, "web-2": 1, "db-a": 1} {
			g, v := version(name)
			if g != want || (g == 2) != (v == "8.0") {
				t.Fatalf("%s rendered at generation %d with curl %q, want generation %d", name, g, v, want)
			}
		}
	}
	hits, misses := f.r.Stats()
	if misses != 3 || hits != 3 {
		t.Fatalf("hits %d, misses %d; want 3 and 3", hits, misses)
	}
	// RenderAt renders at a given generation regardless of the target.
	out, err := f.r.RenderAt(f.st, f.st.Generation(2), FactsOf(f.st.Node("db-a")))
	if err != nil || out.State.GetGeneration() != 2 {
		t.Fatalf("RenderAt: %v %v", out, err)
	}
	// Opening the next wave moves web-2 on.
	f.st.OpenWave(t0, &hivev1.RolloutWaveCommand{Generation: 2, Wave: 1})
	if g, _ := version("web-2"); g != 2 {
		t.Fatalf("web-2 after its wave opened: generation %d", g)
	}
}
