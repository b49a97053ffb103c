package converge_test

import (
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestFilesAfterTheirAccounts: a file converges after the user and group
// resources that own it (a group may be a user's own group), and after
// the user whose home holds it; numeric owners and accounts absent from
// the state add nothing; an explicit require the other way wins.
func TestFilesAfterTheirAccounts(t *testing.T) {
	uid := uint32(2001)
	user := func(name, home string, system bool) *hivev1.Resource {
		return &hivev1.Resource{Key: "user:" + name, Kind: &hivev1.Resource_User{User: &hivev1.User{Name: name, Uid: &uid, Home: home, System: system}}}
	}
	group := &hivev1.Resource{Key: "group:admins", Kind: &hivev1.Resource_Group{Group: &hivev1.Group{Name: "admins"}}}
	file := func(p, owner, grp string, requires ...string) *hivev1.Resource {
		return &hivev1.Resource{Key: "file:" + p, Requires: requires, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: p, Owner: owner, Group: grp}}}
	}
	rs := []*hivev1.Resource{
		file("/srv/tools", "ops", "admins"),
		file("/srv/own-group", "", "ops"),
		file("/home/ops/.ssh/config", "", ""),
		file("/var/lib/svc/state", "", ""),
		file("/srv/numeric", "2001", "2001"),
		file("/srv/elsewhere", "nobody", "nogroup"),
		file("/home/opsx/f", "", ""),
		group,
		user("ops", "", false),
		user("svc", "/var/lib/svc", true),
		user("sys", "", true),
	}
	// An explicit edge the other way: user:sys requires a file it owns.
	rs = append(rs, file("/etc/sys.conf", "sys", ""))
	rs[len(rs)-2].Requires = []string{"file:/etc/sys.conf"}
	g, err := converge.BuildGraph(rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"file:/srv/tools":            "group:admins user:ops",
		"file:/srv/own-group":        "user:ops",
		"file:/home/ops/.ssh/config": "user:ops",
		"file:/var/lib/svc/state":    "user:svc",
		"file:/srv/numeric":          "",
		"file:/srv/elsewhere":        "",
		"file:/home/opsx/f":          "",
		"file:/etc/sys.conf":         "",
		"user:sys":                   "file:/etc/sys.conf",
	} {
		if got := strings.Join(g.Requires[key], " "); got != want {
			t.Errorf("%s requires %q, want %q", key, got, want)
		}
	}
	if len(g.Waves) < 2 || !contains(g.Waves[0], "user:ops") || contains(g.Waves[0], "file:/srv/tools") {
		t.Errorf("waves %v", g.Waves)
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
