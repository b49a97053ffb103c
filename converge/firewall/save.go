package firewall

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Table is one table of iptables-save output.
type Table struct {
	Name string
	// Chains in the order iptables-save declared them.
	Chains []*Chain
}

// Chain is one chain of a table: its policy ("-" for user chains) and its
// rules, each without the leading "-A NAME ".
type Chain struct {
	Name   string
	Policy string
	Rules  []string
}

// Chain returns the named chain or nil.
func (t *Table) Chain(name string) *Chain {
	if t == nil {
		return nil
	}
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ErrSyntax is wrapped by ParseSave errors.
var ErrSyntax = errors.New("iptables-save syntax")

// ParseSave parses iptables-save (or ip6tables-save) output into its
// tables, by name. Counters and comments are dropped. Rules are kept as the
// text after "-A CHAIN ", which is exactly how Render spells desired rules.
func ParseSave(out []byte) (map[string]*Table, error) {
	tables := map[string]*Table{}
	var cur *Table
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \r")
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				return nil, fmt.Errorf("%w: line %d: table %s opened before COMMIT of %s", ErrSyntax, n, line[1:], cur.Name)
			}
			cur = &Table{Name: line[1:]}
			if cur.Name == "" {
				return nil, fmt.Errorf("%w: line %d: empty table name", ErrSyntax, n)
			}
		case line == "COMMIT":
			if cur == nil {
				return nil, fmt.Errorf("%w: line %d: COMMIT outside a table", ErrSyntax, n)
			}
			tables[cur.Name] = cur
			cur = nil
		case strings.HasPrefix(line, ":"):
			if cur == nil {
				return nil, fmt.Errorf("%w: line %d: chain outside a table", ErrSyntax, n)
			}
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("%w: line %d: chain line %q", ErrSyntax, n, line)
			}
			if cur.Chain(f[0]) != nil {
				return nil, fmt.Errorf("%w: line %d: chain %s declared twice", ErrSyntax, n, f[0])
			}
			cur.Chains = append(cur.Chains, &Chain{Name: f[0], Policy: f[1]})
		case strings.HasPrefix(line, "-A "):
			if cur == nil {
				return nil, fmt.Errorf("%w: line %d: rule outside a table", ErrSyntax, n)
			}
			name, rule, _ := strings.Cut(line[3:], " ")
			c := cur.Chain(name)
			if c == nil {
				return nil, fmt.Errorf("%w: line %d: rule for undeclared chain %q", ErrSyntax, n, name)
			}
			c.Rules = append(c.Rules, rule)
		default:
			return nil, fmt.Errorf("%w: line %d: unexpected %q", ErrSyntax, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	if cur != nil {
		return nil, fmt.Errorf("%w: table %s not committed", ErrSyntax, cur.Name)
	}
	return tables, nil
}

// Current extracts the hive-owned part of a filter table as a Ruleset,
// with the policies of all three built-in chains (a missing table or chain
// counts as ACCEPT, the kernel's default).
func Current(filter *Table) *Ruleset {
	rs := &Ruleset{Chains: map[string][]string{}, Policies: map[string]string{}}
	for _, b := range Builtins {
		rs.Policies[b.Name] = "ACCEPT"
		if c := filter.Chain(b.Name); c != nil {
			rs.Policies[b.Name] = c.Policy
		}
		if c := filter.Chain(b.Hive); c != nil {
			rs.Chains[b.Hive] = append([]string{}, c.Rules...)
		}
	}
	return rs
}

const jumpPrefix = "-j "

// jumps returns the positions (0-based) of the jumps to hive in a built-in
// chain.
func jumps(filter *Table, builtin, hive string) []int {
	c := filter.Chain(builtin)
	if c == nil {
		return nil
	}
	var out []int
	for i, r := range c.Rules {
		if r == jumpPrefix+hive {
			out = append(out, i)
		}
	}
	return out
}
