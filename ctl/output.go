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
	"unicode/utf8"

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
		parts = append(parts, esc(k)+"="+esc(l[k]))
	}
	return strings.Join(parts, ",")
}

// listString joins s with commas; "-" when empty.
func listString(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(escAll(s), ",")
}

// oneLine returns the first line of s, marked with "…" when cut, escaped
// (see esc), for table cells.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return esc(strings.ReplaceAll(s[:i], "\t", " ")) + " …"
	}
	return esc(strings.ReplaceAll(s, "\t", " "))
}

// orDash returns s escaped (see esc), or "-" when empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return esc(s)
}

// shortHash abbreviates a hex hash to 12 characters.
func shortHash(h string) string {
	if len(h) > 12 {
		return esc(h[:12])
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

// Text that came from a node or a server (resource keys and messages,
// labels, addresses, versions, errors, authors, history messages) may hold
// control characters meant to rewrite the operator's terminal: clear it
// with "\x1b[2J", go back with "\r", forge a status line with "\n", flip
// text with a bidi override. hivectl neutralises them twice:
//
//   - every table cell and one-line field goes through esc, which escapes
//     every control character, newline and tab included, so a field stays
//     on its line and in its column;
//   - the command's stdout and stderr are termWriters, which escape every
//     control character but newline and tab in whatever is written, so a
//     field a printer forgot cannot reach the terminal raw either.
//
// Escapes are \n, \r, \t, \u00XX and \uXXXX (valid inside JSON strings,
// so -o json stays valid JSON through a termWriter) and \xNN for a byte
// that is not UTF-8. The few writes that must reach the terminal raw (the
// progress line's "\r\033[K", pull's site text when redirected) use
// rawWriter and escape their fields themselves.

// unsafeRune reports whether r must not reach a terminal raw: C0 controls,
// DEL, C1 controls, the bidi embeddings, overrides and isolates and the
// marks and separators that reorder or break lines.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x200e, r == 0x200f, r == 0x061c, r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// escape writes s with every unsafe rune escaped to b; keepLines keeps
// newlines and tabs.
func escape(b *strings.Builder, s string, keepLines bool) {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(b, `\x%02x`, s[i])
		case keepLines && (r == '\n' || r == '\t'), !unsafeRune(r):
			b.WriteString(s[i : i+n])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		default:
			fmt.Fprintf(b, `\u%04x`, r)
		}
		i += n
	}
}

// needsEscape reports whether s holds anything escape would change.
func needsEscape(s string, keepLines bool) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || (unsafeRune(r) && !(keepLines && (r == '\n' || r == '\t'))) {
			return true
		}
		i += n
	}
	return false
}

// esc returns s safe to print as one field of one line: every control
// character escaped, newline and tab included.
func esc(s string) string {
	if !needsEscape(s, false) {
		return s
	}
	var b strings.Builder
	escape(&b, s, false)
	return b.String()
}

// escLines is esc for multi-line text printed as a block: newlines and
// tabs are kept, everything else escaped.
func escLines(s string) string {
	if !needsEscape(s, true) {
		return s
	}
	var b strings.Builder
	escape(&b, s, true)
	return b.String()
}

// escAll applies esc to each element.
func escAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = esc(x)
	}
	return out
}

// termWriter escapes unsafe runes, except newline and tab, in everything
// written through it. A rune split across writes is held back until it is
// complete.
type termWriter struct {
	w       io.Writer
	pending []byte
}

// newTermWriter wraps w; a termWriter is returned as is.
func newTermWriter(w io.Writer) io.Writer {
	if _, ok := w.(*termWriter); ok || w == nil {
		return w
	}
	return &termWriter{w: w}
}

func (t *termWriter) Write(p []byte) (int, error) {
	buf := append(t.pending, p...)
	t.pending = nil
	// Hold back an incomplete rune at the end (at most 3 bytes).
	for k := 1; k <= 3 && k <= len(buf); k++ {
		tail := buf[len(buf)-k:]
		if utf8.RuneStart(tail[0]) {
			if !utf8.FullRune(tail) {
				t.pending = append([]byte(nil), tail...)
				buf = buf[:len(buf)-k]
			}
			break
		}
	}
	s := string(buf)
	if needsEscape(s, true) {
		var b strings.Builder
		escape(&b, s, true)
		s = b.String()
	}
	if _, err := io.WriteString(t.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}

// rawWriter returns the writer under a termWriter, for the few writes
// that must reach the terminal unescaped (see above); w itself otherwise.
func rawWriter(w io.Writer) io.Writer {
	if t, ok := w.(*termWriter); ok {
		return t.w
	}
	return w
}

// fleetCounts are the nodes a generation applies to, by progress.
type fleetCounts struct{ converged, applying, failed, pending int }

func (c fleetCounts) total() int { return c.converged + c.applying + c.failed + c.pending }

// String is the plain progress text: "9/12 converged, 2 applying, 0
// failed, 1 pending".
func (c fleetCounts) String() string {
	return fmt.Sprintf("%d/%d converged, %d applying, %d failed, %d pending", c.converged, c.total(), c.applying, c.failed, c.pending)
}

// Bar cells: converged, applying, failed, pending.
const barCells = "=>x."

// bar draws the counts as width cells ('=' converged, '>' applying, 'x'
// failed, '.' pending) in brackets. Cells are shared in proportion; a
// category with any node gets at least one cell (taken from the largest),
// so one failed node among thousands still shows.
func (c fleetCounts) bar(width int) string {
	n := []int{c.converged, c.applying, c.failed, c.pending}
	total := c.total()
	cells := make([]int, len(n))
	if total > 0 && width >= len(n) {
		sum := 0
		for i, v := range n {
			cells[i] = v * width / total
			if v > 0 && cells[i] == 0 {
				cells[i] = 1
			}
			sum += cells[i]
		}
		// Give or take the difference on the largest category.
		big := 0
		for i := range cells {
			if cells[i] > cells[big] {
				big = i
			}
		}
		cells[big] += width - sum
	} else {
		cells[3] = width
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, k := range cells {
		b.WriteString(strings.Repeat(string(barCells[i]), k))
	}
	b.WriteByte(']')
	return b.String()
}

// progressBarWidth is the bar's width in cells on a terminal.
const progressBarWidth = 30

// liveLine shows a live progress line: on a terminal a bar and the line,
// redrawn in place; otherwise the line alone, once per change (plain lines
// for logs and pipes).
type liveLine struct {
	w     io.Writer
	tty   bool
	last  string
	drawn bool // a line is on the terminal without its newline
}

func newLiveLine(w io.Writer) *liveLine { return &liveLine{w: w, tty: isTerminal(w)} }

// show displays line with the bar of c, if it changed since the last call.
func (p *liveLine) show(line string, c fleetCounts) {
	if line == p.last {
		return
	}
	p.last = line
	if !p.tty {
		fmt.Fprintln(p.w, line)
		return
	}
	// The redraw is ours: the bar and the line hold only numbers, and
	// the line is escaped all the same.
	fmt.Fprintf(rawWriter(p.w), "\r\033[K%s %s", c.bar(progressBarWidth), esc(line))
	p.drawn = true
}

// end finishes a line left open on a terminal.
func (p *liveLine) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
