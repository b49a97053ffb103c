package coordinator

import (
	"context"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestDrbdNodeIDsThroughServer: nodes registered through the server (the
// leader stamps the ordinal) keep their DRBD node ids when a lower-named
// node joins later.
func TestDrbdNodeIDsThroughServer(t *testing.T) {
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("1")}); err != nil {
		t.Fatal(err)
	}
	ids := func(node string) map[string]uint32 {
		t.Helper()
		st, err := c.GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: node})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint32{}
		for _, r := range st.GetState().GetResources() {
			for _, p := range r.GetDrbd().GetPeers() {
				m[p.GetName()] = p.GetNodeId()
			}
		}
		return m
	}
	if err := n.registerNode(ctx, &registration{name: "db-2", addrs: []string{"10.0.0.2"}, version: "t"}); err != nil {
		t.Fatal(err)
	}
	if got := ids("db-2"); len(got) != 1 || got["db-2"] != 0 {
		t.Fatalf("db-2 alone: %v", got)
	}
	if err := n.registerNode(ctx, &registration{name: "db-0", addrs: []string{"10.0.0.1"}, version: "t"}); err != nil {
		t.Fatal(err)
	}
	if got := ids("db-0"); len(got) != 2 || got["db-2"] != 0 || got["db-0"] != 1 {
		t.Fatalf("after db-0 joined: %v; want db-2 0, db-0 1", got)
	}
}
