package coordinator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/hivefleet/hive/coordinator/render"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// DiffSites compares two sites resource by resource: for every role, the
// role itself (key "", its description) and each resource by key; then the
// selectors (role "", key "selectors") and the referenced secret names
// (role "", key "secrets"). Each change carries a unified diff of the
// canonical text form (indented protojson) of what changed. Source
// positions (Resource.source, file:line:col) are not compared: as in
// site.Canonical, moving a resource within the file is no change.
func DiffSites(from, to *hivev1.Site) []*hivev1.ResourceChange {
	var out []*hivev1.ResourceChange
	fr, tr := rolesByName(from), rolesByName(to)
	names := map[string]bool{}
	for n := range fr {
		names[n] = true
	}
	for n := range tr {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		a, b := fr[n], tr[n]
		switch {
		case a == nil:
			out = append(out, change(n, "", hivev1.ChangeKind_CHANGE_KIND_ADDED, nil, roleHead(b)))
		case b == nil:
			out = append(out, change(n, "", hivev1.ChangeKind_CHANGE_KIND_REMOVED, roleHead(a), nil))
		case a.GetDescription() != b.GetDescription():
			out = append(out, change(n, "", hivev1.ChangeKind_CHANGE_KIND_MODIFIED, roleHead(a), roleHead(b)))
		}
		ra, rb := resourcesByKey(a), resourcesByKey(b)
		keys := map[string]bool{}
		for k := range ra {
			keys[k] = true
		}
		for k := range rb {
			keys[k] = true
		}
		ks := make([]string, 0, len(keys))
		for k := range keys {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			x, y := ra[k], rb[k]
			switch {
			case x == nil:
				out = append(out, change(n, k, hivev1.ChangeKind_CHANGE_KIND_ADDED, nil, y))
			case y == nil:
				out = append(out, change(n, k, hivev1.ChangeKind_CHANGE_KIND_REMOVED, x, nil))
			case !proto.Equal(x, y):
				out = append(out, change(n, k, hivev1.ChangeKind_CHANGE_KIND_MODIFIED, x, y))
			}
		}
	}
	sa, sb := &hivev1.Site{Selectors: from.GetSelectors()}, &hivev1.Site{Selectors: to.GetSelectors()}
	if !proto.Equal(sa, sb) {
		out = append(out, change("", "selectors", kindOf(len(sa.Selectors), len(sb.Selectors)), sa, sb))
	}
	ea, eb := &hivev1.Site{Secrets: from.GetSecrets()}, &hivev1.Site{Secrets: to.GetSecrets()}
	if !proto.Equal(ea, eb) {
		out = append(out, change("", "secrets", kindOf(len(ea.Secrets), len(eb.Secrets)), ea, eb))
	}
	return out
}

func kindOf(a, b int) hivev1.ChangeKind {
	switch {
	case a == 0:
		return hivev1.ChangeKind_CHANGE_KIND_ADDED
	case b == 0:
		return hivev1.ChangeKind_CHANGE_KIND_REMOVED
	}
	return hivev1.ChangeKind_CHANGE_KIND_MODIFIED
}

func roleHead(r *hivev1.Role) proto.Message {
	return &hivev1.Role{Name: r.GetName(), Description: r.GetDescription()}
}

func rolesByName(s *hivev1.Site) map[string]*hivev1.Role {
	out := map[string]*hivev1.Role{}
	for _, r := range s.GetRoles() {
		out[r.GetName()] = r
	}
	return out
}

// resourcesByKey indexes r's resources by key, each a copy with its source
// position cleared.
func resourcesByKey(r *hivev1.Role) map[string]*hivev1.Resource {
	out := map[string]*hivev1.Resource{}
	for _, res := range r.GetResources() {
		if res.GetSource() != "" {
			res = proto.Clone(res).(*hivev1.Resource)
			res.Source = ""
		}
		out[render.Key(res)] = res
	}
	return out
}

func change(role, key string, kind hivev1.ChangeKind, a, b proto.Message) *hivev1.ResourceChange {
	name := role
	if key != "" {
		name = role + "/" + key
	}
	if role == "" {
		name = key
	}
	return &hivev1.ResourceChange{Role: role, Key: key, Kind: kind, Diff: UnifiedDiff("a/"+name, "b/"+name, canonicalText(a), canonicalText(b))}
}

// canonicalText is the indented JSON form of m ("" for nil), stable within
// and across runs (protojson's deliberate whitespace jitter is removed).
func canonicalText(m proto.Message) string {
	if m == nil {
		return ""
	}
	raw, err := protojson.Marshal(m)
	if err != nil {
		return fmt.Sprintf("<unprintable: %v>\n", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw) + "\n"
	}
	buf.WriteByte('\n')
	return buf.String()
}

// UnifiedDiff returns a unified diff (3 lines of context) from a to b, or
// "" when they are equal.
func UnifiedDiff(nameA, nameB, a, b string) string {
	if a == b {
		return ""
	}
	la, lb := splitLines(a), splitLines(b)
	ops := diffLines(la, lb)
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	const ctx = 3
	// Group ops into hunks.
	type op struct {
		kind byte // ' ', '-', '+'
		line string
		ai   int
		bi   int
	}
	var all []op
	ai, bi := 0, 0
	for _, o := range ops {
		switch o {
		case ' ':
			all = append(all, op{' ', la[ai], ai, bi})
			ai++
			bi++
		case '-':
			all = append(all, op{'-', la[ai], ai, bi})
			ai++
		case '+':
			all = append(all, op{'+', lb[bi], ai, bi})
			bi++
		}
	}
	var changes []int
	for i, o := range all {
		if o.kind != ' ' {
			changes = append(changes, i)
		}
	}
	for i := 0; i < len(changes); {
		j := i
		for j+1 < len(changes) && changes[j+1]-changes[j]-1 <= 2*ctx {
			j++
		}
		start := max(changes[i]-ctx, 0)
		end := min(changes[j]+ctx+1, len(all))
		i = j + 1
		var na, nb int
		for _, o := range all[start:end] {
			if o.kind != '+' {
				na++
			}
			if o.kind != '-' {
				nb++
			}
		}
		sa, sbb := all[start].ai+1, all[start].bi+1
		if na == 0 {
			sa--
		}
		if nb == 0 {
			sbb--
		}
		fmt.Fprintf(&sb, "@@ -%d,%d +%d,%d @@\n", sa, na, sbb, nb)
		for _, o := range all[start:end] {
			sb.WriteByte(o.kind)
			sb.WriteString(o.line)
			sb.WriteByte('\n')
		}
	}
	return sb.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// diffLines returns an edit script (' ', '-', '+') from a to b by longest
// common subsequence; inputs beyond 4M line pairs are replaced whole.
func diffLines(a, b []string) []byte {
	n, m := len(a), len(b)
	if n*m > 4<<20 {
		out := make([]byte, 0, n+m)
		for range a {
			out = append(out, '-')
		}
		for range b {
			out = append(out, '+')
		}
		return out
	}
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else if lcs[i+1][j] >= lcs[i][j+1] {
				lcs[i][j] = lcs[i+1][j]
			} else {
				lcs[i][j] = lcs[i][j+1]
			}
		}
	}
	var out []byte
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			out = append(out, ' ')
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, '-')
			i++
		default:
			out = append(out, '+')
			j++
		}
	}
	for ; i < n; i++ {
		out = append(out, '-')
	}
	for ; j < m; j++ {
		out = append(out, '+')
	}
	return out
}
