package gossip_test

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hivefleet/hive/gossip"
)

// TestSizeFor checks that memberlist's LAN timing is kept up to 64
// members and that, beyond, probing and gossip slow down monotonically
// with the pool, never faster than LAN and never slower than WAN's probe
// interval.
func TestSizeFor(t *testing.T) {
	lan := memberlist.DefaultLANConfig()
	for _, n := range []int{0, 1, 64} {
		mc := memberlist.DefaultLANConfig()
		gossip.SizeFor(mc, n)
		if mc.ProbeInterval != lan.ProbeInterval || mc.GossipInterval != lan.GossipInterval || mc.ProbeTimeout != lan.ProbeTimeout || mc.SuspicionMult != lan.SuspicionMult {
			t.Fatalf("n=%d changed LAN timing: %+v", n, mc)
		}
	}
	prev := memberlist.DefaultLANConfig()
	for _, n := range []int{65, 256, 257, 512, 1000, 1024, 5000, 100000} {
		mc := memberlist.DefaultLANConfig()
		gossip.SizeFor(mc, n)
		if mc.ProbeInterval < prev.ProbeInterval || mc.GossipInterval < prev.GossipInterval || mc.ProbeTimeout < prev.ProbeTimeout {
			t.Errorf("n=%d: timing %v/%v/%v faster than at a smaller pool (%v/%v/%v)", n, mc.ProbeInterval, mc.GossipInterval, mc.ProbeTimeout, prev.ProbeInterval, prev.GossipInterval, prev.ProbeTimeout)
		}
		if mc.ProbeInterval <= lan.ProbeInterval || mc.ProbeInterval > memberlist.DefaultWANConfig().ProbeInterval {
			t.Errorf("n=%d: probe interval %v outside (LAN, WAN]", n, mc.ProbeInterval)
		}
		if mc.ProbeTimeout >= mc.ProbeInterval {
			t.Errorf("n=%d: probe timeout %v not below the interval %v", n, mc.ProbeTimeout, mc.ProbeInterval)
		}
		prev = mc
	}
	one := memberlist.DefaultLANConfig()
	gossip.SizeFor(one, 1000)
	if one.ProbeInterval != 4*time.Second || one.GossipInterval != 500*time.Millisecond {
		t.Errorf("1,000 members: probe %v gossip %v, want 4s and 500ms (docs/operations.md)", one.ProbeInterval, one.GossipInterval)
	}
}

// TestJoinMovesOnToAnotherSeed: the first seed tried is dead (nothing
// listens there); the join goes on to the next one in the same round and
// succeeds, and a negative pool size or join spread is refused.
func TestJoinMovesOnToAnotherSeed(t *testing.T) {
	a := start(t, config(t, "a", nil, agentMeta("x")))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg := config(t, "b", []string{dead, a.LocalAddr()}, agentMeta("x"))
	cfg.JoinSpread = 200 * time.Millisecond
	cfg.PoolSize = 500 // LAN sizing is not used by the local profile; validated all the same
	began := time.Now()
	b := start(t, cfg)
	select {
	case <-b.Joined():
	case <-time.After(10 * time.Second):
		t.Fatal("b never joined through the live seed")
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("join took %v: it waited for a backoff instead of trying the next seed", d)
	}
	waitFor(t, "a sees b", 5*time.Second, func() bool { return stateOf(a.Gossip, "b") == gossip.StateAlive })

	for _, mod := range []func(*gossip.Config){
		func(c *gossip.Config) { c.PoolSize = -1 },
		func(c *gossip.Config) { c.JoinSpread = -time.Second },
		func(c *gossip.Config) { c.RejoinMax = -time.Second },
	} {
		c := gossip.DefaultConfig()
		c.Name = "n"
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("Validate accepted %+v", c)
		}
	}
}
