package swarm

import (
	"strings"
	"testing"

	dswarm "github.com/moby/moby/api/types/swarm"
)

func TestFindNode(t *testing.T) {
	nodes := []dswarm.Node{
		{ID: "old", Status: dswarm.NodeStatus{State: dswarm.NodeStateDown, Addr: "10.0.0.2"}},
		{ID: "mgr", Status: dswarm.NodeStatus{State: dswarm.NodeStateReady, Addr: "0.0.0.0"}, ManagerStatus: &dswarm.ManagerStatus{Addr: "10.0.0.1:2377"}},
		{ID: "new", Status: dswarm.NodeStatus{State: dswarm.NodeStateReady, Addr: "10.0.0.2"}},
		{ID: "gone", Status: dswarm.NodeStatus{State: dswarm.NodeStateDown, Addr: "10.0.0.3"}},
	}
	for addr, want := range map[string]string{"10.0.0.1": "mgr", "10.0.0.2": "new", "10.0.0.3": "gone", "10.0.0.9": ""} {
		got := ""
		if n := findNode(nodes, addr); n != nil {
			got = n.ID
		}
		if got != want {
			t.Errorf("findNode(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestMissingLabels(t *testing.T) {
	got := missingLabels(map[string]string{"a": "1", "b": "2", "other": "x"}, map[string]string{"a": "1", "b": "3", "c": "4"})
	if strings.Join(got, ",") != "b=3,c=4" {
		t.Errorf("missingLabels = %v", got)
	}
	if got := missingLabels(nil, nil); len(got) != 0 {
		t.Errorf("empty: %v", got)
	}
}
