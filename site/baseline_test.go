package site

import (
	"strings"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestCheckBaselineAPI: a Site received over the API gets the field
// checks Parse applies while decoding, at the field's path, and the key
// rule of the kind table.
func TestCheckBaselineAPI(t *testing.T) {
	uid := uint32(4294967295)
	s := &hivev1.Site{
		Secrets: []string{"pw"},
		Roles: []*hivev1.Role{{Name: "base", Resources: []*hivev1.Resource{
			{Key: "user:Alice", Kind: &hivev1.Resource_User{User: &hivev1.User{Name: "Alice", Uid: &uid, PasswordSecret: "pw2",
				AuthorizedKeys: []string{"ssh-rsa nope"}, ManageAuthorizedKeys: true}}},
			{Key: "group:ops", Kind: &hivev1.Resource_Group{Group: &hivev1.Group{Name: "ops", Absent: true, Sudo: []string{"ALL=(ALL) ALL"}}}},
			{Key: "hosts:x", Kind: &hivev1.Resource_Hosts{Hosts: &hivev1.Hosts{FromRoles: []string{"nope"},
				Entries: []*hivev1.Hosts_Entry{{Address: "10.0.0.01", Names: []string{"a"}}}}}},
			{Key: "timezone:system", Kind: &hivev1.Resource_Timezone{Timezone: &hivev1.Timezone{Name: "Europe/../Paris"}}},
			{Key: "locale:system", Kind: &hivev1.Resource_Locale{Locale: &hivev1.Locale{Lang: "C.UTF-8", Variables: map[string]string{"LC_BOGUS": "C"}}}},
			{Key: "hostname:node", Kind: &hivev1.Resource_Hostname{Hostname: &hivev1.Hostname{Name: "ok.example"}}},
		}}},
	}
	err := Check(s)
	if err == nil {
		t.Fatal("Check accepted a bad site")
	}
	for _, want := range []string{
		`roles.base[0].name: user name "Alice"`,
		`roles.base[0].uid: uid 4294967295 is reserved`,
		`roles.base[0].authorized_keys[0]: not an OpenSSH public key`,
		`roles.base[0].password.secret: unknown secret "pw2" (did you mean "pw"?)`,
		`roles.base[1]: an absent group takes only its name`,
		`roles.base[2].entries[0].address: "10.0.0.01" is not an IPv4 or IPv6 address`,
		`roles.base[2].from_roles[0]: unknown role "nope"`,
		`roles.base[2].key: key "hosts:x" does not match the resource (want "hosts:block")`,
		`roles.base[3].name: time zone "Europe/../Paris"`,
		`roles.base[4].variables.LC_BOGUS: unknown locale variable "LC_BOGUS"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "roles.base[5]") {
		t.Errorf("good hostname reported:\n%v", err)
	}
}
