package render

import (
	"strings"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestHostsFromRoles: a hosts block declared by two roles merges, its
// from_roles become one line per node of the roles (trusted address,
// name, registration order), and a user's password secret reaches the
// node.
func TestHostsFromRoles(t *testing.T) {
	f := newFixture(t)
	s := site()
	for _, r := range s.Roles {
		switch r.Name {
		case "base":
			r.Resources = append(r.Resources,
				&hivev1.Resource{Key: "hosts:block", Kind: &hivev1.Resource_Hosts{Hosts: &hivev1.Hosts{
					Entries: []*hivev1.Hosts_Entry{{Address: "10.9.0.1", Names: []string{"gw"}}}}}},
				&hivev1.Resource{Key: "user:alice", Kind: &hivev1.Resource_User{User: &hivev1.User{Name: "alice", PasswordSecret: "alice-pw"}}})
		case "web":
			r.Resources = append(r.Resources, &hivev1.Resource{Key: "hosts:block", Kind: &hivev1.Resource_Hosts{Hosts: &hivev1.Hosts{
				FromRoles: []string{"db", "monitor"}}}})
		}
	}
	f.st.Push(t0, &hivev1.PushCommand{Force: true, Generation: &hivev1.Generation{Sha256: "s2", Site: s}})
	f.setSecret(t, "alice-pw", "$6$x$y")
	web := f.render(t, "web-1")
	h := find(web, "hosts:block").GetHosts()
	var lines []string
	for _, e := range h.GetEntries() {
		lines = append(lines, e.GetAddress()+" "+strings.Join(e.GetNames(), ","))
	}
	// db-b was registered before db-a; monitor has no nodes.
	if got := strings.Join(lines, "; "); got != "10.9.0.1 gw; 10.0.0.12 db-b; 10.0.0.11 db-a" || len(h.GetFromRoles()) != 0 {
		t.Fatalf("hosts = %s (from_roles %v)", got, h.GetFromRoles())
	}
	if string(web.GetSecrets()["alice-pw"]) != "$6$x$y" {
		t.Fatalf("password secret not rendered: %v", web.GetSecrets())
	}
	// The order puts accounts before files, the hosts block before files.
	if got := keys(web); !strings.HasPrefix(got, "package:curl user:alice hosts:block file:") {
		t.Fatalf("keys = %s", got)
	}
	// A node without the web role gets the base entries only.
	db := f.render(t, "db-a")
	if e := find(db, "hosts:block").GetHosts().GetEntries(); len(e) != 1 {
		t.Fatalf("db hosts = %v", e)
	}
}
