package swarm

import (
	"testing"

	dswarm "github.com/moby/moby/api/types/swarm"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestAvailabilityStep: a member the coordinators hold out of service is
// drained and marked; one hive drained and no longer held is made active;
// a drain an operator set by hand (no mark) is left alone.
func TestAvailabilityStep(t *testing.T) {
	m := &hivev1.SwarmMember{Name: "db-1", Address: "10.0.0.1"}
	node := func(av dswarm.NodeAvailability, marked bool) *dswarm.Node {
		n := &dswarm.Node{ID: "n1"}
		n.Spec.Availability = av
		if marked {
			n.Spec.Labels = map[string]string{DrainedLabel: "true"}
		}
		return n
	}
	for _, tc := range []struct {
		name  string
		node  *dswarm.Node
		drain bool
		want  string // "", "drain" or "active"
	}{
		{"active, held", node(dswarm.NodeAvailabilityActive, false), true, "drain"},
		{"drained by hand, held", node(dswarm.NodeAvailabilityDrain, false), true, ""}, // unmarked: stays drained after
		{"drained by hive, held", node(dswarm.NodeAvailabilityDrain, true), true, ""},
		{"drained by hive, released", node(dswarm.NodeAvailabilityDrain, true), false, "active"},
		{"drained by hand, not held", node(dswarm.NodeAvailabilityDrain, false), false, ""},
		{"active, not held", node(dswarm.NodeAvailabilityActive, false), false, ""},
	} {
		st := availabilityStep(tc.node, m, tc.drain)
		got := ""
		switch {
		case st == nil:
		case st.drain:
			got = "drain"
		default:
			got = "active"
		}
		if got != tc.want {
			t.Errorf("%s: step %q, want %q", tc.name, got, tc.want)
		}
	}
}
