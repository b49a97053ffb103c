package firewall

import (
	"os"
	"testing"

	"github.com/hivefleet/hive/site"
)

// TestExampleSite renders the firewall of every role of the example site
// (deploy/examples/site.yaml), with source roles expanded to one address
// as the coordinator would.
func TestExampleSite(t *testing.T) {
	data, err := os.ReadFile("../../deploy/examples/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := site.Parse("site.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, role := range s.GetRoles() {
		for _, r := range role.GetResources() {
			fw := r.GetFirewall()
			if fw == nil {
				continue
			}
			for _, rule := range fw.GetRules() {
				if len(rule.GetSourceRoles()) > 0 {
					rule.Sources = append(rule.Sources, "10.0.0.7")
				}
			}
			out, err := Render(fw)
			if err != nil {
				t.Errorf("role %s: %v", role.GetName(), err)
				continue
			}
			if len(out[IPv4].Chains["HIVE-INPUT"]) == 0 {
				t.Errorf("role %s: no rules", role.GetName())
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("the example site declares no firewall")
	}
}
