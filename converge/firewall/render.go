package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Family is an IP family: IPv4 (iptables) or IPv6 (ip6tables).
type Family int

// The two families, in the order they are applied.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// Families lists both families in application order.
var Families = []Family{IPv4, IPv6}

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// save and restore return the names of the family's iptables tools.
func (f Family) save() string {
	if f == IPv6 {
		return "ip6tables-save"
	}
	return "iptables-save"
}

func (f Family) restore() string {
	if f == IPv6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

// Builtins are the built-in chains of the filter table hive jumps from, each
// with the hive-owned chain it jumps to.
var Builtins = []struct{ Name, Hive string }{
	{"INPUT", "HIVE-INPUT"},
	{"FORWARD", "HIVE-FORWARD"},
	{"OUTPUT", "HIVE-OUTPUT"},
}

// hiveChain maps a site-file chain name ("input") to the hive-owned chain.
var hiveChain = map[string]string{
	"input":   "HIVE-INPUT",
	"forward": "HIVE-FORWARD",
	"output":  "HIVE-OUTPUT",
}

// builtinChain maps a site-file chain name to the built-in chain.
var builtinChain = map[string]string{
	"input":   "INPUT",
	"forward": "FORWARD",
	"output":  "OUTPUT",
}

// Ruleset is the hive-owned part of one family's filter table: the rules of
// each hive chain (in iptables-save's canonical spelling, without the
// leading "-A CHAIN") and the policies of built-in chains that hive sets.
//
// A hive chain missing from Chains is one that must not exist (used for
// rollback to a state before hive managed the firewall, and for removal).
type Ruleset struct {
	Chains   map[string][]string
	Policies map[string]string
}

// Equal reports whether two rule sets are the same.
func (r *Ruleset) Equal(o *Ruleset) bool {
	if len(r.Chains) != len(o.Chains) || len(r.Policies) != len(o.Policies) {
		return false
	}
	for name, rules := range r.Chains {
		other, ok := o.Chains[name]
		if !ok || len(other) != len(rules) {
			return false
		}
		for i := range rules {
			if rules[i] != other[i] {
				return false
			}
		}
	}
	for name, p := range r.Policies {
		if o.Policies[name] != p {
			return false
		}
	}
	return true
}

// ErrInvalid is wrapped by every error Render returns for a rule that cannot
// be rendered (bad CIDR, port, protocol, interface name, comment...).
var ErrInvalid = errors.New("invalid firewall rule")

// RuleError locates an invalid rule.
type RuleError struct {
	Index int // 0-based position in Firewall.rules; -1 for policies
	Err   error
}

func (e *RuleError) Error() string {
	if e.Index < 0 {
		return fmt.Sprintf("firewall policies: %v", e.Err)
	}
	return fmt.Sprintf("firewall rule %d: %v", e.Index+1, e.Err)
}

func (e *RuleError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// Render turns the desired firewall into one rule set per family. It checks
// every rule and returns all problems at once (errors.Join of *RuleError).
// A rule with source_roles whose expansion yielded no address renders no
// iptables rule at all: it must never turn into "from anywhere".
func Render(fw *hivev1.Firewall) (map[Family]*Ruleset, error) {
	out := map[Family]*Ruleset{}
	for _, f := range Families {
		rs := &Ruleset{Chains: map[string][]string{}, Policies: map[string]string{}}
		for _, b := range Builtins {
			rs.Chains[b.Hive] = []string{}
		}
		out[f] = rs
	}
	var errs []error
	names := make([]string, 0, len(fw.GetPolicies()))
	for name := range fw.GetPolicies() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		b, ok := builtinChain[strings.ToLower(name)]
		if !ok {
			errs = append(errs, &RuleError{Index: -1, Err: fmt.Errorf("unknown chain %q (want input, forward or output)", name)})
			continue
		}
		var p string
		switch fw.GetPolicies()[name] {
		case hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT:
			p = "ACCEPT"
		case hivev1.FirewallAction_FIREWALL_ACTION_DROP:
			p = "DROP"
		default:
			errs = append(errs, &RuleError{Index: -1, Err: fmt.Errorf("policy of %s must be accept or drop, not %s", name, fw.GetPolicies()[name])})
			continue
		}
		for _, f := range Families {
			out[f].Policies[b] = p
		}
	}
	for i, r := range fw.GetRules() {
		lines, err := renderRule(r)
		if err != nil {
			errs = append(errs, &RuleError{Index: i, Err: err})
			continue
		}
		for _, l := range lines {
			rs := out[l.family]
			rs.Chains[l.chain] = append(rs.Chains[l.chain], l.spec)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

type renderedLine struct {
	family Family
	chain  string
	spec   string
}

// conntrack states in the order iptables-save prints them.
var stateOrder = []string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED"}

func renderRule(r *hivev1.FirewallRule) ([]renderedLine, error) {
	chainName := strings.ToLower(r.GetChain())
	if chainName == "" {
		chainName = "input"
	}
	chain, ok := hiveChain[chainName]
	if !ok {
		return nil, fmt.Errorf("unknown chain %q (want input, forward or output)", r.GetChain())
	}
	proto := strings.ToLower(r.GetProtocol())
	if proto == "" {
		proto = "all"
	}
	switch proto {
	case "tcp", "udp", "icmp", "icmpv6", "all":
	default:
		return nil, fmt.Errorf("unknown protocol %q (want tcp, udp, icmp, icmpv6 or all)", r.GetProtocol())
	}
	ports, err := parsePorts(r.GetPorts())
	if err != nil {
		return nil, err
	}
	if len(ports) > 0 && proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("ports need protocol tcp or udp, not %s", proto)
	}
	if err := checkInterface(r.GetInInterface()); err != nil {
		return nil, fmt.Errorf("in_interface: %w", err)
	}
	if err := checkInterface(r.GetOutInterface()); err != nil {
		return nil, fmt.Errorf("out_interface: %w", err)
	}
	if r.GetInInterface() != "" && chainName == "output" {
		return nil, errors.New("in_interface cannot be used in the output chain")
	}
	if r.GetOutInterface() != "" && chainName == "input" {
		return nil, errors.New("out_interface cannot be used in the input chain")
	}
	states, err := parseStates(r.GetStates())
	if err != nil {
		return nil, err
	}
	if err := checkComment(r.GetComment()); err != nil {
		return nil, err
	}
	var target string
	switch r.GetAction() {
	case hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT:
		target = "ACCEPT"
	case hivev1.FirewallAction_FIREWALL_ACTION_DROP:
		target = "DROP"
	case hivev1.FirewallAction_FIREWALL_ACTION_REJECT:
		target = "REJECT"
	case hivev1.FirewallAction_FIREWALL_ACTION_LOG:
		target = "LOG"
	default:
		return nil, errors.New("action is required (accept, drop, reject or log)")
	}
	srcs, err := parsePrefixes("sources", r.GetSources())
	if err != nil {
		return nil, err
	}
	dsts, err := parsePrefixes("destinations", r.GetDestinations())
	if err != nil {
		return nil, err
	}
	if len(r.GetSourceRoles()) > 0 && len(srcs) == 0 {
		// The roles hold no node (yet): the rule matches nothing.
		return nil, nil
	}

	// Which families the rule applies to.
	fams := map[Family]bool{IPv4: true, IPv6: true}
	switch r.GetFamily() {
	case hivev1.IPFamily_IP_FAMILY_IPV4:
		fams[IPv6] = false
	case hivev1.IPFamily_IP_FAMILY_IPV6:
		fams[IPv4] = false
	case hivev1.IPFamily_IP_FAMILY_UNSPECIFIED, hivev1.IPFamily_IP_FAMILY_BOTH:
	default:
		return nil, fmt.Errorf("unknown family %v", r.GetFamily())
	}
	explicit := r.GetFamily() == hivev1.IPFamily_IP_FAMILY_IPV4 || r.GetFamily() == hivev1.IPFamily_IP_FAMILY_IPV6
	switch proto {
	case "icmp":
		if explicit && !fams[IPv4] {
			return nil, errors.New("protocol icmp is IPv4 only; use icmpv6")
		}
		fams[IPv6] = false
	case "icmpv6":
		if explicit && !fams[IPv6] {
			return nil, errors.New("protocol icmpv6 is IPv6 only; use icmp")
		}
		fams[IPv4] = false
	}
	// Addresses restrict the families too; an explicit family must agree.
	for _, set := range []struct {
		name string
		p    []netip.Prefix
	}{{"sources", srcs}, {"destinations", dsts}} {
		if len(set.p) == 0 {
			continue
		}
		has := map[Family]bool{}
		for _, p := range set.p {
			f := prefixFamily(p)
			if explicit && !fams[f] {
				return nil, fmt.Errorf("%s: %s is %s but the rule's family is %s", set.name, p, f, r.GetFamily())
			}
			has[f] = true
		}
		for _, f := range Families {
			if !has[f] {
				fams[f] = false
			}
		}
	}
	if !fams[IPv4] && !fams[IPv6] {
		return nil, errors.New("addresses and protocol leave no IP family to apply the rule to")
	}

	var out []renderedLine
	for _, f := range Families {
		if !fams[f] {
			continue
		}
		fs := filterFamily(srcs, f)
		fd := filterFamily(dsts, f)
		for _, s := range orAny(fs) {
			for _, d := range orAny(fd) {
				for _, pchunk := range chunkPorts(ports) {
					out = append(out, renderedLine{family: f, chain: chain, spec: spec(f, s, d, r, proto, pchunk, states, target)})
				}
			}
		}
	}
	return out, nil
}

func spec(f Family, src, dst *netip.Prefix, r *hivev1.FirewallRule, proto string, ports []portRange, states []string, target string) string {
	var b []string
	if src != nil {
		b = append(b, "-s", src.String())
	}
	if dst != nil {
		b = append(b, "-d", dst.String())
	}
	if r.GetInInterface() != "" {
		b = append(b, "-i", r.GetInInterface())
	}
	if r.GetOutInterface() != "" {
		b = append(b, "-o", r.GetOutInterface())
	}
	switch proto {
	case "all":
	case "icmpv6":
		b = append(b, "-p", "ipv6-icmp")
	default:
		b = append(b, "-p", proto)
	}
	switch {
	case len(ports) == 1:
		b = append(b, "-m", proto, "--dport", ports[0].String())
	case len(ports) > 1:
		s := make([]string, len(ports))
		for i, p := range ports {
			s[i] = p.String()
		}
		b = append(b, "-m", "multiport", "--dports", strings.Join(s, ","))
	}
	if len(states) > 0 {
		b = append(b, "-m", "conntrack", "--ctstate", strings.Join(states, ","))
	}
	if r.GetComment() != "" {
		b = append(b, "-m", "comment", "--comment", quote(r.GetComment()))
	}
	b = append(b, "-j", target)
	if target == "REJECT" {
		if f == IPv6 {
			b = append(b, "--reject-with", "icmp6-port-unreachable")
		} else {
			b = append(b, "--reject-with", "icmp-port-unreachable")
		}
	}
	return strings.Join(b, " ")
}

// quote spells a string the way iptables-save does (xtables_save_string):
// bare when it consists only of letters, digits, '_' and '-', else in
// double quotes with '"', '\' and '\” escaped by a backslash.
func quote(s string) string {
	bare := s != ""
	for _, c := range s {
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' || c == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}

type portRange struct{ lo, hi uint16 }

func (p portRange) isRange() bool { return p.lo != p.hi }

func (p portRange) String() string {
	if p.isRange() {
		return fmt.Sprintf("%d:%d", p.lo, p.hi)
	}
	return strconv.Itoa(int(p.lo))
}

func parsePorts(in []string) ([]portRange, error) {
	var out []portRange
	for _, s := range in {
		lo, hi, isRange := strings.Cut(s, ":")
		if !isRange {
			lo, hi, isRange = strings.Cut(s, "-")
		}
		a, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("port %q: %w", s, err)
			}
			if b < a {
				return nil, fmt.Errorf("port range %q is reversed", s)
			}
		}
		out = append(out, portRange{a, b})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("want a number from 1 to 65535")
	}
	return uint16(n), nil
}

// chunkPorts splits ports into groups multiport accepts (15 slots, a range
// taking two). No ports yields one empty group.
func chunkPorts(ports []portRange) [][]portRange {
	if len(ports) == 0 {
		return [][]portRange{nil}
	}
	var out [][]portRange
	var cur []portRange
	slots := 0
	for _, p := range ports {
		n := 1
		if p.isRange() {
			n = 2
		}
		if slots+n > 15 {
			out = append(out, cur)
			cur, slots = nil, 0
		}
		cur = append(cur, p)
		slots += n
	}
	return append(out, cur)
}

func parseStates(in []string) ([]string, error) {
	want := map[string]bool{}
	for _, s := range in {
		u := strings.ToUpper(s)
		ok := false
		for _, k := range stateOrder {
			if k == u {
				ok = true
			}
		}
		if !ok {
			return nil, fmt.Errorf("unknown conntrack state %q (want new, established, related, invalid or untracked)", s)
		}
		want[u] = true
	}
	var out []string
	for _, k := range stateOrder {
		if want[k] {
			out = append(out, k)
		}
	}
	return out, nil
}

// checkInterface checks the syntax of an interface name ("eth0", or a
// prefix wildcard "veth+"); whether it exists is checked at apply time.
// (site.CheckInterface: the rule hivectl validate applies too).
func checkInterface(name string) error { return site.CheckInterface(name) }

// checkComment is site.CheckComment, the rule hivectl validate applies.
func checkComment(c string) error { return site.CheckComment(c) }

func parsePrefixes(field string, in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, s := range in {
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			p, err = netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not a CIDR: %w", field, s, err)
			}
			p = p.Masked()
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %q is not an address or CIDR: %w", field, s, err)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Zone() != "" {
			return nil, fmt.Errorf("%s: %q: zones are not supported", field, s)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixFamily(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

func filterFamily(in []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range in {
		if prefixFamily(p) == f {
			out = append(out, p)
		}
	}
	return out
}

func orAny(in []netip.Prefix) []*netip.Prefix {
	if len(in) == 0 {
		return []*netip.Prefix{nil}
	}
	out := make([]*netip.Prefix, len(in))
	for i := range in {
		out[i] = &in[i]
	}
	return out
}
