package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// volumeSite is testSite plus volumes (name → size in MiB) on role db.
func volumeSite(version string, vols map[string]uint64) *hivev1.Site {
	s := testSite(version)
	for _, r := range s.Roles {
		if r.Name != "db" {
			continue
		}
		for name, mib := range vols {
			r.Resources = append(r.Resources, &hivev1.Resource{Key: "volume:" + name, Kind: &hivev1.Resource_Volume{Volume: &hivev1.Volume{
				Name: name, SizeBytes: mib << 20, Fstype: "ext4", Protocol: "C", ReplicaRole: "db",
				Pool: &hivev1.VolumePool{Disk: "/dev/vdc", Vg: "hive", ThinPool: "volumes"},
			}}})
		}
	}
	return s
}

// allocations returns "name=minor/port" of every volume in n's store.
func allocations(n *node) string {
	var out string
	for _, a := range n.fsm.Store().VolumeAllocations() {
		out += fmt.Sprintf("%s=%d/%d ", a.GetName(), a.GetMinor(), a.GetPort())
	}
	return out
}

// TestVolumeAllocationCluster: volume minors and ports are allocated once
// through raft, identical on every coordinator, unchanged by later pushes,
// a snapshot install and a leader change, rendered into the replicas'
// states; a shrinking push is refused.
func TestVolumeAllocationCluster(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{snapshotThreshold: 8, trailingLogs: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	l := leader(t, nodes)
	f := followers(nodes, l)
	admin := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	if _, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: volumeSite("0", map[string]uint64{"pg": 64}), Force: true})
	const want1 = "pg=100/7900 "
	waitFor(t, 20*time.Second, "pg allocated everywhere", func() bool {
		for _, n := range nodes {
			if allocations(n) != want1 {
				return false
			}
		}
		return true
	})

	// Rendered into a replica's state, from any coordinator.
	if err := l.registerNode(ctx, &registration{name: "db-0", addrs: []string{"10.0.0.1"}, version: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := l.registerNode(ctx, &registration{name: "db-1", addrs: []string{"10.0.0.2"}, version: "t"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "rendered volume on a follower", func() bool {
		st, err := tc.dial(t, f[1].GRPCAddr(), pki.KindAdmin, "alice").GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "db-1"})
		if err != nil {
			return false
		}
		for _, r := range st.GetState().GetResources() {
			if v := r.GetVolume(); v != nil {
				return v.GetMinor() == 100 && v.GetPort() == 7900 && v.GetInitialPrimary() == "db-0" && len(v.GetPeers()) == 2
			}
		}
		return false
	})

	// A lagging follower catches up through a snapshot.
	lag := f[1]
	lag.layer.setBlocked(true)
	la := tc.dial(t, l.GRPCAddr(), pki.KindAdmin, "alice")
	for i := 1; i <= 20; i++ {
		vols := map[string]uint64{"pg": 64 + uint64(i)}
		if i >= 10 {
			vols["web"] = 32
		}
		pushRetry(ctx, t, la, &hivev1.PushRequest{Site: volumeSite(fmt.Sprint(i), vols), Force: true})
	}
	waitFor(t, 20*time.Second, "a leader snapshot", func() bool {
		fs, err := raft.NewFileSnapshotStore(l.cfg.DataDir, 2, nil)
		if err != nil {
			return false
		}
		metas, _ := fs.List()
		return len(metas) > 0 && metas[0].Index > lag.fsm.Store().Index()+4
	})
	restores := lag.fsm.Restores()
	lag.layer.setBlocked(false)
	const want2 = "pg=100/7900 web=101/7901 "
	waitFor(t, 30*time.Second, "the lagging follower restored", func() bool {
		return lag.fsm.Restores() > restores && allocations(lag) == want2
	})

	// Shrinking is refused by whichever server leads.
	if _, err := la.Push(ctx, &hivev1.PushRequest{Site: volumeSite("x", map[string]uint64{"pg": 64, "web": 32}), Force: true}); err == nil {
		t.Fatal("shrinking push accepted")
	} else {
		t.Logf("shrink refused: %v", err)
	}

	// Leader change: the new leader keeps the numbers and allocates the next.
	l.crash(t)
	c := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	pushRetry(ctx, t, c, &hivev1.PushRequest{Site: volumeSite("after", map[string]uint64{"pg": 100, "web": 32, "logs": 16}), Force: true})
	const want3 = "logs=102/7902 pg=100/7900 web=101/7901 "
	waitFor(t, 30*time.Second, "allocations after the leader change", func() bool {
		return allocations(f[0]) == want3 && allocations(f[1]) == want3
	})
}

// TestRolloutVolumePeers: a volume's peers count as DRBD peers when the
// rollout planner cuts waves.
func TestRolloutVolumePeers(t *testing.T) {
	st := &hivev1.NodeState{Resources: []*hivev1.Resource{{Key: "volume:pg", Kind: &hivev1.Resource_Volume{Volume: &hivev1.Volume{
		Name: "pg", Peers: []*hivev1.VolumePeer{{Name: "a"}, {Name: "b"}, {Name: "w"}},
	}}}}}
	peers, _ := stateQuorumFacts(st, "a")
	if fmt.Sprint(peers) != "[b w]" {
		t.Errorf("peers %v", peers)
	}
}
