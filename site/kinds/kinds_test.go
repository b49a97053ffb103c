package kinds

import (
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestEveryOneofFieldHasAKind guards the table against a kind added to
// site.proto without its entry.
func TestEveryOneofFieldHasAKind(t *testing.T) {
	fs := oneof.Fields()
	for i := 0; i < fs.Len(); i++ {
		if Lookup(string(fs.Get(i).Name())) == nil {
			t.Errorf("Resource.kind field %s has no entry in kinds.All", fs.Get(i).Name())
		}
	}
	if fs.Len() != len(All) {
		t.Errorf("%d oneof fields, %d kinds", fs.Len(), len(All))
	}
	sections := map[string]bool{}
	for _, k := range All {
		if sections[k.Section] {
			t.Errorf("section %q used twice", k.Section)
		}
		sections[k.Section] = true
	}
}

func TestKey(t *testing.T) {
	for _, c := range []struct {
		r    *hivev1.Resource
		want string
	}{
		{&hivev1.Resource{Kind: &hivev1.Resource_Repo{Repo: &hivev1.Repo{Name: "acme"}}}, "repo:acme"},
		{&hivev1.Resource{Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx"}}}, "package:nginx"},
		{&hivev1.Resource{Kind: &hivev1.Resource_File{File: &hivev1.File{Path: "/etc/x"}}}, "file:/etc/x"},
		{&hivev1.Resource{Kind: &hivev1.Resource_Service{Service: &hivev1.Service{Name: "nginx"}}}, "service:nginx.service"},
		{&hivev1.Resource{Kind: &hivev1.Resource_Service{Service: &hivev1.Service{Name: "x.timer"}}}, "service:x.timer"},
		{&hivev1.Resource{Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{}}}, "firewall:filter"},
		{&hivev1.Resource{Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0"}}}, "drbd:r0"},
		{&hivev1.Resource{Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{}}}, "swarm:node"},
		{&hivev1.Resource{Key: "package:x"}, ""},
		{nil, ""},
	} {
		if got := Key(c.r); got != c.want {
			t.Errorf("Key(%v) = %q, want %q", c.r, got, c.want)
		}
	}
}

func TestRankFollowsTable(t *testing.T) {
	for i, n := range Names() {
		if Rank(n) != i {
			t.Errorf("Rank(%s) = %d, want %d", n, Rank(n), i)
		}
	}
	if Rank("nope") != len(All) {
		t.Errorf("unknown kind ranks %d", Rank("nope"))
	}
}

func TestMergeSwarmConflicts(t *testing.T) {
	a := &hivev1.Swarm{Labels: map[string]string{"zone": "a"}, AdvertiseAddr: "10.0.0.1"}
	if err := Lookup("swarm").Merge(a, &hivev1.Swarm{Labels: map[string]string{"zone": "b"}}); err == nil || err.Error() != `label zone: "a" vs "b"` {
		t.Errorf("label conflict: %v", err)
	}
	if err := Lookup("swarm").Merge(a, &hivev1.Swarm{AdvertiseAddr: "10.0.0.2"}); err == nil {
		t.Error("advertise_addr conflict not reported")
	}
	if err := Lookup("swarm").Merge(a, &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Init: true}); err != nil || a.Role != hivev1.SwarmRole_SWARM_ROLE_MANAGER || !a.Init {
		t.Errorf("manager merge: %v %v", err, a)
	}
}
