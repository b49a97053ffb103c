package coordinator

import (
	"bytes"
	"html/template"
	"net/http"
	"strings"
	"unicode"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/ui"
)

// The dashboard's Events page (/ui/events): this server's recent events,
// newest first, filtered by ?kind= (a kind or prefix) and ?node=. It is
// rendered on each load (no live updates yet: reload, or use `hivectl
// events --follow`).
func init() {
	dashboardPages = append(dashboardPages, func(s *Server) ui.Page {
		return ui.Page{Title: "Events", Path: "events", Content: s.eventsHTML}
	})
}

// eventsPageMax bounds the events the page shows.
const eventsPageMax = 200

var eventsTmpl = template.Must(template.New("events").Parse(`<h1>Events</h1>
<form method="get" action="/ui/events">
<label>kind <input name="kind" value="{{.Kind}}" placeholder="push, node., run.failed"></label>
<label>node <input name="node" value="{{.Node}}"></label>
<button type="submit">filter</button>
</form>
<p>The newest {{.Shown}} of {{.Total}} events this coordinator keeps{{if .Kind}} of kind {{.Kind}}{{end}}{{if .Node}} for node {{.Node}}{{end}}, newest first. Reload for new ones, or follow them with <code>hivectl events --follow</code>.</p>
<table class="events">
<thead><tr><th>time</th><th>kind</th><th>node</th><th>summary</th></tr></thead>
<tbody>
{{range .Rows}}<tr><td>{{.Time}}</td><td>{{.Kind}}</td><td>{{.Node}}</td><td>{{.Summary}}</td></tr>
{{else}}<tr><td colspan="4">no events</td></tr>
{{end}}</tbody>
</table>
`))

type eventRow struct{ Time, Kind, Node, Summary string }

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

func (s *Server) eventsHTML(r *http.Request) (template.HTML, error) {
	kind, node := printable(r.URL.Query().Get("kind")), printable(r.URL.Query().Get("node"))
	f := events.Filter{Node: node}
	if kind != "" {
		f.Kinds = []string{kind}
	}
	hist := s.ops.events.History(0, f)
	data := struct {
		Kind, Node   string
		Shown, Total int
		Rows         []eventRow
	}{Kind: kind, Node: node, Total: len(hist)}
	for i := len(hist) - 1; i >= 0 && len(data.Rows) < eventsPageMax; i-- {
		e := hist[i]
		data.Rows = append(data.Rows, eventRow{
			Time: e.GetTime().AsTime().UTC().Format("2006-01-02 15:04:05Z"), Kind: printable(e.GetKind()),
			Node: printable(e.GetNode()), Summary: printable(e.GetSummary()),
		})
	}
	data.Shown = len(data.Rows)
	var b bytes.Buffer
	if err := eventsTmpl.Execute(&b, data); err != nil {
		return "", err
	}
	return template.HTML(b.String()), nil
}
