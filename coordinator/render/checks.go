package render

import (
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// roleChecks returns the health checks of roles (sorted role names), each
// a copy with its role filled and its source position cleared (layout is
// not state), in role order then file order.
func roleChecks(site *hivev1.Site, roles []string) []*hivev1.HealthCheck {
	byName := map[string]*hivev1.Role{}
	for _, r := range site.GetRoles() {
		byName[r.GetName()] = r
	}
	var out []*hivev1.HealthCheck
	for _, name := range roles {
		for _, hc := range byName[name].GetChecks() {
			c := proto.Clone(hc).(*hivev1.HealthCheck)
			c.Role = name
			c.Source = ""
			out = append(out, c)
		}
	}
	return out
}
