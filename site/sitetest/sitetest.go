// Package sitetest holds sites shared by tests of several packages.
package sitetest

import hivev1 "github.com/hivefleet/hive/proto/hive/v1"

// QuorumSite is a site named name whose roles carry quorum rules: nodes
// labelled tier=db get role db, a DRBD resource r0 whose peers are the
// other db nodes; tier=mgr get role mgr, a swarm manager; tier=web get
// role web, nothing. Reboot and rollout tests cut it into waves.
func QuorumSite(name string) *hivev1.Site {
	return &hivev1.Site{Name: name, Roles: []*hivev1.Role{
		{Name: "db", Resources: []*hivev1.Resource{
			{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0", Minor: 0, Disk: "/dev/vdb", Port: 7789, PeerRole: "db"}}},
		}},
		{Name: "mgr", Resources: []*hivev1.Resource{
			{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Init: true}}},
		}},
		{Name: "web"},
	}, Selectors: []*hivev1.Selector{
		{MatchLabels: map[string]string{"tier": "db"}, Roles: []string{"db"}},
		{MatchLabels: map[string]string{"tier": "mgr"}, Roles: []string{"mgr"}},
		{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web"}},
	}}
}
