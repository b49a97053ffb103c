package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Output formats of -o.
const (
	outTable = "table"
	outJSON  = "json"
)

// addOutputFlag registers -o/--output table|json on cmd.
func addOutputFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVarP(p, "output", "o", outTable, "output format: table or json")
}

// checkOutput validates the -o value.
func checkOutput(o string) error {
	switch o {
	case outTable, outJSON:
		return nil
	}
	return fmt.Errorf("unknown output format %q: want table or json", o)
}

// writeJSON writes v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// newTable returns a tab writer for aligned columns; Flush it.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// enumName turns PHASE_CONVERGED into "converged" given the prefix
// "PHASE_"; the zero (UNSPECIFIED) value becomes "unknown".
func enumName(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	if s == "UNSPECIFIED" || s == "" {
		return "unknown"
	}
	return strings.ToLower(s)
}

func phaseName(p hivev1.Phase) string { return enumName(p.String(), "PHASE_") }
func gossipName(g hivev1.GossipState) string {
	return enumName(g.String(), "GOSSIP_STATE_")
}
func kindName(k hivev1.MemberKind) string { return enumName(k.String(), "MEMBER_KIND_") }
func raftName(r hivev1.RaftRole) string {
	if r == hivev1.RaftRole_RAFT_ROLE_UNSPECIFIED {
		return "none"
	}
	return enumName(r.String(), "RAFT_ROLE_")
}
func changeName(c hivev1.ChangeKind) string { return enumName(c.String(), "CHANGE_KIND_") }
func outcomeName(o hivev1.Outcome) string   { return enumName(o.String(), "OUTCOME_") }

// timeOrNil returns a UTC time for JSON, nil for an unset timestamp.
func timeOrNil(ts *timestamppb.Timestamp) *time.Time {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return nil
	}
	t := ts.AsTime().UTC()
	return &t
}

// ago renders how long before now t was, coarsely: "12s ago", "5m ago",
// "3h ago", "4d ago"; "never" for nil.
func ago(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	d := now.Sub(*t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// clock renders a time in UTC for tables.
func clock(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// labelString renders labels as k=v,k=v sorted by key; "-" when empty.
func labelString(l map[string]string) string {
	if len(l) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// listString joins s with commas; "-" when empty.
func listString(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

// oneLine returns the first line of s, marked with "…" when cut, for
// table cells.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return strings.ReplaceAll(s[:i], "\t", " ") + " …"
	}
	return strings.ReplaceAll(s, "\t", " ")
}

// orDash returns s or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortHash abbreviates a hex hash to 12 characters.
func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return orDash(h)
}

// nonNilMap and nonNilSlice make JSON show {} and [] instead of null.
func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
