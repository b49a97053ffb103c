package site

import (
	"strings"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestCheckCertificateAPI: a site received over the API is checked like a
// parsed one: bad certificate fields and a wrong key are refused, naming
// the field.
func TestCheckCertificateAPI(t *testing.T) {
	bad := &hivev1.Site{Name: "x", Roles: []*hivev1.Role{{Name: "web", Resources: []*hivev1.Resource{
		{Key: "certificate:docker", Kind: &hivev1.Resource_Certificate{Certificate: &hivev1.Certificate{
			Name: "docker", CertPath: "relative.pem", KeyPath: "/k.pem", DnsNames: []string{"a b"}, ValiditySeconds: 1}}},
		{Key: "ca_trust:other", Kind: &hivev1.Resource_CaTrust{CaTrust: &hivev1.CaTrust{}}},
	}}}}
	err := Check(bad)
	if err == nil {
		t.Fatal("bad certificate accepted")
	}
	for _, want := range []string{"cert: path \"relative.pem\" must be absolute", "dns_names[0]", "validity: 1s is outside", `key "ca_trust:other" does not match`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from:\n%v", want, err)
		}
	}
	good := &hivev1.Site{Name: "x", Roles: []*hivev1.Role{{Name: "web", Resources: []*hivev1.Resource{
		{Key: "certificate:docker", Kind: &hivev1.Resource_Certificate{Certificate: &hivev1.Certificate{Name: "docker", CertPath: "/c.pem", KeyPath: "/k.pem"}}},
		{Key: "ca_trust:site", Kind: &hivev1.Resource_CaTrust{CaTrust: &hivev1.CaTrust{}}},
	}}}}
	if err := Check(good); err != nil {
		t.Fatal(err)
	}
}
