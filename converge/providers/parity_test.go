package providers_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/drbd"
	"github.com/hivefleet/hive/converge/firewall"
	"github.com/hivefleet/hive/converge/pkg"
	"github.com/hivefleet/hive/converge/pkgrepo"
	"github.com/hivefleet/hive/converge/service"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// TestValidateRefusesWhatAgentsRefuse feeds values that a provider refuses
// on every agent through the site checker: hivectl validate (Parse) must
// refuse them at the value's file:line:col, and the coordinator (Check) must
// refuse the same resource pushed without a source. Before the shared rules
// of site/rules.go, every row but a few passed validation and failed on
// each agent (issue 11 finding 11).
func TestValidateRefusesWhatAgentsRefuse(t *testing.T) {
	pp, err := pkg.New(pkg.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	repo := pkgrepo.New(pkgrepo.Config{})
	drbdRes := func(mut func(d *hivev1.Drbd)) *hivev1.Resource {
		d := &hivev1.Drbd{Name: "r0", Minor: 0, Disk: "/dev/vdb", MetaDisk: "internal", Port: 7789, Protocol: "C", PeerRole: "db"}
		mut(d)
		return &hivev1.Resource{Key: "drbd:" + d.Name, Kind: &hivev1.Resource_Drbd{Drbd: d}}
	}
	drbdAgent := func(r *hivev1.Resource) error {
		_, err := drbd.Check(r.GetDrbd(), "db-1")
		if !errors.Is(err, drbd.ErrInvalid) {
			return nil
		}
		return err
	}
	validator := func(v converge.Validator) func(*hivev1.Resource) error {
		return func(r *hivev1.Resource) error { return v.Validate(r) }
	}
	repoRes := func(mut func(r *hivev1.Repo)) *hivev1.Resource {
		r := &hivev1.Repo{Name: "acme", Type: hivev1.RepoType_REPO_TYPE_APT, Url: "https://pkg.example/apt", Suite: "stable", Components: []string{"main"}}
		mut(r)
		return &hivev1.Resource{Key: "repo:" + r.Name, Kind: &hivev1.Resource_Repo{Repo: r}}
	}
	fwRes := func(mut func(r *hivev1.FirewallRule)) *hivev1.Resource {
		r := &hivev1.FirewallRule{Chain: "input", Protocol: "tcp", Ports: []string{"22"}, Action: hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT, Family: hivev1.IPFamily_IP_FAMILY_BOTH}
		mut(r)
		return &hivev1.Resource{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{ConfirmSeconds: 30, Rules: []*hivev1.FirewallRule{r}}}}
	}
	fwAgent := func(r *hivev1.Resource) error { _, err := firewall.Render(r.GetFirewall()); return err }

	const drbdYAML = "    drbd:\n      - {name: r0, minor: 0, disk: /dev/vdb, port: 7789, peers: db, %s}\n"
	const repoYAML = "    repos:\n      - {name: acme, type: apt, url: \"https://pkg.example/apt\", gpgcheck: false, %s}\n"
	const fwYAML = "    firewall:\n      rules:\n        - {ports: [22], %s}\n"
	for _, c := range []struct {
		name   string
		yaml   string // the role body, under roles.db
		at     string // where the error must point: the first occurrence in the file
		res    *hivev1.Resource
		refuse func(*hivev1.Resource) error
	}{
		{"drbd option value ;", fmt.Sprintf(drbdYAML, `options: {"net/verify-alg": "sha1; disk { }"}`), `"sha1;`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"net/verify-alg": "sha1; disk { }"} }), drbdAgent},
		{"drbd option value {", fmt.Sprintf(drbdYAML, `options: {"disk/on-io-error": "a{b"}`), `"a{b"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"disk/on-io-error": "a{b"} }), drbdAgent},
		{"drbd option value }", fmt.Sprintf(drbdYAML, `options: {"disk/on-io-error": "a}b"}`), `"a}b"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"disk/on-io-error": "a}b"} }), drbdAgent},
		{"drbd option value newline", fmt.Sprintf(drbdYAML, `options: {"net/shared-secret": "a\nb"}`), `"a\nb"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"net/shared-secret": "a\nb"} }), drbdAgent},
		{"drbd option value quote", fmt.Sprintf(drbdYAML, `options: {"net/shared-secret": "a\"b"}`), `"a\"b"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"net/shared-secret": `a"b`} }), drbdAgent},
		{"drbd option value empty", fmt.Sprintf(drbdYAML, `options: {"net/shared-secret": ""}`), `""`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"net/shared-secret": ""} }), drbdAgent},
		{"drbd option section", fmt.Sprintf(drbdYAML, `options: {"bogus/x": "1"}`), `"bogus/x"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"bogus/x": "1"} }), drbdAgent},
		{"drbd option protocol", fmt.Sprintf(drbdYAML, `options: {"net/protocol": "A"}`), `"net/protocol"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"net/protocol": "A"} }), drbdAgent},
		{"drbd option name", fmt.Sprintf(drbdYAML, `options: {"net/Verify": "1"}`), `"net/Verify"`,
			drbdRes(func(d *hivev1.Drbd) { d.Options = map[string]string{"net/Verify": "1"} }), drbdAgent},
		{"drbd disk space", strings.Replace(fmt.Sprintf(drbdYAML, "protocol: C"), "/dev/vdb", `"/dev/vd b"`, 1), `"/dev/vd b"`,
			drbdRes(func(d *hivev1.Drbd) { d.Disk = "/dev/vd b" }), drbdAgent},
		{"drbd meta disk ;", fmt.Sprintf(drbdYAML, `meta_disk: "/dev/x;y"`), `"/dev/x;y"`,
			drbdRes(func(d *hivev1.Drbd) { d.MetaDisk = "/dev/x;y" }), drbdAgent},
		{"drbd name leading -", strings.Replace(fmt.Sprintf(drbdYAML, "protocol: C"), "name: r0", "name: -r0", 1), `name`,
			drbdRes(func(d *hivev1.Drbd) { d.Name = "-r0" }), drbdAgent},
		{"drbd name too long", strings.Replace(fmt.Sprintf(drbdYAML, "protocol: C"), "name: r0", "name: "+strings.Repeat("r", 64), 1), `name`,
			drbdRes(func(d *hivev1.Drbd) { d.Name = strings.Repeat("r", 64) }), drbdAgent},
		{"package name ends in -", "    packages: [nginx-]\n", `nginx-`,
			&hivev1.Resource{Key: "package:nginx-", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx-", State: hivev1.PackageState_PACKAGE_STATE_PRESENT}}}, validator(pp)},
		{"package version *", "    packages: [{name: nginx, version: \"1.*\"}]\n", `"1.*"`,
			&hivev1.Resource{Key: "package:nginx", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx", Version: "1.*", State: hivev1.PackageState_PACKAGE_STATE_PRESENT}}}, validator(pp)},
		{"repo name /", strings.Replace(fmt.Sprintf(repoYAML, "suite: stable"), "name: acme", "name: ac/me", 1), `name`,
			repoRes(func(r *hivev1.Repo) { r.Name = "ac/me" }), validator(repo)},
		{"repo url space", strings.Replace(fmt.Sprintf(repoYAML, "suite: stable"), "/apt", "/a pt", 1), `"https`,
			repoRes(func(r *hivev1.Repo) { r.Url = "https://pkg.example/a pt" }), validator(repo)},
		{"repo suite space", fmt.Sprintf(repoYAML, `suite: "sta ble"`), `"sta ble"`,
			repoRes(func(r *hivev1.Repo) { r.Suite = "sta ble" }), validator(repo)},
		{"repo component space", fmt.Sprintf(repoYAML, `components: ["ma in"]`), `["ma in"]`,
			repoRes(func(r *hivev1.Repo) { r.Components = []string{"ma in"} }), validator(repo)},
		{"repo architecture tab", fmt.Sprintf(repoYAML, `architectures: ["amd\t64"]`), `["amd`,
			repoRes(func(r *hivev1.Repo) { r.Architectures = []string{"amd\t64"} }), validator(repo)},
		{"repo key damaged", fmt.Sprintf(repoYAML, `key: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----"`), `"-----BEGIN`,
			repoRes(func(r *hivev1.Repo) {
				r.SigningKey = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----"
			}), validator(repo)},
		{"firewall interface :", fmt.Sprintf(fwYAML, "in_interface: \"eth0:1\""), `"eth0:1"`,
			fwRes(func(r *hivev1.FirewallRule) { r.InInterface = "eth0:1" }), fwAgent},
		{"firewall interface space", fmt.Sprintf(fwYAML, "in_interface: \"eth 0\""), `"eth 0"`,
			fwRes(func(r *hivev1.FirewallRule) { r.InInterface = "eth 0" }), fwAgent},
		{"firewall comment tab", fmt.Sprintf(fwYAML, "comment: \"a\\tb\""), `"a\tb"`,
			fwRes(func(r *hivev1.FirewallRule) { r.Comment = "a\tb" }), fwAgent},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The agent refuses the value (the premise).
			if err := c.refuse(c.res); err == nil {
				t.Fatalf("premise: the provider accepts %v", c.res)
			}
			// hivectl validate refuses it, at the value.
			text := "site: parity\nselectors:\n  - roles: [db]\nroles:\n  db:\n" + c.yaml
			_, err := site.Parse("site.yaml", []byte(text))
			var list site.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("validate accepts what the agent refuses:\n%s", text)
			}
			off := strings.Index(text, c.at)
			if off < 0 {
				t.Fatalf("test bug: %q not in the text", c.at)
			}
			line := strings.Count(text[:off], "\n") + 1
			col := off - strings.LastIndex(text[:off], "\n")
			if list[0].Line != line || list[0].Col != col {
				t.Errorf("reported at %d:%d, want %d:%d (%q): %v", list[0].Line, list[0].Col, line, col, c.at, list)
			}
			// The coordinator refuses the same resource pushed as a Site.
			s := &hivev1.Site{Name: "parity", Selectors: []*hivev1.Selector{{Roles: []string{"db"}}},
				Roles: []*hivev1.Role{{Name: "db", Resources: []*hivev1.Resource{c.res}}}}
			if err := site.Check(s); err == nil {
				t.Errorf("site.Check (push) accepts what the agent refuses: %v", c.res)
			}
		})
	}
}

// TestCheckRefusesWhatAgentsRefuse: a site pushed through the API without
// source text (so never parsed) is refused by the coordinator's Check for
// what a provider would refuse on every agent.
func TestCheckRefusesWhatAgentsRefuse(t *testing.T) {
	svc := func(name string) *hivev1.Resource {
		return &hivev1.Resource{Key: "service:" + site.UnitName(name), Kind: &hivev1.Resource_Service{Service: &hivev1.Service{Name: name}}}
	}
	for _, c := range []struct {
		name string
		res  *hivev1.Resource
		want string
	}{
		{"service name with a space", svc("ng inx"), "not a valid systemd unit name"},
		{"service name with /", svc("a/b"), "not a valid systemd unit name"},
		{"repo without url", &hivev1.Resource{Key: "repo:acme", Kind: &hivev1.Resource_Repo{Repo: &hivev1.Repo{Name: "acme", Type: hivev1.RepoType_REPO_TYPE_YUM}}}, "url: required"},
		{"drbd without peers", &hivev1.Resource{Key: "drbd:r0", Kind: &hivev1.Resource_Drbd{Drbd: &hivev1.Drbd{Name: "r0", Disk: "/dev/vdb", Port: 7789}}}, "peers: required"},
		{"swarm network without name", &hivev1.Resource{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Networks: []*hivev1.SwarmNetwork{{}}}}}, "networks[0].name: required"},
		{"swarm subnet", &hivev1.Resource{Key: "swarm:node", Kind: &hivev1.Resource_Swarm{Swarm: &hivev1.Swarm{Role: hivev1.SwarmRole_SWARM_ROLE_MANAGER, Networks: []*hivev1.SwarmNetwork{{Name: "n", Subnet: "10.0.0.0/33"}}}}}, "bad subnet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &hivev1.Site{Name: "api", Selectors: []*hivev1.Selector{{Roles: []string{"db"}}},
				Roles: []*hivev1.Role{{Name: "db", Resources: []*hivev1.Resource{c.res}}}}
			if err := site.Check(s); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Check = %v, want %q", err, c.want)
			}
		})
	}
	// The agents do refuse them (the premise), where a provider can say so
	// without a host.
	p := service.New(service.Config{})
	for _, n := range []string{"ng inx", "a/b"} {
		if p.Validate(svc(n)) == nil {
			t.Errorf("premise: the service provider accepts %q", n)
		}
	}
	if repo := pkgrepo.New(pkgrepo.Config{}); repo.Validate(&hivev1.Resource{Kind: &hivev1.Resource_Repo{Repo: &hivev1.Repo{Name: "acme"}}}) == nil {
		t.Error("premise: the repo provider accepts an empty url")
	}
	if _, err := drbd.Check(&hivev1.Drbd{Name: "r0", Disk: "/dev/vdb", Port: 7789}, "db-1"); err == nil {
		t.Error("premise: drbd accepts a resource without peers")
	}
}
