package agent

import (
	"testing"

	"github.com/hivefleet/hive/converge/drbd"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestBuiltinVolumeChecks: a replica of a volume gets a DRBD health check;
// a diskless node and an absent volume do not.
func TestBuiltinVolumeChecks(t *testing.T) {
	dp, err := drbd.New(drbd.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	vol := func(name string, absent bool) *hivev1.Resource {
		return &hivev1.Resource{Key: "volume:" + name, Kind: &hivev1.Resource_Volume{Volume: &hivev1.Volume{Name: name, Absent: absent, DisklessPeers: []string{"web-1"}}}}
	}
	st := &hivev1.NodeState{Node: "store-a", Resources: []*hivev1.Resource{vol("pg", false), vol("old", true)}}
	checks := builtinChecks(dp, nil)(st)
	if len(checks) != 1 || checks[0].Name != "builtin/volume:pg" || checks[0].Def != "volume:pg" {
		t.Errorf("replica checks %+v", checks)
	}
	st.Node = "web-1"
	if checks := builtinChecks(dp, nil)(st); len(checks) != 0 {
		t.Errorf("diskless checks %+v", checks)
	}
}
