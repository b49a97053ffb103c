package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/ui"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The dashboard's Rollouts page (/ui/rollouts): the latest rollout, as
// `hivectl rollout status` shows it: its state, each wave (opened, healthy
// or waiting), each planned node's target, applied generation, phase and
// health, and the rollout's events. It is live: /ui/live/rollouts answers
// once this server applied a newer raft index (a report, a wave opened, a
// pause). The generation's diff is the generation page's (linked).
func init() {
	dashboardPages = append(dashboardPages, func(s *Server) ui.Page {
		return ui.Page{Title: "Rollouts", Path: "rollouts", Content: s.rolloutsHTML, Live: s.rolloutsLive}
	})
}

var rolloutTmpl = template.Must(template.New("rollout").Funcs(template.FuncMap{"p": printable}).Parse(`
{{- if .None}}<p class="empty" id="rollout" data-state="none">No rollout yet: a push whose site (or flags) asks for a canary or waves starts one. See the <a href="/ui/generations">generations</a> for every push.</p>
{{- else}}
<p class="summary" id="rollout" data-generation="{{.Generation}}" data-state="{{.State}}" data-nodes="{{len .Nodes}}" data-healthy="{{.Healthy}}" data-opened="{{.Opened}}" data-waves="{{len .Waves}}">
rollout of <a href="/ui/generation?n={{.Generation}}">generation {{.Generation}}</a> (diff from {{.Base}}) · <span class="phase {{.StateClass}}">{{.State}}</span>
· {{.Opened}} of {{len .Waves}} waves open · {{.Healthy}} of {{len .Nodes}} nodes healthy
{{- if .HealthyFor}} · open wave healthy for {{.HealthyFor}}{{end}}</p>
<dl class="facts">
<dt>pushed by</dt><dd>{{p .Author}} at {{.Started}}</dd>
{{if .ChangedBy}}<dt>last changed by</dt><dd>{{p .ChangedBy}} at {{.Updated}}</dd>{{end}}
{{if .Reason}}<dt>reason</dt><dd class="bad">{{p .Reason}}</dd>{{end}}
{{if .Revert}}<dt>reverted by</dt><dd><a href="/ui/generation?n={{.Revert}}">generation {{.Revert}}</a> (the content of generation {{.Base}})</dd>{{end}}
</dl>
<h2>Waves</h2>
<table class="waves" id="waves">
<thead><tr><th>wave</th><th>nodes</th><th>healthy</th><th>state</th><th>opened</th><th>min healthy time</th><th>deadline</th><th>on failure</th></tr></thead>
<tbody>
{{range .Waves}}<tr class="wave" data-wave="{{.N}}" data-state="{{.State}}"><td>{{.N}}{{if .Canary}} (canary){{end}}</td><td>{{.Nodes}}</td><td>{{.Healthy}}</td><td><span class="phase {{.Class}}">{{.State}}</span></td><td>{{.Opened}}</td><td>{{.MinHealthy}}</td><td>{{.Deadline}}</td><td>{{.OnFailure}}</td></tr>
{{end}}</tbody>
</table>
<h2>Nodes</h2>
<table class="nodes" id="rollout-nodes">
<thead><tr><th>node</th><th>wave</th><th>target</th><th>applied</th><th>phase</th><th>health</th><th>note</th></tr></thead>
<tbody>
{{range .Nodes}}<tr class="rnode" data-node="{{p .Name}}" data-wave="{{.Wave}}" data-healthy="{{.Healthy}}" data-target="{{.Target}}">
<td><a href="/ui/node?name={{.Name}}">{{p .Name}}</a></td><td>{{.Wave}}</td><td>{{.Target}}{{if ne .Target .From}} (was {{.From}}){{end}}</td><td>{{.Applied}}</td>
<td><span class="phase {{.Phase}}">{{.Phase}}</span></td><td>{{if .Health}}<span class="health {{.Health}}">{{.Health}}</span>{{else}}-{{end}}{{if .Healthy}} ✓{{end}}</td><td class="bad">{{p .Message}}</td></tr>
{{end}}</tbody>
</table>
<h2>Events</h2>
<table class="events" id="rollout-events">
<thead><tr><th>time</th><th>kind</th><th>node</th><th>summary</th></tr></thead>
<tbody>
{{range .Events}}<tr class="event" data-kind="{{.Kind}}"><td>{{.Time}}</td><td>{{.Kind}}</td><td>{{.Node}}</td><td>{{.Summary}}</td></tr>
{{else}}<tr><td colspan="4" class="empty">none kept on this coordinator</td></tr>
{{end}}</tbody>
</table>
{{- end}}`))

type rolloutWaveRow struct {
	N, Nodes, Healthy                                     int
	Canary                                                bool
	State, Class, Opened, MinHealthy, Deadline, OnFailure string
}

type rolloutNodeRow struct {
	Name, Phase, Health, Message string
	Wave                         int
	Target, From, Applied        uint64
	Healthy                      bool
}

type rolloutPageData struct {
	None                                                                       bool
	Generation, Base, Revert                                                   uint64
	State, StateClass, Author, ChangedBy, Reason, Started, Updated, HealthyFor string
	Opened, Healthy                                                            int
	Waves                                                                      []rolloutWaveRow
	Nodes                                                                      []rolloutNodeRow
	Events                                                                     []eventRow
}

// rolloutEventsMax bounds the events the rollouts page lists.
const rolloutEventsMax = 50

func lower(enum fmt.Stringer, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(enum.String(), prefix))
}

const pageTime = "2006-01-02 15:04:05Z"

func (s *Server) rolloutPage() (rolloutPageData, uint64) {
	rs := s.rolloutStatus()
	if rs == nil {
		return rolloutPageData{None: true}, s.fsm.Store().Index()
	}
	r := rs.GetRollout()
	d := rolloutPageData{
		Generation: r.GetGeneration(), Base: r.GetBaseGeneration(), Revert: r.GetRevertGeneration(),
		State: rolloutStateName(r.GetState()), Author: r.GetAuthor(), ChangedBy: r.GetChangedBy(), Reason: r.GetReason(),
		Started: r.GetStarted().AsTime().UTC().Format(pageTime), Updated: r.GetUpdated().AsTime().UTC().Format(pageTime),
		Opened: int(r.GetOpened()),
	}
	switch r.GetState() {
	case hivev1.RolloutState_ROLLOUT_STATE_COMPLETED:
		d.StateClass = "converged"
	case hivev1.RolloutState_ROLLOUT_STATE_RUNNING:
		d.StateClass = "applying"
	default:
		d.StateClass = "failed"
	}
	if h := rs.GetWaveHealthyFor(); h != nil {
		d.HealthyFor = h.AsDuration().Round(100 * time.Millisecond).String()
	}
	healthyIn := make([]int, len(r.GetWaves()))
	for _, n := range rs.GetNodes() {
		row := rolloutNodeRow{Name: n.GetName(), Wave: int(n.GetWave()) + 1, Target: n.GetTargetGeneration(), From: n.GetFromGeneration(),
			Applied: n.GetAppliedGeneration(), Phase: lower(n.GetPhase(), "PHASE_"), Healthy: n.GetHealthy(), Message: n.GetMessage()}
		if n.GetHealth() != hivev1.Health_HEALTH_UNSPECIFIED {
			row.Health = lower(n.GetHealth(), "HEALTH_")
		}
		if n.GetHealthy() {
			d.Healthy++
			if int(n.GetWave()) < len(healthyIn) {
				healthyIn[n.GetWave()]++
			}
		}
		d.Nodes = append(d.Nodes, row)
	}
	for i, w := range r.GetWaves() {
		row := rolloutWaveRow{N: i + 1, Canary: w.GetCanary(), Nodes: len(w.GetNodes()), Healthy: healthyIn[i],
			MinHealthy: w.GetMinHealthyTime().AsDuration().String(), OnFailure: lower(w.GetOnFailure(), "ROLLOUT_ON_FAILURE_"),
			State: "waiting", Class: "pending", Opened: "-"}
		if dl := w.GetHealthyDeadline().AsDuration(); dl > 0 {
			row.Deadline = dl.String()
		} else {
			row.Deadline = DefaultHealthyDeadline.String() + " (default)"
		}
		if row.OnFailure == "unspecified" {
			row.OnFailure = "pause"
		}
		if w.GetOpened() != nil {
			row.Opened = w.GetOpened().AsTime().UTC().Format(pageTime)
			row.State, row.Class = "open", "applying"
			if row.Healthy == row.Nodes {
				row.State, row.Class = "healthy", "converged"
			}
		}
		d.Waves = append(d.Waves, row)
	}
	hist := s.ops.events.History(0, events.Filter{Kinds: []string{"rollout.", "push"}})
	gen := u64(r.GetGeneration())
	for i := len(hist) - 1; i >= 0 && len(d.Events) < rolloutEventsMax; i-- {
		if e := hist[i]; e.GetFields()["generation"] == gen {
			d.Events = append(d.Events, eventRowOf(e))
		}
	}
	return d, rs.GetRaftIndex()
}

func (s *Server) renderRollout() (template.HTML, uint64, error) {
	d, index := s.rolloutPage()
	var b bytes.Buffer
	if err := rolloutTmpl.Execute(&b, d); err != nil {
		return "", 0, err
	}
	return template.HTML(b.String()), index, nil
}

var rolloutsPageTmpl = template.Must(template.New("rollouts").Parse(`<p>The latest rollout, as <code>hivectl rollout status</code> shows it; this page follows it live. Pause, resume, promote or abort it with <code>hivectl rollout</code>.</p>
<div id="live" data-live="/ui/live/rollouts" data-index="{{.Index}}">{{.Body}}</div>
`))

func (s *Server) rolloutsHTML(r *http.Request) (template.HTML, error) {
	body, index, err := s.renderRollout()
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := rolloutsPageTmpl.Execute(&b, struct {
		Index uint64
		Body  template.HTML
	}{index, body}); err != nil {
		return "", err
	}
	return template.HTML(b.String()), nil
}

// rolloutsLive answers the live poll of the rollouts page once this
// server's state moved past index (or the wait ended; while a wave is
// healthy and waiting, at least every second so its healthy time moves).
func (s *Server) rolloutsLive(r *http.Request, index uint64, wait time.Duration) (template.HTML, uint64, error) {
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	for {
		ch := s.statusw.view().ch
		if s.fsm.Store().Index() != index {
			break
		}
		var tick <-chan time.Time
		if rs := s.rolloutStatus(); rs != nil && rs.GetWaveHealthyFor() != nil {
			t := time.NewTimer(time.Second)
			tick = t.C
			defer t.Stop()
		}
		select {
		case <-ch:
			continue
		case <-tick:
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
		break
	}
	return s.renderRollout()
}
