package kinds

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// mergeFirewall appends the rules of from and takes its chain policies
// (a chain given two policies is a conflict) and the longer confirm window.
func mergeFirewall(into, from proto.Message) error {
	p, f := into.(*hivev1.Firewall), from.(*hivev1.Firewall)
	for _, r := range f.GetRules() {
		p.Rules = append(p.Rules, proto.Clone(r).(*hivev1.FirewallRule))
	}
	for chain, act := range f.GetPolicies() {
		if old, ok := p.GetPolicies()[chain]; ok && old != act {
			return fmt.Errorf("policy of chain %s: %s vs %s", chain, old, act)
		}
		if p.Policies == nil {
			p.Policies = map[string]hivev1.FirewallAction{}
		}
		p.Policies[chain] = act
	}
	if f.GetConfirmSeconds() > p.GetConfirmSeconds() {
		p.ConfirmSeconds = f.GetConfirmSeconds()
	}
	return nil
}

// mergeSwarm makes the node a manager when either role says so, joins
// init, labels (one label, two values is a conflict) and networks (by
// name), and keeps one advertise address.
func mergeSwarm(into, from proto.Message) error {
	p, s := into.(*hivev1.Swarm), from.(*hivev1.Swarm)
	if s.GetRole() == hivev1.SwarmRole_SWARM_ROLE_MANAGER {
		p.Role = s.GetRole()
	}
	p.Init = p.Init || s.GetInit()
	for lk, lv := range s.GetLabels() {
		if old, ok := p.GetLabels()[lk]; ok && old != lv {
			return fmt.Errorf("label %s: %q vs %q", lk, old, lv)
		}
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		p.Labels[lk] = lv
	}
	have := map[string]bool{}
	for _, n := range p.GetNetworks() {
		have[n.GetName()] = true
	}
	for _, n := range s.GetNetworks() {
		if !have[n.GetName()] {
			p.Networks = append(p.Networks, proto.Clone(n).(*hivev1.SwarmNetwork))
		}
	}
	if a := s.GetAdvertiseAddr(); a != "" {
		if p.GetAdvertiseAddr() != "" && p.GetAdvertiseAddr() != a {
			return errors.New("advertise_addr differs")
		}
		p.AdvertiseAddr = a
	}
	return nil
}

// mergeHosts appends the entries of from and adds its roles.
func mergeHosts(into, from proto.Message) error {
	p, f := into.(*hivev1.Hosts), from.(*hivev1.Hosts)
	for _, e := range f.GetEntries() {
		p.Entries = append(p.Entries, proto.Clone(e).(*hivev1.Hosts_Entry))
	}
	have := map[string]bool{}
	for _, r := range p.GetFromRoles() {
		have[r] = true
	}
	for _, r := range f.GetFromRoles() {
		if !have[r] {
			have[r] = true
			p.FromRoles = append(p.FromRoles, r)
		}
	}
	return nil
}
