package firewall

import (
	"fmt"
	"strings"
)

// Plan is what it takes to bring one family's filter table from its
// current state to a desired Ruleset.
type Plan struct {
	Family Family
	// Changes describe each difference for humans, one per line.
	Changes []string
	// Restore is the iptables-restore --noflush input that makes the
	// change in one transaction; empty when nothing differs.
	Restore []byte
}

// Empty reports whether nothing needs to change.
func (p *Plan) Empty() bool { return len(p.Restore) == 0 }

// Diff plans the change from the current filter table (nil when the table
// does not exist yet) to desired. Chains other than the three hive chains
// and rules other than the jumps to them are never named in the output, so
// iptables-restore --noflush leaves them alone.
func Diff(f Family, filter *Table, desired *Ruleset) *Plan {
	p := &Plan{Family: f}
	cur := Current(filter)
	var decl, del, add, ins, drop []string
	for _, b := range Builtins {
		want, keep := desired.Chains[b.Hive]
		have, exists := cur.Chains[b.Hive]
		js := jumps(filter, b.Name, b.Hive)
		if keep {
			if !exists || !equalRules(have, want) {
				decl = append(decl, ":"+b.Hive+" - [0:0]")
				if !exists {
					p.Changes = append(p.Changes, fmt.Sprintf("%s: create chain %s", f, b.Hive))
				}
				p.Changes = append(p.Changes, ruleDiff(f, b.Hive, have, want)...)
				for _, r := range want {
					add = append(add, "-A "+b.Hive+" "+r)
				}
			}
			if len(js) != 1 || js[0] != 0 {
				for range js {
					del = append(del, "-D "+b.Name+" -j "+b.Hive)
				}
				ins = append(ins, "-I "+b.Name+" 1 -j "+b.Hive)
				switch {
				case len(js) == 0:
					p.Changes = append(p.Changes, fmt.Sprintf("%s: jump %s -> %s inserted first", f, b.Name, b.Hive))
				default:
					p.Changes = append(p.Changes, fmt.Sprintf("%s: jump %s -> %s moved first (found %d at %v)", f, b.Name, b.Hive, len(js), positions(js)))
				}
			}
		} else if exists || len(js) > 0 {
			for range js {
				del = append(del, "-D "+b.Name+" -j "+b.Hive)
			}
			if exists {
				decl = append(decl, ":"+b.Hive+" - [0:0]")
				drop = append(drop, "-X "+b.Hive)
			}
			p.Changes = append(p.Changes, fmt.Sprintf("%s: remove chain %s and its jump", f, b.Hive))
		}
		if want, ok := desired.Policies[b.Name]; ok && want != cur.Policies[b.Name] {
			decl = append(decl, ":"+b.Name+" "+want+" [0:0]")
			p.Changes = append(p.Changes, fmt.Sprintf("%s: policy %s %s -> %s", f, b.Name, cur.Policies[b.Name], want))
		}
	}
	if len(p.Changes) == 0 {
		return p
	}
	var sb strings.Builder
	sb.WriteString("*filter\n")
	for _, group := range [][]string{decl, del, add, ins, drop} {
		for _, l := range group {
			sb.WriteString(l)
			sb.WriteByte('\n')
		}
	}
	sb.WriteString("COMMIT\n")
	p.Restore = []byte(sb.String())
	return p
}

func positions(js []int) []int {
	out := make([]int, len(js))
	for i, j := range js {
		out[i] = j + 1
	}
	return out
}

func equalRules(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ruleDiff lists removed and added rules of one chain (a minimal edit
// script by longest common subsequence, so one changed rule shows as one
// "-" and one "+").
func ruleDiff(f Family, chain string, have, want []string) []string {
	n, m := len(have), len(want)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if have[i] == want[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && have[i] == want[j]:
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, fmt.Sprintf("%s: %s - %s", f, chain, have[i]))
			i++
		default:
			out = append(out, fmt.Sprintf("%s: %s + %s", f, chain, want[j]))
			j++
		}
	}
	if len(out) == 0 && len(have) == 0 {
		out = nil
	}
	return out
}
