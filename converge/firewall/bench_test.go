package firewall

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func bigFirewall(n int) *hivev1.Firewall {
	fw := &hivev1.Firewall{Policies: map[string]hivev1.FirewallAction{"input": drop}}
	for i := 0; i < n; i++ {
		fw.Rules = append(fw.Rules, &hivev1.FirewallRule{
			Protocol: "tcp", Ports: []string{fmt.Sprint(1000 + i)},
			Sources: []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), fmt.Sprintf("fd00:%x::/64", i)},
			Action:  accept, Comment: fmt.Sprintf("rule %d", i),
		})
	}
	return fw
}

// BenchmarkRenderDiff renders 1000 rules (2000 iptables rules over both
// families) and diffs them against a table already holding them.
func BenchmarkRenderDiff(b *testing.B) {
	fw := bigFirewall(1000)
	rs, _ := Render(fw)
	cur := &Table{Name: "filter"}
	for _, bl := range Builtins {
		cur.Chains = append(cur.Chains, &Chain{Name: bl.Name, Policy: "DROP", Rules: []string{"-j " + bl.Hive}})
		cur.Chains = append(cur.Chains, &Chain{Name: bl.Hive, Policy: "-", Rules: rs[IPv4].Chains[bl.Hive]})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, err := Render(fw)
		if err != nil {
			b.Fatal(err)
		}
		if p := Diff(IPv4, cur, out[IPv4]); !p.Empty() {
			b.Fatal("not empty")
		}
	}
}

// BenchmarkNoopPlanNetns is a no-op Plan of 200 rules (400 iptables rules)
// against the real iptables-save/ip6tables-save in a namespace: what every
// drift check costs.
func BenchmarkNoopPlanNetns(b *testing.B) {
	n := newNetnsB(b)
	p, _ := New(DefaultConfig(), slog.New(slog.DiscardHandler))
	fw := bigFirewall(200)
	env := &converge.Env{Root: "/", Runner: n.runner()}
	batch := &converge.Batch{Items: []converge.Item{{Key: "firewall:filter", Resource: fwResource(fw)}}}
	chs, err := p.Plan(context.Background(), env, batch)
	if err != nil || chs[0].Err != nil {
		b.Fatal(err, chs[0].Err)
	}
	if err := p.Apply(context.Background(), env, chs); err != nil || chs[0].Err != nil {
		b.Fatal(err, chs[0].Err)
	}
	_ = p.Window().Confirm()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		chs, err := p.Plan(context.Background(), env, batch)
		if err != nil || chs[0].Err != nil || chs[0].Needed {
			b.Fatal(err, chs[0].Err, chs[0].Diff)
		}
	}
}
