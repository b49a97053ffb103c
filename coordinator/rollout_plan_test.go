package coordinator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func webNodes(n int) []planNode {
	var out []planNode
	for i := 1; i <= n; i++ {
		out = append(out, planNode{name: fmt.Sprintf("web-%02d", i), roles: []string{"web"}})
	}
	return out
}

func wavesString(p *wavePlan) string {
	var parts []string
	for _, w := range p.waves {
		s := strings.Join(w.GetNodes(), ",")
		if w.GetCanary() {
			s = "canary:" + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

func u32(v uint32) *uint32 { return &v }

func TestPlanWaves(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nodes  []planNode
		global *hivev1.RolloutPolicy
		roles  map[string]*hivev1.RolloutPolicy
		want   string
	}{
		{"waves of 3", webNodes(7), &hivev1.RolloutPolicy{MaxParallel: 3},
			nil, "web-01,web-02,web-03 | web-04,web-05,web-06 | web-07"},
		{"canary count then waves", webNodes(5), &hivev1.RolloutPolicy{CanaryCount: 1, MaxParallel: 2},
			nil, "canary:web-01 | web-02,web-03 | web-04,web-05"},
		{"canary names", webNodes(4), &hivev1.RolloutPolicy{CanaryNodes: []string{"web-03"}, MaxParallel: 2},
			nil, "canary:web-03 | web-01,web-02 | web-04"},
		{"percent rounds up", webNodes(10), &hivev1.RolloutPolicy{MaxParallelPercent: 25},
			nil, "web-01,web-02,web-03 | web-04,web-05,web-06 | web-07,web-08,web-09 | web-10"},
		{"canary only: the rest at once", webNodes(4), &hivev1.RolloutPolicy{CanaryCount: 1},
			nil, "canary:web-01 | web-02,web-03,web-04"},
		{"role cap", append(webNodes(3), planNode{name: "db-1", roles: []string{"db"}}, planNode{name: "db-2", roles: []string{"db"}}),
			&hivev1.RolloutPolicy{MaxParallel: 10}, map[string]*hivev1.RolloutPolicy{"db": {MaxParallel: 1}},
			"db-1,web-01,web-02,web-03 | db-2"},
		{"role canary", append(webNodes(2), planNode{name: "db-1", roles: []string{"db"}}, planNode{name: "db-2", roles: []string{"db"}}),
			&hivev1.RolloutPolicy{}, map[string]*hivev1.RolloutPolicy{"db": {CanaryCount: 1}},
			"canary:db-1 | db-2,web-01,web-02"},
		{"drbd peers never together", []planNode{
			{name: "a", drbdPeers: []string{"b"}}, {name: "b", drbdPeers: []string{"a"}},
			{name: "c", drbdPeers: []string{"d"}}, {name: "d", drbdPeers: []string{"c"}},
		}, &hivev1.RolloutPolicy{MaxParallel: 4}, nil, "a,c | b,d"},
		{"drbd peers, canary count skips a peer", []planNode{
			{name: "a", drbdPeers: []string{"b"}}, {name: "b", drbdPeers: []string{"a"}}, {name: "c"},
		}, &hivev1.RolloutPolicy{CanaryCount: 2}, nil, "canary:a,c | b"},
		{"3 managers: one per wave", []planNode{
			{name: "m1", manager: true}, {name: "m2", manager: true}, {name: "m3", manager: true}, {name: "w1"}, {name: "w2"},
		}, &hivev1.RolloutPolicy{MaxParallel: 5}, nil, "m1,w1,w2 | m2 | m3"},
		{"5 managers: two per wave", []planNode{
			{name: "m1", manager: true}, {name: "m2", manager: true}, {name: "m3", manager: true}, {name: "m4", manager: true}, {name: "m5", manager: true},
		}, &hivev1.RolloutPolicy{MaxParallel: 5}, nil, "m1,m2 | m3,m4 | m5"},
		{"5 managers, one down: one per wave", []planNode{
			{name: "m1", manager: true}, {name: "m2", manager: true, down: true}, {name: "m3", manager: true}, {name: "m4", manager: true}, {name: "m5", manager: true},
		}, &hivev1.RolloutPolicy{MaxParallel: 5}, nil, "m1 | m2 | m3 | m4 | m5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := planWaves(tc.nodes, tc.global, tc.roles)
			if err != nil {
				t.Fatal(err)
			}
			if got := wavesString(p); got != tc.want {
				t.Fatalf("waves\n got %s\nwant %s", got, tc.want)
			}
			// Deterministic whatever the input order.
			rev := append([]planNode(nil), tc.nodes...)
			for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
				rev[i], rev[j] = rev[j], rev[i]
			}
			if p2, _ := planWaves(rev, tc.global, tc.roles); wavesString(p2) != tc.want {
				t.Fatalf("reversed input planned %s", wavesString(p2))
			}
		})
	}
}

// TestPlanQuorumInvariants checks on many generated fleets that no wave
// holds two DRBD peers or more managers than keep a majority, and that
// every node is planned exactly once.
func TestPlanQuorumInvariants(t *testing.T) {
	for seed := 1; seed <= 200; seed++ {
		var nodes []planNode
		n := 3 + seed%17
		for i := 0; i < n; i++ {
			nodes = append(nodes, planNode{name: fmt.Sprintf("n%02d", i), manager: (i*seed)%3 == 0})
		}
		// DRBD pairs and triples.
		for i := 0; i+2 < n; i += 3 + seed%2 {
			group := []int{i, i + 1}
			if seed%3 == 0 {
				group = append(group, i+2)
			}
			for _, a := range group {
				for _, b := range group {
					if a != b {
						nodes[a].drbdPeers = append(nodes[a].drbdPeers, nodes[b].name)
					}
				}
			}
		}
		managers := 0
		for _, nd := range nodes {
			if nd.manager {
				managers++
			}
		}
		pol := &hivev1.RolloutPolicy{MaxParallel: uint32(1 + seed%6), CanaryCount: uint32(seed % 3)}
		p, err := planWaves(nodes, pol, nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		seen := map[string]bool{}
		peers := map[string]map[string]bool{}
		mgr := map[string]bool{}
		for _, nd := range nodes {
			peers[nd.name] = map[string]bool{}
			for _, p := range nd.drbdPeers {
				peers[nd.name][p] = true
			}
			mgr[nd.name] = nd.manager
		}
		for wi, w := range p.waves {
			m := 0
			for i, a := range w.GetNodes() {
				if seen[a] {
					t.Fatalf("seed %d: %s planned twice", seed, a)
				}
				seen[a] = true
				if mgr[a] {
					m++
				}
				for _, b := range w.GetNodes()[i+1:] {
					if peers[a][b] || peers[b][a] {
						t.Fatalf("seed %d wave %d: DRBD peers %s and %s together", seed, wi, a, b)
					}
				}
			}
			if m > ManagerWaveLimit(managers, 0) {
				t.Fatalf("seed %d wave %d: %d of %d managers", seed, wi, m, managers)
			}
			if managers >= 3 && managers-m <= managers/2 {
				t.Fatalf("seed %d wave %d: managers lose their majority (%d of %d out)", seed, wi, m, managers)
			}
		}
		if len(seen) != n {
			t.Fatalf("seed %d: %d of %d nodes planned", seed, len(seen), n)
		}
	}
}

func TestPlanErrorsAndGates(t *testing.T) {
	nodes := []planNode{{name: "a", drbdPeers: []string{"b"}, roles: []string{"db"}}, {name: "b", drbdPeers: []string{"a"}, roles: []string{"db"}}, {name: "c", roles: []string{"web"}}}
	if _, err := planWaves(nodes, &hivev1.RolloutPolicy{CanaryNodes: []string{"zz"}}, nil); err == nil || !strings.Contains(err.Error(), `canary node "zz" is not among`) {
		t.Fatalf("unknown canary: %v", err)
	}
	if _, err := planWaves(nodes, &hivev1.RolloutPolicy{CanaryNodes: []string{"a", "b"}}, nil); err == nil || !strings.Contains(err.Error(), "peers of a DRBD resource") {
		t.Fatalf("peer canaries: %v", err)
	}
	p, err := planWaves(nodes, &hivev1.RolloutPolicy{CanaryCount: 1, MinHealthyTime: durationpb.New(time.Second)},
		map[string]*hivev1.RolloutPolicy{"db": {MinHealthyTime: durationpb.New(time.Minute), OnFailure: hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK}})
	if err != nil {
		t.Fatal(err)
	}
	// Waves: canary a (db) | b,c? no: b is a's peer but a is in another wave, so b,c.
	if got := wavesString(p); got != "canary:a | b,c" {
		t.Fatalf("waves %s", got)
	}
	w := p.waves[1]
	if w.GetMinHealthyTime().AsDuration() != time.Minute || w.GetHealthyDeadline().AsDuration() != DefaultHealthyDeadline || w.GetOnFailure() != hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK {
		t.Fatalf("gate of wave 2: %v", w)
	}
	if !needsRollout(&hivev1.RolloutPolicy{}, map[string]*hivev1.RolloutPolicy{"db": {MaxParallel: 1}}) || needsRollout(&hivev1.RolloutPolicy{MinHealthyTime: durationpb.New(time.Second)}, nil) {
		t.Fatal("needsRollout")
	}
	eff := effectivePolicy(&hivev1.RolloutPolicy{CanaryNodes: []string{"a"}, MaxParallelPercent: 10}, &hivev1.RolloutOverride{CanaryCount: u32(2), MaxParallel: u32(3)})
	if !proto.Equal(eff, &hivev1.RolloutPolicy{CanaryCount: 2, MaxParallel: 3}) {
		t.Fatalf("override: %v", eff)
	}
}
