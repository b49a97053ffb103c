package netlabtests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestGossipFlapKeepsStreams starts NETLAB_SCALE_AGENTS (default 100) real
// agents with 3 coordinators, converges them, then cuts the coordinators'
// gossip only (UDP and TCP to and from port 7402 dropped by iptables in
// each coordinator's namespace; gRPC and raft untouched) until the agents'
// gossip declares every coordinator dead. A push during that flap must
// converge every agent over the watch streams it already had, and at the
// end no agent may have lost or re-opened its watch stream: gossip's
// opinion of a coordinator never tears down a stream that delivers (the
// stream is judged by its own HTTP/2 keepalives).
func TestGossipFlapKeepsStreams(t *testing.T) {
	nAgents := envInt("NETLAB_SCALE_AGENTS", 100)
	start := time.Now()
	c := newCluster(t, clusterConfig{coordinators: 3, agents: nAgents, interval: 5 * time.Minute, agentsCPU: 2})
	g1 := c.push(siteFiles("v1", 1), false)
	c.waitConverged(g1, 3*time.Minute, c.agents...)
	t.Logf("%d agents converged %v after start (load %s)", nAgents, time.Since(start).Round(time.Millisecond), loadAvg())
	c.assertOneStreamEach(t)

	// Cut gossip at every coordinator.
	rules := [][]string{
		{"INPUT", "-p", "udp", "--dport", gossipPort, "-j", "DROP"},
		{"INPUT", "-p", "tcp", "--dport", gossipPort, "-j", "DROP"},
		{"OUTPUT", "-p", "udp", "--dport", gossipPort, "-j", "DROP"},
		{"OUTPUT", "-p", "tcp", "--dport", gossipPort, "-j", "DROP"},
	}
	ctx := context.Background()
	for _, co := range c.coords {
		for _, r := range rules {
			if out, err := co.host.Run(ctx, append([]string{"iptables", "-w", "-I"}, r...)...); err != nil {
				t.Fatalf("block gossip on %s: %v %s", co.name, err, out)
			}
		}
	}
	cut := time.Now()
	// Wait until every agent's gossip called every coordinator dead
	// ("member gone" at info level for coordinators, agent logs).
	var missing []string
	ok := poll(2*time.Minute, func() bool {
		missing = missing[:0]
		for _, a := range c.agents {
			log := a.proc.Log()
			for _, co := range c.coords {
				if !strings.Contains(log, `msg="member gone" component=gossip member=`+co.name+" ") {
					missing = append(missing, a.name+"/"+co.name)
				}
			}
		}
		return len(missing) == 0
	})
	if !ok {
		t.Fatalf("gossip never declared the cut-off coordinators dead on every agent after %v: not yet %d (agent/coordinator), e.g. %v", time.Since(cut).Round(time.Second), len(missing), missing[:min(len(missing), 10)])
	}
	t.Logf("every agent's gossip declared the 3 coordinators dead %v after the cut (load %s)", time.Since(cut).Round(time.Millisecond), loadAvg())

	// A push during the flap reaches everyone over the existing streams.
	pushed := time.Now()
	g2 := c.push(siteFiles("v2", 1), false)
	c.waitConverged(g2, 2*time.Minute, c.agents...)
	for _, a := range c.agents {
		if !a.hasVersion("v2", 1) {
			t.Errorf("%s: file not at v2 after converging on generation %d", a.name, g2)
		}
	}
	t.Logf("push during the gossip cut: all %d agents converged in %v (load %s)", nAgents, time.Since(pushed).Round(time.Millisecond), loadAvg())

	for _, co := range c.coords {
		for _, r := range rules {
			if out, err := co.host.Run(ctx, append([]string{"iptables", "-w", "-D"}, r...)...); err != nil {
				t.Fatalf("unblock gossip on %s: %v %s", co.name, err, out)
			}
		}
	}
	c.assertOneStreamEach(t)
}

// assertOneStreamEach checks that every agent opened exactly one watch
// stream in its life and never lost one.
func (c *cluster) assertOneStreamEach(t *testing.T) {
	t.Helper()
	var bad []string
	for _, a := range c.agents {
		log := a.proc.Log()
		opened := strings.Count(log, `msg="watching desired state"`)
		lost := strings.Count(log, `msg="watch stream lost`)
		if opened != 1 || lost != 0 {
			bad = append(bad, fmt.Sprintf("%s (opened %d, lost %d)", a.name, opened, lost))
		}
	}
	if len(bad) > 0 {
		t.Fatalf("%d agents did not keep one watch stream: %s", len(bad), strings.Join(bad[:min(len(bad), 20)], ", "))
	}
}
