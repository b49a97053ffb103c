package coordinator

import (
	"bytes"
	"context"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/ui"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The dashboard's Events page (/ui/events): this server's recent events,
// newest first, filtered by ?kind= (a kind or prefix) and ?node=. It is
// live: /ui/live/events?kind=&node= answers as soon as a matching event
// is published after the one the page shows (index: the hub's seq).
func init() {
	dashboardPages = append(dashboardPages, func(s *Server) ui.Page {
		return ui.Page{Title: "Events", Path: "events", Content: s.eventsHTML, Live: s.eventsLive}
	})
}

// eventsPageMax bounds the events the page shows.
const eventsPageMax = 200

var eventsTmpl = template.Must(template.New("events").Parse(`<form method="get" action="/ui/events" class="filters">
<label>kind <input name="kind" value="{{.Kind}}" placeholder="push, node., rollout."></label>
<label>node <input name="node" value="{{.Node}}"></label>
<button type="submit">filter</button>
</form>
<p>Events this coordinator keeps (the last 2,000){{if .Kind}} of kind {{.Kind}}{{end}}{{if .Node}} for node {{.Node}}{{end}}, newest first; new ones appear as they happen (as with <code>hivectl events --follow</code>).</p>
<div id="live" data-live="{{.Live}}" data-index="{{.Index}}">{{.Table}}</div>
`))

var eventsTableTmpl = template.Must(template.New("events-table").Parse(`<p class="summary" id="events-summary" data-shown="{{.Shown}}" data-total="{{.Total}}">the newest {{.Shown}} of {{.Total}}</p>
<table class="events" id="events">
<thead><tr><th>time</th><th>kind</th><th>node</th><th>summary</th></tr></thead>
<tbody>
{{range .Rows}}<tr class="event" data-kind="{{.Kind}}" data-node="{{.Node}}"><td>{{.Time}}</td><td>{{.Kind}}</td><td>{{.Node}}</td><td>{{.Summary}}</td></tr>
{{else}}<tr><td colspan="4" class="empty">no events</td></tr>
{{end}}</tbody>
</table>
`))

type eventRow struct{ Time, Kind, Node, Summary string }

func eventRowOf(e *hivev1.Event) eventRow {
	return eventRow{
		Time: e.GetTime().AsTime().UTC().Format(pageTime), Kind: printable(e.GetKind()),
		Node: printable(e.GetNode()), Summary: printable(e.GetSummary()),
	}
}

// printable drops control and format characters (agents' messages are
// untrusted; html/template escapes the rest).
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' {
			return ' '
		}
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == unicode.ReplacementChar {
			return -1
		}
		return r
	}, s)
}

// eventsFilter reads the page's ?kind= and ?node=.
func eventsFilter(r *http.Request) (kind, node string, f events.Filter) {
	kind, node = printable(r.URL.Query().Get("kind")), printable(r.URL.Query().Get("node"))
	f = events.Filter{Node: node}
	if kind != "" {
		f.Kinds = []string{kind}
	}
	return kind, node, f
}

// eventsTable renders the newest matching events and returns the hub's
// seq they were read at.
func (s *Server) eventsTable(f events.Filter) (template.HTML, uint64, error) {
	hub := s.ops.events
	seq := hub.Seq()
	hist := hub.History(0, f)
	data := struct {
		Shown, Total int
		Rows         []eventRow
	}{Total: len(hist)}
	for i := len(hist) - 1; i >= 0 && len(data.Rows) < eventsPageMax; i-- {
		data.Rows = append(data.Rows, eventRowOf(hist[i]))
	}
	data.Shown = len(data.Rows)
	var b bytes.Buffer
	if err := eventsTableTmpl.Execute(&b, data); err != nil {
		return "", 0, err
	}
	return template.HTML(b.String()), seq, nil
}

func (s *Server) eventsHTML(r *http.Request) (template.HTML, error) {
	kind, node, f := eventsFilter(r)
	table, seq, err := s.eventsTable(f)
	if err != nil {
		return "", err
	}
	q := url.Values{}
	if kind != "" {
		q.Set("kind", kind)
	}
	if node != "" {
		q.Set("node", node)
	}
	live := "/ui/live/events"
	if len(q) > 0 {
		live += "?" + q.Encode()
	}
	var b bytes.Buffer
	if err := eventsTmpl.Execute(&b, struct {
		Kind, Node, Live string
		Index            uint64
		Table            template.HTML
	}{kind, node, live, seq, table}); err != nil {
		return "", err
	}
	return template.HTML(b.String()), nil
}

// eventsLive answers the events page's live poll when an event matching
// its filter is published after seq index (at once if the hub is at
// another seq than the page thinks, e.g. after a restart), or when the
// wait ends.
func (s *Server) eventsLive(r *http.Request, index uint64, wait time.Duration) (template.HTML, uint64, error) {
	_, _, f := eventsFilter(r)
	hub := s.ops.events
	if hub.Seq() == index {
		hist, sub := hub.Subscribe(index, f)
		if len(hist) == 0 {
			ctx, cancel := context.WithTimeout(r.Context(), wait)
			select {
			case <-sub.C():
			case <-ctx.Done():
			case <-s.ctx.Done():
			}
			cancel()
		}
		sub.Close()
	}
	return s.eventsTable(f)
}
