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
type siteKind struct {
	decode func(d *decoder, n *yaml.Node, path string) *hivev1.Resource
	check  func(c *checker, res *hivev1.Resource)
}

// siteKinds holds one entry per kind of kinds.All.
var siteKinds = map[string]siteKind{
	"repo":     {(*decoder).repo, (*checker).repoFormat},
	"package":  {(*decoder).pkg, (*checker).packageFormat},
	"file":     {(*decoder).fileRes, (*checker).fileFormat},
	"service":  {(*decoder).service, (*checker).serviceFormat},
	"firewall": {(*decoder).firewall, (*checker).firewallFormat},
	"drbd":     {(*decoder).drbd, (*checker).drbdFormat},
	"swarm":    {(*decoder).swarm, (*checker).swarmFormat},
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
