package site

import (
	"fmt"
	"strconv"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// SSHPort is the port a firewall warning looks for.
const SSHPort = 22

// Warnings returns what is valid but probably a mistake, positioned at the
// resource's recorded source: a firewall whose input policy is drop while
// no firewall a node can get with it (the roles a selector gives together)
// accepts new connections to SSH (22/tcp) — the nodes would lock their
// operators out. Validate and push print warnings and go on.
func Warnings(s *hivev1.Site) []*Error {
	roles := map[string]*hivev1.Role{}
	for _, r := range s.GetRoles() {
		roles[r.GetName()] = r
	}
	// Roles that can land on one node with each role.
	together := map[string]map[string]bool{}
	for _, r := range s.GetRoles() {
		together[r.GetName()] = map[string]bool{r.GetName(): true}
	}
	for _, sel := range s.GetSelectors() {
		for _, a := range sel.GetRoles() {
			for _, b := range sel.GetRoles() {
				if together[a] != nil {
					together[a][b] = true
				}
			}
		}
	}
	acceptsSSH := func(role string) bool {
		for _, res := range roles[role].GetResources() {
			for _, rule := range res.GetFirewall().GetRules() {
				if ruleAcceptsSSH(rule) {
					return true
				}
			}
		}
		return false
	}
	var out []*Error
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			fw := res.GetFirewall()
			if fw == nil || fw.GetPolicies()["input"] != hivev1.FirewallAction_FIREWALL_ACTION_DROP {
				continue
			}
			ok := false
			for other := range together[r.GetName()] {
				if roles[other] != nil && acceptsSSH(other) {
					ok = true
					break
				}
			}
			if ok {
				continue
			}
			e := &Error{Path: fmt.Sprintf("roles.%s.firewall.policies.input", r.GetName()),
				Msg: fmt.Sprintf("warning: input policy drop, and no rule of this or a co-selected role accepts SSH (%d/tcp): nodes given this role can only be reached through other ports", SSHPort)}
			if file, line, col, ok := parseSource(res.GetSource()); ok {
				e.File, e.Line, e.Col = file, line, col
			}
			out = append(out, e)
		}
	}
	ErrorList(out).sort()
	return out
}

// ruleAcceptsSSH reports whether rule accepts new TCP connections to
// port 22 on any interface but loopback (from some sources at least).
func ruleAcceptsSSH(r *hivev1.FirewallRule) bool {
	if r.GetChain() != "input" || r.GetAction() != hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT {
		return false
	}
	if p := r.GetProtocol(); p != "tcp" && p != "all" && p != "" {
		return false
	}
	if len(r.GetStates()) > 0 && !contains(r.GetStates(), "new") {
		return false
	}
	if r.GetInInterface() == "lo" {
		return false
	}
	if len(r.GetPorts()) == 0 {
		return true
	}
	for _, p := range r.GetPorts() {
		lo, hi, isRange := strings.Cut(p, ":")
		if !isRange {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 == nil && err2 == nil && a <= SSHPort && SSHPort <= b {
			return true
		}
	}
	return false
}
