package site

import (
	"fmt"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/kinds"
)

// siteKind is what package site adds to an entry of the kind table
// (site/kinds): the decoder of one resource from its role section (the
// key is set by the caller from the kind's rule), and the field checks
// Check runs on a resource received over the API (c.at/c.atErr).
// refs, optional, checks its references to the rest of the site (roles,
// secrets), for Parse and Check alike.
type siteKind struct {
	decode func(d *decoder, n *yaml.Node, path string) *hivev1.Resource
	check  func(c *checker, res *hivev1.Resource)
	refs   func(c *checker, res *hivev1.Resource, s *siteInfo)
}

// siteInfo is what refs checks against.
type siteInfo struct {
	roles       map[string]*hivev1.Role
	roleNames   []string
	secrets     map[string]bool
	secretNames []string
}

// role reports an unknown role name at res.sub.
func (s *siteInfo) role(c *checker, res *hivev1.Resource, sub, name string) {
	if s.roles[name] != nil {
		return
	}
	msg := fmt.Sprintf("unknown role %q", name)
	if sg := suggest(name, s.roleNames); sg != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", sg)
	}
	c.at(res, sub, "%s", msg)
}

// secret reports an undeclared secret name at res.sub.
func (s *siteInfo) secret(c *checker, res *hivev1.Resource, sub, name string) {
	if s.secrets[name] {
		return
	}
	msg := fmt.Sprintf("unknown secret %q: declare it under the top-level secrets list", name)
	if sg := suggest(name, s.secretNames); sg != "" {
		msg = fmt.Sprintf("unknown secret %q (did you mean %q?)", name, sg)
	}
	c.at(res, sub, "%s", msg)
}

// siteKinds holds one entry per kind of kinds.All.
var siteKinds = map[string]siteKind{
	"repo":     {(*decoder).repo, (*checker).repoFormat, nil},
	"package":  {(*decoder).pkg, (*checker).packageFormat, nil},
	"file":     {(*decoder).fileRes, (*checker).fileFormat, nil},
	"service":  {(*decoder).service, (*checker).serviceFormat, nil},
	"firewall": {(*decoder).firewall, (*checker).firewallFormat, nil},
	"drbd":     {(*decoder).drbd, (*checker).drbdFormat, nil},
	"swarm":    {(*decoder).swarm, (*checker).swarmFormat, nil},
	"volume":   {(*decoder).volume, (*checker).volumeFormat, (*checker).volumeRefs},
	"user":     {(*decoder).user, (*checker).userFormat, (*checker).userRefs},
	"group":    {(*decoder).group, (*checker).groupFormat, nil},
	"hosts":    {(*decoder).hosts, (*checker).hostsFormat, (*checker).hostsRefs},
	"hostname": {(*decoder).hostname, (*checker).hostnameFormat, nil},
	"timezone": {(*decoder).timezone, (*checker).timezoneFormat, nil},
	"locale":   {(*decoder).locale, (*checker).localeFormat, nil},
	// Host baseline (hostkinds.go).
	"kernel_module": {(*decoder).kernelModule, (*checker).kernelModuleFormat, nil},
	"sysctl":        {(*decoder).sysctl, (*checker).sysctlFormat, nil},
	"mount":         {(*decoder).mount, (*checker).mountFormat, nil},
	"command":       {(*decoder).command, (*checker).commandFormat, nil},
	// Service certificates and the CA trust store (certificate.go).
	"certificate": {(*decoder).certificate, (*checker).certificateFormat, nil},
	"ca_trust":    {(*decoder).caTrust, (*checker).caTrustFormat, nil},
}

func init() {
	for _, k := range kinds.All {
		if sk, ok := siteKinds[k.Name]; !ok || sk.decode == nil || sk.check == nil {
			panic(fmt.Sprintf("site: kind %q has no decoder or check in siteKinds", k.Name))
		}
	}
	for name := range siteKinds {
		if kinds.Lookup(name) == nil {
			panic(fmt.Sprintf("site: siteKinds has %q, which is not in the kind table", name))
		}
	}
}
