package render

import (
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// resolveHosts turns the from_roles of a hosts resource into entries: one
// line per node holding each role (its trusted address, its name), in
// registration order, after the written-out entries. Nodes without an
// address are left out. from_roles is cleared.
func (v *view) resolveHosts(res *hivev1.Resource) *hivev1.Resource {
	h := proto.Clone(res.GetHosts()).(*hivev1.Hosts)
	seen := map[string]bool{}
	for _, e := range h.GetEntries() {
		for _, n := range e.GetNames() {
			seen[e.GetAddress()+" "+n] = true
		}
	}
	for _, role := range h.GetFromRoles() {
		for _, p := range v.byRegistration(v.peers[role]) {
			if p.GetAddress() == "" || seen[p.GetAddress()+" "+p.GetName()] {
				continue
			}
			seen[p.GetAddress()+" "+p.GetName()] = true
			h.Entries = append(h.Entries, &hivev1.Hosts_Entry{Address: p.GetAddress(), Names: []string{p.GetName()}})
		}
	}
	h.FromRoles = nil
	nr := proto.Clone(res).(*hivev1.Resource)
	nr.Kind = &hivev1.Resource_Hosts{Hosts: h}
	return nr
}
