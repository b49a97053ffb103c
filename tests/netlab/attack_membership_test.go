package netlabtests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/internal/netlab"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// gossipFake (NETLAB_HELPER=gossipfake) is an attacker holding only the
// gossip key (NETLAB_GOSSIP_KEY_FILE): it joins NETLAB_JOIN as
// NETLAB_NAME from NETLAB_HOST and advertises kind=COORDINATOR with a raft
// address (a listener on port 7401 that accepts and says nothing) and a
// gRPC address where nothing listens. It runs until SIGTERM.
func gossipFake() int {
	env := os.Getenv
	text, err := os.ReadFile(env("NETLAB_GOSSIP_KEY_FILE"))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	key, err := gossip.ParseKey(text)
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	host := env("NETLAB_HOST")
	ln, err := net.Listen("tcp", net.JoinHostPort(host, raftPort))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	gc := gossip.DefaultConfig()
	gc.Name, gc.BindAddr, gc.Join, gc.Key = env("NETLAB_NAME"), net.JoinHostPort(host, gossipPort), []string{env("NETLAB_JOIN")}, key
	gc.Meta = &hivev1.MemberMeta{
		Kind:     hivev1.MemberKind_MEMBER_KIND_COORDINATOR,
		GrpcAddr: net.JoinHostPort(host, grpcPort),
		RaftAddr: ln.Addr().String(),
	}
	g, err := gossip.New(gc)
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-g.Joined()
		fmt.Println("JOINED", gc.Name, "raft", gc.Meta.RaftAddr)
	}()
	_ = g.Run(ctx)
	return 0
}

// raftPeer is one entry of `hivectl peers list -o json`.
type raftPeer struct {
	ID    string `json:"id"`
	Voter bool   `json:"voter"`
}

// Issue 11, finding 1: three processes holding only the gossip key, each
// advertising itself as a coordinator with a raft address, used to be
// added as raft voters by the leader, leaving a three-server cluster
// without a leader for good. Now they never enter the raft configuration:
// the cluster keeps its leader and takes pushes, before and after the
// fakes leave.
func TestGossipKeyHolderCannotJoinRaft(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 3})
	var fakes []*netlab.Proc
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("x%d", i)
		h := c.lab.AddHost(name)
		fakes = append(fakes, h.StartEnv("gossipfake", []string{
			"NETLAB_HELPER=gossipfake",
			"GORACE=atexit_sleep_ms=0",
			"NETLAB_NAME=" + name,
			"NETLAB_HOST=" + h.Addr,
			"NETLAB_JOIN=" + c.coords[0].host.Addr + ":" + gossipPort,
			"NETLAB_GOSSIP_KEY_FILE=" + c.gossipKey,
		}, os.Args[0]))
	}
	// Every coordinator sees the fakes alive as coordinators in gossip.
	var last string
	if !poll(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := c.members(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		n := 0
		for _, m := range ms {
			if strings.HasPrefix(m.Name, "x") && m.Kind == "coordinator" && m.Gossip == "alive" {
				n++
			}
		}
		last = dump(ms)
		return n == 3
	}) {
		for _, f := range fakes {
			t.Log(f.Log())
		}
		t.Fatalf("the fakes never showed in members: %s", last)
	}
	// The leader evaluated (and refused) each fake: before the fix it had
	// added them as voters in that same round.
	if !poll(30*time.Second, func() bool {
		if ps := c.peers(t); len(ps) != 3 {
			t.Fatalf("fakes entered the raft configuration: %s", dump(ps))
		}
		for _, f := range []string{"x1", "x2", "x3"} {
			found := false
			for _, n := range c.coords {
				found = found || firstLine(n.proc.Log(), "did not prove it; not added to raft", "member="+f+" ") != ""
			}
			if !found {
				return false
			}
		}
		return true
	}) {
		t.Fatal("the leader never logged refusing x1, x2 and x3")
	}
	peers := c.peers(t)
	if len(peers) != 3 {
		t.Fatalf("raft configuration with fakes in gossip: %s; want c1, c2, c3 only", dump(peers))
	}
	g1 := c.push(siteFiles("1", 1), false)
	t.Logf("with the fakes in gossip: leader %s, generation %d pushed", c.leader().name, g1)
	for _, f := range fakes {
		if err := f.Stop(5 * time.Second); err != nil {
			t.Logf("stop fake: %v", err)
		}
	}
	if g2 := c.push(siteFiles("2", 1), false); g2 <= g1 {
		t.Fatalf("push after the fakes left: generation %d after %d", g2, g1)
	}
	t.Logf("after the fakes left: leader %s", c.leader().name)
	for _, n := range c.coords {
		if l := firstLine(n.proc.Log(), "did not prove it"); l != "" {
			t.Logf("%s: %s", n.name, l)
		}
	}
}

// peers returns `hivectl peers list -o json`.
func (c *cluster) peers(t testing.TB) []raftPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := c.ctl(ctx, "peers", "list", "-o", "json")
	if err != nil {
		t.Fatalf("peers list: %v\n%s", err, out)
	}
	var ps []raftPeer
	if err := json.Unmarshal(out, &ps); err != nil {
		t.Fatalf("decode peers: %v: %s", err, out)
	}
	return ps
}

// firstLine returns the first line of s containing every one of subs.
func firstLine(s string, subs ...string) string {
	for _, l := range strings.Split(s, "\n") {
		all := true
		for _, sub := range subs {
			all = all && strings.Contains(l, sub)
		}
		if all {
			return l
		}
	}
	return ""
}
