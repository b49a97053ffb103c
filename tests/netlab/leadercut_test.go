package netlabtests

import (
	"context"
	"testing"
	"time"
)

// The raft leader's host drops off the network (no RST: packets vanish).
// A push sent right after to a follower must be committed by the new
// leader; it must not wait on the lost one until hivectl gives up.
func TestPushRightAfterLeaderHostCutOff(t *testing.T) {
	// Fixed: a forward in flight is abandoned when raft elects another
	// leader (coordinator.forwardWhileLeader); this test guards it.
	c := newCluster(t, clusterConfig{coordinators: 3})
	c.push(siteFiles("1", 1), false)
	leader := c.leader()
	leader.host.Cut()
	cutAt := time.Now()
	var rest []*node
	for _, n := range c.coords {
		if n != leader {
			rest = append(rest, n)
		}
	}
	c.coords = append(rest, leader)
	g, err := c.pushE(siteFiles("2", 1), false)
	if err != nil {
		t.Fatalf("push %v after the leader %s was cut off: %v", time.Since(cutAt).Round(time.Millisecond), leader.name, err)
	}
	t.Logf("push %d acknowledged %v after the leader was cut off", g, time.Since(cutAt).Round(time.Millisecond))
}

// leader returns the coordinator hivectl members shows as raft leader.
func (c *cluster) leader() *node {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ms, err := c.members(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, m := range ms {
		for _, n := range c.coords {
			if m.Name == n.name && m.Raft == "leader" {
				return n
			}
		}
	}
	c.t.Fatalf("no leader in %+v", ms)
	return nil
}
