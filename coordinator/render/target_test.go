package render

import (
	"fmt"
	"slices"
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

// TestPastViewsDropped: once no node is rendered at a generation any more,
// its view (a few hundred bytes per node) is dropped when the next view is
// built instead of staying until maxViews newer ones exist; a generation
// some node still targets keeps its view.
func TestPastViewsDropped(t *testing.T) {
	f := newFixture(t)
	names := []string{"db-a", "db-b", "web-1", "web-2", "mgr-1", "mgr-2"}
	renderAll := func() {
		for _, n := range names {
			f.render(t, n)
		}
	}
	views := func() []uint64 {
		f.r.mu.Lock()
		defer f.r.mu.Unlock()
		var out []uint64
		for n := range f.r.views {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	renderAll()
	for g := uint64(2); g <= 4; g++ {
		if r := f.st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: fmt.Sprint("s", g), Site: site()}, BaseGeneration: g - 1}); r.GetError() != "" {
			t.Fatal(r)
		}
		renderAll()
		if got := views(); !slices.Equal(got, []uint64{g}) {
			t.Fatalf("after push %d and every node rendered: views of generations %v, want only %d", g, got, g)
		}
	}
	// A rollout of generation 5 from 4: web-1 moves on, the others stay.
	next := site()
	next.Roles[0].Resources[0] = pkg("curl", "8.0")
	next.Roles[3].Resources[0] = pkg("curl", "8.0")
	if r := f.st.StartRollout(t0, &hivev1.RolloutPushCommand{
		Push:  &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "s5", Site: next}, BaseGeneration: 4},
		Waves: []*hivev1.RolloutWave{{Nodes: []string{"web-1"}}, {Nodes: []string{"web-2"}}},
	}); r.GetError() != "" {
		t.Fatal(r)
	}
	renderAll()
	if got := views(); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("during the rollout: views of generations %v, want 4 and 5", got)
	}
	// A plan's render at an older generation builds its view again.
	out, err := f.r.RenderAt(f.st, f.st.Generation(2), FactsOf(f.st.Node("db-a")))
	if err != nil || out.State.GetGeneration() != 2 {
		t.Fatalf("RenderAt generation 2: %v %v", out, err)
	}
}
