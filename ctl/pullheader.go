package ctl

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// The pull header. hivectl pull writes the site text after two comment
// lines recording the generation it came from:
//
//	# hive-pull: generation=7 sha256=<hex> author="alice" time=2026-12-03T11:02:03Z
//	# hive-pull: hivectl push bases this file on generation 7 ...
//
// push (and plan) of a file that starts with such lines take that
// generation as the base of the change, so the push is refused if someone
// pushed since (the lost update between two operators; --force pushes
// anyway). The header lines are removed before the text is sent: the
// generation keeps the text without them (a pull of it carries a fresh
// header, never two), and, being comments, they never change the site or
// its hash. A file without the header is based on the generation current
// when the push is made, as before.
const pullHeaderPrefix = "# hive-pull:"

// pulledFrom is what a pull header records.
type pulledFrom struct {
	Generation uint64
	SHA256     string
	Author     string
	Time       string
}

// pullHeader returns the header for generation g.
func pullHeader(g *hivev1.Generation) []byte {
	sum := g.GetSha256()
	if sum == "" || strings.Trim(sum, "0123456789abcdef") != "" {
		sum = "-" // never anything that could end the comment line
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s generation=%d sha256=%s author=%s time=%s\n", pullHeaderPrefix, g.GetNumber(), sum,
		strconv.Quote(g.GetAuthor()), g.GetTime().AsTime().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "%s 'hivectl push' bases this file on generation %d and is refused if another generation was pushed since (--force overrides). Delete these lines to base it on the current generation.\n",
		pullHeaderPrefix, g.GetNumber())
	return b.Bytes()
}

// splitPullHeader separates a leading pull header from the site text. A
// file without one returns nil and data unchanged. A header whose first
// line does not record a generation is an error (name:line).
func splitPullHeader(name string, data []byte) (*pulledFrom, []byte, error) {
	if !bytes.HasPrefix(data, []byte(pullHeaderPrefix)) {
		return nil, data, nil
	}
	var from *pulledFrom
	rest := data
	line := 0
	for bytes.HasPrefix(rest, []byte(pullHeaderPrefix)) {
		line++
		text := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			text, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		if line > 1 {
			continue
		}
		f, err := parsePullLine(strings.TrimSpace(strings.TrimPrefix(string(text), pullHeaderPrefix)))
		if err != nil {
			return nil, nil, fmt.Errorf("%s:1:1: pull header: %v (delete the %q lines to push based on the current generation)", name, err, pullHeaderPrefix)
		}
		from = f
	}
	return from, rest, nil
}

func parsePullLine(s string) (*pulledFrom, error) {
	f := &pulledFrom{}
	for s != "" {
		key, rest, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("expected key=value, found %q", s)
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, fmt.Errorf("%s: bad quoted value", key)
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			val, rest, _ = strings.Cut(rest, " ")
		}
		s = strings.TrimSpace(rest)
		switch key {
		case "generation":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("generation=%q is not a generation number", val)
			}
			f.Generation = n
		case "sha256":
			f.SHA256 = val
		case "author":
			f.Author = val
		case "time":
			f.Time = val
		}
	}
	if f.Generation == 0 {
		return nil, fmt.Errorf("no generation=N")
	}
	return f, nil
}

// readSiteFile is readSite for push and plan: it validates the whole file
// (positions as the operator sees them) and, when the file starts with a
// pull header, returns the site and text without it, and what it records.
func readSiteFile(cmd *cobra.Command, name, suffix string) (*hivev1.Site, []byte, *pulledFrom, error) {
	s, data, err := readSite(cmd, name, suffix)
	if err != nil {
		return nil, nil, nil, err
	}
	from, body, err := splitPullHeader(name, data)
	if err != nil || from == nil {
		return s, data, nil, err
	}
	if s, err = site.Parse(name, body); err != nil {
		return nil, nil, nil, err // cannot happen: only comment lines went
	}
	return s, body, from, nil
}

// movedOn describes the generations after base (newest first, at most 5):
// who pushed which one when, with what message.
func movedOn(ctx context.Context, c *client.Conn, base, cur uint64) string {
	if cur <= base {
		return ""
	}
	resp, err := c.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: uint32(min(cur-base, 5))})
	if err != nil {
		return ""
	}
	var lines []string
	for _, g := range resp.GetGenerations() {
		if g.GetNumber() <= base {
			continue
		}
		what := "pushed"
		if g.GetRollbackOf() != 0 {
			what = fmt.Sprintf("rolled back to %d", g.GetRollbackOf())
		}
		msg := "(no message)"
		if g.GetMessage() != "" {
			msg = strconv.Quote(g.GetMessage())
		}
		lines = append(lines, fmt.Sprintf("  generation %d %s by %s at %s: %s", g.GetNumber(), what, esc(g.GetAuthor()),
			g.GetTime().AsTime().UTC().Format(time.RFC3339), esc(msg)))
	}
	if n := cur - base; n > uint64(len(lines)) && len(lines) > 0 {
		lines = append(lines, fmt.Sprintf("  (and %d more; see hivectl history)", n-uint64(len(lines))))
	}
	return strings.Join(lines, "\n")
}

// staleFileError is the refusal of a push or plan of a pulled file whose
// generation is no longer current.
func staleFileError(ctx context.Context, c *client.Conn, op, name string, from *pulledFrom, cur uint64, err error) error {
	msg := fmt.Sprintf("%s: %s was pulled from generation %d, but generation %d is current; someone pushed since:\n%s\n"+
		"pull again and redo your change (see 'hivectl diff %d %d'), or push it anyway with --force",
		op, esc(name), from.Generation, cur, movedOn(ctx, c, from.Generation, cur), from.Generation, cur)
	return &cliError{msg: msg, err: err}
}
