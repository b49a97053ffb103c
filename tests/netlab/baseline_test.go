package netlabtests

import (
	"strings"
	"testing"
	"time"
)

const baselineNetlabSite = `site: netlab
selectors:
  - match: {tier: db}
    roles: [db]
  - match: {tier: web}
    roles: [web]
roles:
  db:
    hostname: {}
  web:
    hostname: {}
    hosts:
      entries:
        - {address: 192.0.2.1, names: [gw]}
      from_roles: [db]
`

// The hosts block generated from fleet membership (issue 15): the web
// agent's /etc/hosts (under its --root) gets one line per db node, with
// the address the coordinator knows for it, and a db node that joins later
// is added without a push. The host name of every agent is its node name.
func TestHostsFromMembership(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 3, labels: func(i int) []string {
		if i <= 2 { // i counts from 1: a1 and a2 are db nodes
			return []string{"tier=db"}
		}
		return []string{"tier=web"}
	}})
	db1, db2, web := c.agents[0], c.agents[1], c.agents[2]
	g := c.push(baselineNetlabSite, true)
	c.waitConverged(g, 45*time.Second, c.agents...)
	line := func(n *node) string { return n.host.Addr + "\t" + n.name + "\n" }
	hasLines := func(ns ...*node) bool {
		h := web.readFile("/etc/hosts")
		if !strings.Contains(h, "192.0.2.1\tgw\n") {
			return false
		}
		for _, n := range ns {
			if !strings.Contains(h, line(n)) {
				return false
			}
		}
		return true
	}
	if !poll(10*time.Second, func() bool { return hasLines(db1, db2) }) {
		t.Fatalf("web's /etc/hosts:\n%s\nwant lines for %s and %s", web.readFile("/etc/hosts"), db1.host, db2.host)
	}
	for _, n := range c.agents {
		if got := n.readFile("/etc/hostname"); got != n.name+"\n" {
			t.Errorf("%s /etc/hostname = %q", n.name, got)
		}
	}
	if h := db1.readFile("/etc/hosts"); h != "" {
		t.Errorf("db1 got a hosts block:\n%s", h)
	}

	// A db node joins: the web node's block gains its line, no push.
	db3 := c.addAgent("a4", []string{"tier=db"}, c.coords[0])
	if !poll(30*time.Second, func() bool { return hasLines(db1, db2, db3) }) {
		t.Fatalf("after %s joined, web's /etc/hosts:\n%s", db3.host, web.readFile("/etc/hosts"))
	}
}
