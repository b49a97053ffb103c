package firewall

import (
	"errors"
	"strings"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

const (
	accept = hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT
	drop   = hivev1.FirewallAction_FIREWALL_ACTION_DROP
	reject = hivev1.FirewallAction_FIREWALL_ACTION_REJECT
	logAct = hivev1.FirewallAction_FIREWALL_ACTION_LOG
	v4     = hivev1.IPFamily_IP_FAMILY_IPV4
	v6     = hivev1.IPFamily_IP_FAMILY_IPV6
)

func TestRenderRule(t *testing.T) {
	tests := []struct {
		name   string
		rule   *hivev1.FirewallRule
		v4, v6 []string // rules of the rule's chain per family
		chain  string
	}{
		{
			name: "ssh from a network",
			rule: &hivev1.FirewallRule{Protocol: "tcp", Ports: []string{"22"}, Sources: []string{"10.0.0.0/8"}, Action: accept, Comment: "ssh"},
			v4:   []string{"-s 10.0.0.0/8 -p tcp -m tcp --dport 22 -m comment --comment ssh -j ACCEPT"},
		},
		{
			name: "both families without addresses",
			rule: &hivev1.FirewallRule{Protocol: "udp", Ports: []string{"53", "5353:5354"}, Action: drop},
			v4:   []string{"-p udp -m multiport --dports 53,5353:5354 -j DROP"},
			v6:   []string{"-p udp -m multiport --dports 53,5353:5354 -j DROP"},
		},
		{
			name: "mixed sources split by family, host addresses get a full mask",
			rule: &hivev1.FirewallRule{Sources: []string{"192.0.2.7", "2001:db8::1", "198.51.100.0/24"}, Action: accept},
			v4:   []string{"-s 192.0.2.7/32 -j ACCEPT", "-s 198.51.100.0/24 -j ACCEPT"},
			v6:   []string{"-s 2001:db8::1/128 -j ACCEPT"},
		},
		{
			name:  "states in iptables order, interfaces, quoted comment",
			rule:  &hivev1.FirewallRule{Chain: "forward", States: []string{"established", "related", "new"}, InInterface: "eth0", OutInterface: "docker+", Action: accept, Comment: `it's "x"`},
			chain: "HIVE-FORWARD",
			v4:    []string{`-i eth0 -o docker+ -m conntrack --ctstate NEW,RELATED,ESTABLISHED -m comment --comment "it\'s \"x\"" -j ACCEPT`},
			v6:    []string{`-i eth0 -o docker+ -m conntrack --ctstate NEW,RELATED,ESTABLISHED -m comment --comment "it\'s \"x\"" -j ACCEPT`},
		},
		{
			name: "icmp is IPv4 only, icmpv6 IPv6 only",
			rule: &hivev1.FirewallRule{Protocol: "icmp", Action: accept},
			v4:   []string{"-p icmp -j ACCEPT"},
		},
		{
			name: "icmpv6",
			rule: &hivev1.FirewallRule{Protocol: "icmpv6", Action: accept},
			v6:   []string{"-p ipv6-icmp -j ACCEPT"},
		},
		{
			name:  "reject spells its default reply, family restricted",
			rule:  &hivev1.FirewallRule{Chain: "output", Protocol: "tcp", Destinations: []string{"203.0.113.0/24"}, Action: reject, Family: v4},
			chain: "HIVE-OUTPUT",
			v4:    []string{"-d 203.0.113.0/24 -p tcp -j REJECT --reject-with icmp-port-unreachable"},
		},
		{
			name: "reject v6",
			rule: &hivev1.FirewallRule{Protocol: "tcp", Action: reject, Family: v6},
			v6:   []string{"-p tcp -j REJECT --reject-with icmp6-port-unreachable"},
		},
		{
			name: "log",
			rule: &hivev1.FirewallRule{Action: logAct},
			v4:   []string{"-j LOG"},
			v6:   []string{"-j LOG"},
		},
		{
			name: "source role with no node renders nothing",
			rule: &hivev1.FirewallRule{SourceRoles: []string{"db"}, Action: accept},
		},
		{
			name: "source role expanded by the coordinator",
			rule: &hivev1.FirewallRule{SourceRoles: []string{"db"}, Sources: []string{"10.1.0.5"}, Protocol: "tcp", Ports: []string{"5432"}, Action: accept},
			v4:   []string{"-s 10.1.0.5/32 -p tcp -m tcp --dport 5432 -j ACCEPT"},
		},
		{
			name: "more than 15 ports split",
			rule: &hivev1.FirewallRule{Protocol: "tcp", Ports: []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "20:21"}, Action: accept, Family: v4},
			v4: []string{
				"-p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14 -j ACCEPT",
				"-p tcp -m tcp --dport 20:21 -j ACCEPT",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Render(&hivev1.Firewall{Rules: []*hivev1.FirewallRule{tt.rule}})
			if err != nil {
				t.Fatal(err)
			}
			chain := tt.chain
			if chain == "" {
				chain = "HIVE-INPUT"
			}
			for f, want := range map[Family][]string{IPv4: tt.v4, IPv6: tt.v6} {
				if g := got[f].Chains[chain]; strings.Join(g, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s:\n got %q\nwant %q", f, g, want)
				}
			}
		})
	}
}

func TestRenderInvalid(t *testing.T) {
	tests := []struct {
		name string
		rule *hivev1.FirewallRule
		want string
	}{
		{"bad cidr", &hivev1.FirewallRule{Sources: []string{"10.0.0.0/33"}, Action: accept}, `sources: "10.0.0.0/33" is not a CIDR`},
		{"bad address", &hivev1.FirewallRule{Destinations: []string{"example.com"}, Action: accept}, `destinations: "example.com" is not an address or CIDR`},
		{"port without protocol", &hivev1.FirewallRule{Ports: []string{"22"}, Action: accept}, "ports need protocol tcp or udp"},
		{"port out of range", &hivev1.FirewallRule{Protocol: "tcp", Ports: []string{"70000"}, Action: accept}, `port "70000"`},
		{"reversed range", &hivev1.FirewallRule{Protocol: "tcp", Ports: []string{"90:80"}, Action: accept}, "reversed"},
		{"unknown protocol", &hivev1.FirewallRule{Protocol: "sctp", Action: accept}, `unknown protocol "sctp"`},
		{"unknown chain", &hivev1.FirewallRule{Chain: "prerouting", Action: accept}, `unknown chain "prerouting"`},
		{"no action", &hivev1.FirewallRule{}, "action is required"},
		{"bad interface", &hivev1.FirewallRule{InInterface: "eth 0", Action: accept}, "in_interface"},
		{"long interface", &hivev1.FirewallRule{InInterface: "abcdefghijklmnop", Action: accept}, "1 to 15 characters"},
		{"out iface on input", &hivev1.FirewallRule{OutInterface: "eth0", Action: accept}, "out_interface cannot be used in the input chain"},
		{"bad state", &hivev1.FirewallRule{States: []string{"open"}, Action: accept}, `unknown conntrack state "open"`},
		{"v6 address in v4 rule", &hivev1.FirewallRule{Sources: []string{"2001:db8::/32"}, Family: v4, Action: accept}, "rule's family is IP_FAMILY_IPV4"},
		{"icmp in v6 rule", &hivev1.FirewallRule{Protocol: "icmp", Family: v6, Action: accept}, "IPv4 only"},
		{"families disagree", &hivev1.FirewallRule{Sources: []string{"10.0.0.1"}, Destinations: []string{"2001:db8::1"}, Action: accept}, "no IP family"},
		{"comment control char", &hivev1.FirewallRule{Comment: "a\nb", Action: accept}, "control character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(&hivev1.Firewall{Rules: []*hivev1.FirewallRule{{Action: accept}, tt.rule}})
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var re *RuleError
			if !errors.As(err, &re) || re.Index != 1 {
				t.Errorf("error %v does not locate rule 2", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "firewall rule 2: ") {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestRenderAllErrors(t *testing.T) {
	_, err := Render(&hivev1.Firewall{
		Rules:    []*hivev1.FirewallRule{{Sources: []string{"x"}, Action: accept}, {Action: accept}, {Protocol: "gre", Action: accept}},
		Policies: map[string]hivev1.FirewallAction{"input": reject, "nat": drop},
	})
	for _, want := range []string{"firewall rule 1:", "firewall rule 3:", "policy of input must be accept or drop", `unknown chain "nat"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not contain %q", err, want)
		}
	}
}

func TestQuoteMatchesIptablesSave(t *testing.T) {
	for in, want := range map[string]string{
		"ssh":          "ssh",
		"a_b-9":        "a_b-9",
		"two words":    `"two words"`,
		"a.b":          `"a.b"`,
		`back\slash`:   `"back\\slash"`,
		`"q" and 'q'`:  `"\"q\" and \'q\'"`,
		"":             `""`,
		"unicode é ok": `"unicode é ok"`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

// FuzzRender feeds arbitrary field values to Render: it must either fail
// with ErrInvalid or produce rules that contain no newline (which would
// inject lines into the iptables-restore input).
func FuzzRender(f *testing.F) {
	f.Add("tcp", "22", "10.0.0.0/8", "eth0", "ssh", "established")
	f.Add("udp", "1:2", "fd00::/8", "veth+", `a "b"`, "new")
	f.Add("icmp", "", "1.2.3.4", "", "", "")
	f.Fuzz(func(t *testing.T, proto, port, src, iface, comment, state string) {
		r := &hivev1.FirewallRule{Protocol: proto, Sources: []string{src}, InInterface: iface, Comment: comment, States: []string{state}, Action: accept}
		if port != "" {
			r.Ports = []string{port}
		}
		out, err := Render(&hivev1.Firewall{Rules: []*hivev1.FirewallRule{r}})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		for _, rs := range out {
			for _, rules := range rs.Chains {
				for _, l := range rules {
					if strings.ContainsAny(l, "\n\r\x00") {
						t.Fatalf("rule with a line break: %q", l)
					}
				}
			}
		}
	})
}
