package site

import (
	"os"
	"strings"
	"testing"

	"github.com/hivefleet/hive/site/kinds"
)

// TestExampleBaseline: deploy/examples/baseline.yaml parses and checks, and
// declares the hive-builder-style baseline of issue 15 (an admin group with
// sudo, users with keys, chrony, an sshd drop-in checked by sshd -t before
// the reload and rolled back unless confirmed within 30 s, /etc/hosts from
// membership, sysctls, the time zone).
func TestExampleBaseline(t *testing.T) {
	data, err := os.ReadFile("../deploy/examples/baseline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse("baseline.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(s); err != nil {
		t.Fatal(err)
	}
	byKey := map[string]bool{}
	var sysctls int
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			byKey[res.GetKey()] = true
			if kinds.KindOf(res.GetKey()) == "sysctl" {
				sysctls++
			}
			if g := res.GetGroup(); g != nil && g.GetName() == "admins" && len(g.GetSudo()) == 0 {
				t.Error("group admins has no sudo rule")
			}
			if u := res.GetUser(); u != nil && len(u.GetAuthorizedKeys()) == 0 {
				t.Errorf("user %s has no keys", u.GetName())
			}
			if h := res.GetHosts(); h != nil && len(h.GetFromRoles()) == 0 {
				t.Error("hosts not from membership")
			}
			if res.GetKey() == "file:/etc/ssh/sshd_config.d/50-hive-hardening.conf" && res.GetConfirmSeconds() != 30 {
				t.Errorf("the sshd drop-in has confirm %ds, want 30s (issue 15 item 10)", res.GetConfirmSeconds())
			}
			if res.GetKey() == "service:ssh.service" && !strings.Contains(strings.Join(res.GetRequires(), " "), "command:sshd-check") {
				t.Error("the sshd reload does not wait for sshd -t")
			}
		}
	}
	for _, k := range []string{"group:admins", "user:ops", "user:deploy", "package:chrony", "file:/etc/chrony/conf.d/hive.conf",
		"service:chrony.service", "file:/etc/ssh/sshd_config.d/50-hive-hardening.conf", "command:sshd-check",
		"service:ssh.service", "hosts:block", "timezone:system"} {
		if !byKey[k] {
			t.Errorf("no %s", k)
		}
	}
	if sysctls == 0 {
		t.Error("no sysctls")
	}
}
