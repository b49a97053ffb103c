package ui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pages holds one template set per page (each defines "title" and
// "content" over layout.html; live pages also define "body", the fragment
// /ui/live re-renders).
type pages struct {
	sets map[string]*template.Template
}

var pageNames = []string{"fleet", "node", "generations", "generation", "login", "pending", "extra"}

func newPages() *pages {
	p := &pages{sets: map[string]*template.Template{}}
	for _, n := range pageNames {
		p.sets[n] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+n+".html"))
	}
	return p
}

func (p *pages) render(w http.ResponseWriter, code int, page string, data any) {
	var buf bytes.Buffer
	if err := p.sets[page].Execute(&buf, data); err != nil {
		http.Error(w, "render "+page+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (p *pages) fragment(page string, data any) (string, error) {
	var buf bytes.Buffer
	err := p.sets[page].ExecuteTemplate(&buf, "body", data)
	return buf.String(), err
}

// base is what every page has: the title, the navigation, who is signed
// in, and the page's own data.
type base struct {
	Title  string
	Server string
	User   string
	Nav    []navItem
	Data   any
	// Live is the URL /ui/live polls for this page ("" on static pages),
	// Index the status index the page shows.
	Live  string
	Index string
	Now   time.Time
}

type navItem struct {
	Title, Href string
	Pending     bool
}

func (h *Handler) base(r *http.Request, title string, data any) *base {
	b := &base{Title: title, Server: h.cfg.Server, Data: data, Now: h.cfg.Now()}
	if id := caller(r); id.Name != "" {
		b.User = id.String()
	}
	b.Nav = []navItem{{"Fleet", "/ui/", false}, {"Generations", "/ui/generations", false}}
	extra := map[string]bool{}
	for _, p := range h.cfg.Extra {
		extra[p.Path] = true
		b.Nav = append(b.Nav, navItem{p.Title, "/ui/" + p.Path, false})
	}
	for _, p := range []struct{ path, title string }{{"rollouts", "Rollouts"}, {"events", "Events"}} {
		if !extra[p.path] {
			b.Nav = append(b.Nav, navItem{p.title, "/ui/" + p.path, true})
		}
	}
	return b
}

// visible makes a string from an agent safe to read: control characters
// (but newline and tab when multiline), bidirectional controls (which
// reorder what follows), zero-width and other format characters, and
// invalid UTF-8 are shown as \uXXXX escapes instead. html/template then
// escapes the result for its context.
func visible(s string, multiline bool) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || hide(r, multiline) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case hide(r, multiline):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

func hide(r rune, multiline bool) bool {
	if multiline && (r == '\n' || r == '\t') {
		return false
	}
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || unicode.Is(unicode.Cf, r) ||
		r == '\u2028' || r == '\u2029'
}

var funcs = template.FuncMap{
	"v":     func(s string) string { return visible(s, false) },
	"lines": func(s string) string { return visible(s, true) },
	"phase": phaseName,
	"health": func(h hivev1.Health) string {
		return strings.ToLower(strings.TrimPrefix(h.String(), "HEALTH_"))
	},
	"outcome": func(o hivev1.Outcome) string { return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_")) },
	"cause": func(c hivev1.Cause) string {
		if c == hivev1.Cause_CAUSE_UNSPECIFIED {
			return ""
		}
		return strings.ToLower(strings.TrimPrefix(c.String(), "CAUSE_"))
	},
	"change": func(c hivev1.ChangeKind) string {
		return strings.ToLower(strings.TrimPrefix(c.String(), "CHANGE_KIND_"))
	},
	"gossip": func(g hivev1.GossipState) string {
		if g == hivev1.GossipState_GOSSIP_STATE_UNSPECIFIED {
			return "-"
		}
		return strings.ToLower(strings.TrimPrefix(g.String(), "GOSSIP_STATE_"))
	},
	"ts": func(t *timestamppb.Timestamp) string {
		if t == nil {
			return "-"
		}
		return t.AsTime().UTC().Format(time.RFC3339)
	},
	"ago": func(t *timestamppb.Timestamp, now time.Time) string {
		if t == nil {
			return "never"
		}
		d := now.Sub(t.AsTime())
		switch {
		case d < 0:
			return "just now"
		case d < time.Minute:
			return fmt.Sprintf("%ds ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%dm ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%dh ago", int(d.Hours()))
		}
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	},
	"dur": func(d *durationpb.Duration) string {
		if d == nil {
			return "-"
		}
		return d.AsDuration().Round(time.Millisecond).String()
	},
	"labels": func(m map[string]string) []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			out = append(out, visible(k, false)+"="+visible(v, false))
		}
		sort.Strings(out)
		return out
	},
	"join": func(s []string) string {
		out := make([]string, len(s))
		for i, x := range s {
			out[i] = visible(x, false)
		}
		return strings.Join(out, ", ")
	},
}

func phaseName(p hivev1.Phase) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_"))
}

// phases are the phases the filter offers.
var phases = []string{"pending", "applying", "converged", "failed"}

// fleetData is the fleet page.
type fleetData struct {
	Generation uint64
	Total      int
	Counts     []phaseCount
	Nodes      []*hivev1.NodeStatus
	Roles      []string
	Phases     []string
	// Filter.
	Q, Role, Phase string
}

type phaseCount struct {
	Phase string
	N     int
}

type fleetFilter struct{ q, role, phase string }

func fleetFilterOf(r *http.Request) fleetFilter {
	q := r.URL.Query()
	return fleetFilter{q: strings.TrimSpace(q.Get("q")), role: q.Get("role"), phase: q.Get("phase")}
}

func (f fleetFilter) query() string {
	var parts []string
	for _, kv := range [][2]string{{"q", f.q}, {"role", f.role}, {"phase", f.phase}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+template.URLQueryEscaper(kv[1]))
		}
	}
	return strings.Join(parts, "&")
}

// match: q is a substring of the name, a role or a label (case
// insensitive); role and phase match exactly.
func (f fleetFilter) match(n *hivev1.NodeStatus) bool {
	if f.phase != "" && phaseName(n.GetPhase()) != f.phase {
		return false
	}
	if f.role != "" && !contains(n.GetRoles(), f.role) {
		return false
	}
	if f.q == "" {
		return true
	}
	q := strings.ToLower(f.q)
	if strings.Contains(strings.ToLower(n.GetName()), q) {
		return true
	}
	for _, r := range n.GetRoles() {
		if strings.Contains(strings.ToLower(r), q) {
			return true
		}
	}
	for k, v := range n.GetLabels() {
		if strings.Contains(strings.ToLower(k+"="+v), q) {
			return true
		}
	}
	return false
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func fleetOf(resp *hivev1.GetStatusResponse, f fleetFilter) *fleetData {
	d := &fleetData{Generation: resp.GetGeneration(), Total: len(resp.GetNodes()), Phases: phases, Q: f.q, Role: f.role, Phase: f.phase}
	counts := map[string]int{}
	roles := map[string]bool{}
	for _, n := range resp.GetNodes() {
		counts[phaseName(n.GetPhase())]++
		for _, r := range n.GetRoles() {
			roles[r] = true
		}
		if f.match(n) {
			d.Nodes = append(d.Nodes, n)
		}
	}
	for _, p := range phases {
		d.Counts = append(d.Counts, phaseCount{p, counts[p]})
	}
	for r := range roles {
		d.Roles = append(d.Roles, r)
	}
	sort.Strings(d.Roles)
	return d
}

func (h *Handler) fleet(w http.ResponseWriter, r *http.Request) {
	f := fleetFilterOf(r)
	resp, err := h.cfg.Backend.GetStatus(r.Context(), &hivev1.GetStatusRequest{})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := h.base(r, "Fleet", fleetOf(resp, f))
	b.Live, b.Index = "/ui/live/fleet?"+f.query(), strconv.FormatUint(resp.GetStatusIndex(), 10)
	h.pages.render(w, http.StatusOK, "fleet", b)
}

// nodeData is the node page.
type nodeData struct {
	Node       *hivev1.NodeStatus
	Generation uint64
	// Drifted counts the last run's resources put back from drift,
	// Changed those changed because the desired state changed.
	Drifted, Changed int
	// Repairs are the node's recent drift repairs (newest first), or
	// RepairsError why they could not be read.
	Repairs      []*hivev1.DriftRepair
	RepairsError string
}

// maxRepairsShown bounds the drift repairs the node page lists.
const maxRepairsShown = 50

func (h *Handler) nodeData(r *http.Request, resp *hivev1.GetStatusResponse) *nodeData {
	d := &nodeData{Generation: resp.GetGeneration()}
	if len(resp.GetNodes()) != 1 {
		return d
	}
	d.Node = resp.GetNodes()[0]
	for _, res := range d.Node.GetResults() {
		switch res.GetCause() {
		case hivev1.Cause_CAUSE_DRIFT:
			d.Drifted++
		case hivev1.Cause_CAUSE_CHANGE:
			d.Changed++
		}
	}
	rep, err := h.cfg.Backend.ListDriftRepairs(r.Context(), &hivev1.ListDriftRepairsRequest{Node: d.Node.GetName()})
	if err != nil {
		d.RepairsError = status.Convert(err).Message()
		return d
	}
	d.Repairs = rep.GetRepairs()
	if len(d.Repairs) > maxRepairsShown {
		d.Repairs = d.Repairs[:maxRepairsShown]
	}
	return d
}

func (h *Handler) node(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		http.Error(w, "name: the node's name is required (/ui/node?name=NODE)", http.StatusBadRequest)
		return
	}
	resp, err := h.cfg.Backend.GetStatus(r.Context(), &hivev1.GetStatusRequest{Node: name})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := h.base(r, "Node "+visible(name, false), h.nodeData(r, resp))
	b.Live, b.Index = "/ui/live/node?name="+template.URLQueryEscaper(name), strconv.FormatUint(resp.GetStatusIndex(), 10)
	h.pages.render(w, http.StatusOK, "node", b)
}

// generationsData is the history page.
type generationsData struct {
	Current     uint64
	Generations []*hivev1.GenerationSummary
}

// historyLimit is how many generations the history page lists.
const historyLimit = 200

func generationsOf(resp *hivev1.ListGenerationsResponse) *generationsData {
	return &generationsData{Current: resp.GetCurrent(), Generations: resp.GetGenerations()}
}

func (h *Handler) generations(w http.ResponseWriter, r *http.Request) {
	resp, err := h.cfg.Backend.ListGenerations(r.Context(), &hivev1.ListGenerationsRequest{Limit: historyLimit})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := h.base(r, "Generations", generationsOf(resp))
	b.Live, b.Index = "/ui/live/generations", strconv.FormatUint(resp.GetHistoryIndex(), 10)
	h.pages.render(w, http.StatusOK, "generations", b)
}

// generationData is one generation with its diff from another (its parent
// by default).
type generationData struct {
	Gen     *hivev1.Generation
	From    uint64
	Changes []*hivev1.ResourceChange
}

func (h *Handler) generation(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := strconv.ParseUint(q.Get("n"), 10, 64)
	if err != nil {
		http.Error(w, fmt.Sprintf("n %q: want a generation number", q.Get("n")), http.StatusBadRequest)
		return
	}
	g, err := h.cfg.Backend.GetGeneration(r.Context(), &hivev1.GetGenerationRequest{Number: n})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	from := g.GetGeneration().GetParent()
	if f := q.Get("from"); f != "" {
		if from, err = strconv.ParseUint(f, 10, 64); err != nil {
			http.Error(w, fmt.Sprintf("from %q: want a generation number", f), http.StatusBadRequest)
			return
		}
	}
	diff, err := h.cfg.Backend.DiffGenerations(r.Context(), &hivev1.DiffGenerationsRequest{From: from, To: n})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.pages.render(w, http.StatusOK, "generation", h.base(r, fmt.Sprintf("Generation %d", n),
		&generationData{Gen: g.GetGeneration(), From: from, Changes: diff.GetChanges()}))
}

// liveAnswer is what /ui/live answers: the status index the fragment
// shows (a string: it may not fit a JavaScript number) and the fragment.
type liveAnswer struct {
	Index string `json:"index"`
	HTML  string `json:"html"`
}

// live blocks until the status index passes ?index= (or LiveWait ends),
// then answers with the page's fragment.
func (h *Handler) live(w http.ResponseWriter, r *http.Request) {
	page := r.PathValue("page")
	q := r.URL.Query()
	var since uint64
	if s := q.Get("index"); s != "" {
		var err error
		if since, err = strconv.ParseUint(s, 10, 64); err != nil {
			http.Error(w, fmt.Sprintf("index %q: want a status index", s), http.StatusBadRequest)
			return
		}
	}
	wait := durationpb.New(h.cfg.LiveWait)
	if page == "generations" {
		resp, err := h.cfg.Backend.ListGenerations(r.Context(), &hivev1.ListGenerationsRequest{Limit: historyLimit, MinIndex: since, MaxWait: wait})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.liveAnswer(w, page, h.base(r, "", generationsOf(resp)), resp.GetHistoryIndex())
		return
	}
	req := &hivev1.GetStatusRequest{MinIndex: since, MaxWait: wait}
	switch page {
	case "fleet":
	case "node":
		if req.Node = q.Get("name"); req.Node == "" {
			http.Error(w, "name: the node's name is required", http.StatusBadRequest)
			return
		}
	default:
		for _, p := range h.cfg.Extra {
			if p.Path == page && p.Live != nil {
				html, index, err := p.Live(r, since, h.cfg.LiveWait)
				if err != nil {
					h.fail(w, r, err)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(liveAnswer{Index: strconv.FormatUint(index, 10), HTML: string(html)})
				return
			}
		}
		http.Error(w, fmt.Sprintf("no live page %q", page), http.StatusNotFound)
		return
	}
	resp, err := h.cfg.Backend.GetStatus(r.Context(), req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var data any = fleetOf(resp, fleetFilterOf(r))
	if page == "node" {
		data = h.nodeData(r, resp)
	}
	h.liveAnswer(w, page, h.base(r, "", data), resp.GetStatusIndex())
}

func (h *Handler) liveAnswer(w http.ResponseWriter, page string, b *base, index uint64) {
	html, err := h.pages.fragment(page, b)
	if err != nil {
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(liveAnswer{Index: strconv.FormatUint(index, 10), HTML: html})
}

// fail answers a backend error with its HTTP equivalent.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch status.Code(err) {
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.Unavailable, codes.DeadlineExceeded:
		code = http.StatusServiceUnavailable
	case codes.Canceled:
		code = 499
	}
	http.Error(w, status.Convert(err).Message(), code)
}
