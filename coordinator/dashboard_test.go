package coordinator

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/ui"
	"github.com/hivefleet/hive/coordinator/ui/uitoken"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// mintToken makes a dashboard token with the certificate and key files f.
func mintToken(t *testing.T, f pkitest.Files, ttl time.Duration, now time.Time) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := uitoken.Mint(leaf, pair.PrivateKey.(crypto.Signer), ttl, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

type httpAnswer struct {
	code int
	body string
	hdr  http.Header
}

// get fetches path from the server's HTTP address with the token (as a
// bearer token unless cookie) and an HTML Accept header.
func dashGet(t *testing.T, base, path, token string, cookie bool) httpAnswer {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	if token != "" {
		if cookie {
			req.AddCookie(&http.Cookie{Name: ui.CookieName, Value: token})
		} else {
			req.Header.Set("Authorization", "Bearer "+token)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpAnswer{resp.StatusCode, string(b), resp.Header}
}

// hostileDashboard are result messages a compromised agent sends to the
// dashboard: markup, script, attribute break-outs, terminal and bidi
// controls.
var hostileDashboard = []string{
	`<script>alert("owned")</script>`,
	`"><img src=x onerror=alert(1)>`,
	"ok\x1b[2J\x1b[H a1 converged",
	"ok\u202edeggol ni",
	"</td></tr><tr class=\"node\" data-node=\"forged\"><td>forged",
}

// TestDashboard runs the dashboard on a real TLS coordinator: who gets in
// (no token, garbage, a tampered or expired token, a token of another CA:
// 401; an agent's token: 403; an admin's token as bearer or through the
// sign-in cookie: 200; /metrics stays open), the security headers, that
// hostile report messages never reach the HTML unescaped, the fleet
// filters, the node and generation pages, and that /ui/live blocks until
// the status moves and then answers the new fragment.
func TestDashboard(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	n := leader(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	base := "http://" + n.HTTPAddr()
	admin := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice")
	retryUnavailable(ctx, t, func() error {
		_, err := admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("v")})
		return err
	})
	g1 := pushRetry(ctx, t, admin, &hivev1.PushRequest{Site: testSite("1.0"), Message: "first <b>push</b>"}).GetGeneration()

	agents := map[string]hivev1.CoordinatorServiceClient{}
	for name, labels := range map[string]map[string]string{"web-1": {"tier": "web"}, "db-1": nil} {
		tc.issueAgent(name, labels)
		a := tc.dial(t, n.GRPCAddr(), pki.KindAgent, name)
		w, err := a.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: name, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		st, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		agents[name] = a
		var results []*hivev1.ResourceResult
		phase := hivev1.Phase_PHASE_CONVERGED
		for i, r := range st.GetState().GetResources() {
			res := &hivev1.ResourceResult{Key: r.GetKey(), Outcome: hivev1.Outcome_OUTCOME_OK}
			if name == "web-1" && i == 0 {
				// A drift repair, with a hostile message.
				res.Outcome, res.Cause, res.Message = hivev1.Outcome_OUTCOME_CHANGED, hivev1.Cause_CAUSE_DRIFT, hostileDashboard[0]+" repaired"
			} else if name == "web-1" {
				res.Outcome, phase = hivev1.Outcome_OUTCOME_FAILED, hivev1.Phase_PHASE_FAILED
				res.Message = strings.Join(hostileDashboard[i%len(hostileDashboard):], " | ")
				res.Drift = true
				res.Diff = "--- a\n+++ b\n-<script>x</script>\n+\x1b[31m"
			}
			results = append(results, res)
		}
		if _, err := a.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: name, Generation: g1, Phase: phase, Seq: 1,
			Results: results, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state"}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "both reports committed", func() bool { return len(n.fsm.Store().Reports()) == 2 })

	now := time.Now()
	adminTok := mintToken(t, tc.files["admin:alice"], time.Hour, now)
	other := pkitest.New(t) // another site's CA
	foreignTok := mintToken(t, other.Issue(pki.KindAdmin, "alice"), time.Hour, now)
	agentTok := mintToken(t, tc.files["agent:web-1"], time.Hour, now)
	coordTok := mintToken(t, tc.files["coordinator:c1"], time.Hour, now)
	expiredTok := mintToken(t, tc.files["admin:alice"], time.Minute, now.Add(-2*time.Minute))
	tampered := adminTok[:len(adminTok)-4] + "AAAA"
	if tampered == adminTok {
		tampered = adminTok[:len(adminTok)-4] + "BBBB"
	}

	t.Run("access", func(t *testing.T) {
		for _, c := range []struct {
			what, token string
			cookie      bool
			want        int
		}{
			{"no token", "", false, 401},
			{"garbage", "hello", false, 401},
			{"garbage cookie", "hdt1.a.b.c", true, 401},
			{"tampered", tampered, false, 401},
			{"expired", expiredTok, false, 401},
			{"another CA's admin", foreignTok, false, 401},
			{"agent certificate", agentTok, false, 403},
			{"coordinator certificate", coordTok, true, 403},
			{"admin bearer", adminTok, false, 200},
			{"admin cookie", adminTok, true, 200},
		} {
			for _, path := range []string{"/ui/", "/ui/node?name=web-1", "/ui/generations", "/ui/generation?n=1", "/ui/live/fleet", "/ui/rollouts"} {
				a := dashGet(t, base, path, c.token, c.cookie)
				if a.code != c.want {
					t.Errorf("%s: GET %s: %d, want %d: %.200s", c.what, path, a.code, c.want, a.body)
				}
				if c.want != 200 && strings.Contains(a.body, `data-node=`) {
					t.Errorf("%s: GET %s shows node data", c.what, path)
				}
				if csp := a.hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
					t.Errorf("%s: GET %s: CSP %q", c.what, path, csp)
				}
			}
		}
		if a := dashGet(t, base, "/metrics", "", false); a.code != 200 {
			t.Errorf("/metrics: %d", a.code)
		}
		if a := dashGet(t, base, "/ui/static/live.js", "", false); a.code != 200 || !strings.Contains(a.body, "/ui/live") {
			t.Errorf("live.js: %d", a.code)
		}
		// The sign-in form sets an HttpOnly, SameSite=Strict cookie.
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		post := func(tok string) *http.Response {
			resp, err := noRedirect.PostForm(base+"/ui/login", url.Values{"token": {tok}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		if r := post(agentTok); r.StatusCode != 403 || len(r.Cookies()) != 0 {
			t.Errorf("sign in with an agent's token: %d, cookies %v", r.StatusCode, r.Cookies())
		}
		if r := post("nonsense"); r.StatusCode != 401 || len(r.Cookies()) != 0 {
			t.Errorf("sign in with garbage: %d, cookies %v", r.StatusCode, r.Cookies())
		}
		r := post(adminTok)
		if r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
			t.Fatalf("sign in: %d, cookies %v", r.StatusCode, r.Cookies())
		}
		if c := r.Cookies()[0]; !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/ui/" || c.Value != adminTok {
			t.Errorf("cookie %+v", c)
		}
		// The sign-in is in the audit log, as the token's admin; refused
		// ones are not.
		au, err := admin.ListAudit(ctx, &hivev1.ListAuditRequest{})
		if err != nil {
			t.Fatal(err)
		}
		signIns := 0
		for _, e := range au.GetEntries() {
			if e.GetRpc() == "POST /ui/login" {
				signIns++
				if e.GetIdentity() != "admin:alice" || !strings.Contains(e.GetSummary(), "dashboard sign-in from 127.0.0.1:") {
					t.Errorf("sign-in audit entry: %v", e)
				}
			}
		}
		if signIns != 1 {
			t.Errorf("%d sign-in audit entries, want 1", signIns)
		}
		// A browser's same-origin form post over plain HTTP carries Origin
		// and no Sec-Fetch-Site (Referrer-Policy same-origin: with
		// no-referrer, Chromium sent "Origin: null" and was refused).
		same, _ := http.NewRequest("POST", base+"/ui/login", strings.NewReader("token="+url.QueryEscape(adminTok)))
		same.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		same.Header.Set("Origin", base)
		if resp, err := noRedirect.Do(same); err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("same-origin sign in: %v %v", resp, err)
		}
		// A cross-site form post is refused (Sec-Fetch-Site).
		req, _ := http.NewRequest("POST", base+"/ui/login", strings.NewReader("token="+adminTok))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		if resp, err := noRedirect.Do(req); err != nil || resp.StatusCode != 403 {
			t.Errorf("cross-site sign in: %v %v", resp.StatusCode, err)
		}
	})

	t.Run("escaping", func(t *testing.T) {
		for _, path := range []string{"/ui/", "/ui/node?name=web-1", "/ui/generations", "/ui/generation?n=1"} {
			a := dashGet(t, base, path, adminTok, false)
			if a.code != 200 {
				t.Fatalf("GET %s: %d %s", path, a.code, a.body)
			}
			for _, bad := range []string{"<script>alert", "<img", "onerror=alert(1)>", "\x1b", "\u202e", `data-node="forged"`, "<b>push</b>"} {
				if strings.Contains(a.body, bad) {
					t.Errorf("GET %s contains %q raw", path, bad)
				}
			}
		}
		node := dashGet(t, base, "/ui/node?name=web-1", adminTok, false).body
		for _, want := range []string{"&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;", `ok\u001b[2J`, `ok\u202edeggol`, "1 resources had drifted", `<span class="cause drift">drift</span>`, `<tr class="repair">`, "&lt;/script&gt; repaired", "failed", `\u001b[31m`} {
			if !strings.Contains(node, want) {
				t.Errorf("node page lacks %q", want)
			}
		}
		hist := dashGet(t, base, "/ui/generations", adminTok, false).body
		if !strings.Contains(hist, "first &lt;b&gt;push&lt;/b&gt;") {
			t.Errorf("history page lacks the escaped message")
		}
		diff := dashGet(t, base, "/ui/generation?n=1", adminTok, false).body
		if !strings.Contains(diff, "package:nginx") || !strings.Contains(diff, "added") {
			t.Errorf("generation 1 lacks its added resources:\n%s", diff)
		}
	})

	t.Run("filters", func(t *testing.T) {
		for q, want := range map[string]string{
			"?phase=failed": "web-1", "?phase=converged": "db-1", "?role=db": "db-1", "?role=web": "web-1",
			"?q=WEB": "web-1", "?q=tier%3Dweb": "web-1", "?q=db": "db-1", "?q=nothing": "", "?phase=converged&role=web": "",
		} {
			body := dashGet(t, base, "/ui/"+q, adminTok, false).body
			var got []string
			for _, n := range []string{"web-1", "db-1"} {
				if strings.Contains(body, `data-node="`+n+`"`) {
					got = append(got, n)
				}
			}
			if strings.Join(got, ",") != want {
				t.Errorf("/ui/%s shows %v, want %q", q, got, want)
			}
		}
	})

	t.Run("live", func(t *testing.T) {
		first := dashGet(t, base, "/ui/live/fleet?phase=converged", adminTok, false)
		var a0 struct{ Index, HTML string }
		if err := json.Unmarshal([]byte(first.body), &a0); err != nil || a0.Index == "" || a0.Index == "0" {
			t.Fatalf("live answer %q: %v", first.body, err)
		}
		if strings.Contains(a0.HTML, `data-node="web-1"`) || !strings.Contains(a0.HTML, `data-node="db-1"`) {
			t.Errorf("live fragment ignores the filter: %s", a0.HTML)
		}
		type res struct {
			a    httpAnswer
			took time.Duration
		}
		done := make(chan res, 1)
		go func() {
			start := time.Now()
			a := dashGet(t, base, "/ui/live/fleet?phase=converged&index="+a0.Index, adminTok, false)
			done <- res{a, time.Since(start)}
		}()
		select {
		case r := <-done:
			t.Fatalf("live answered at once, with nothing new: %d %s", r.a.code, r.a.body)
		case <-time.After(500 * time.Millisecond):
		}
		// web-1 converges: the waiting request answers with it.
		if _, err := agents["web-1"].Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "web-1", Generation: g1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 2,
			Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state"}}); err != nil {
			t.Fatal(err)
		}
		r := <-done
		var a1 struct{ Index, HTML string }
		if err := json.Unmarshal([]byte(r.a.body), &a1); err != nil {
			t.Fatalf("live answer %q: %v", r.a.body, err)
		}
		if a1.Index == a0.Index || !strings.Contains(a1.HTML, `data-node="web-1"`) {
			t.Errorf("after web-1 converged (%v): index %s -> %s, fragment %s", r.took, a0.Index, a1.Index, a1.HTML)
		}
		t.Logf("live answered %v after the wait began", r.took.Round(time.Millisecond))
		if a := dashGet(t, base, "/ui/live/fleet?index=x", adminTok, false); a.code != 400 {
			t.Errorf("bad index: %d", a.code)
		}
		if a := dashGet(t, base, "/ui/live/nope", adminTok, false); a.code != 404 {
			t.Errorf("unknown live page: %d", a.code)
		}
	})
}

// TestDashboardDevLoopback: a --dev server's dashboard is open to loopback
// callers without a token (the dev API is), and has no CA to check one.
func TestDashboardDevLoopback(t *testing.T) {
	n := startDev(t)
	base := "http://" + n.HTTPAddr()
	if a := dashGet(t, base, "/ui/", "", false); a.code != 200 || !strings.Contains(a.body, "generation <b>0</b>") {
		t.Errorf("dev loopback: %d %.300s", a.code, a.body)
	}
	if a := dashGet(t, base, "/ui/", "hdt1.x.y.z", false); a.code != 401 {
		t.Errorf("dev with a bad token: %d", a.code)
	}
}

// liveGet fetches a /ui/live answer.
func liveGet(t *testing.T, base, path string) (index, html string) {
	t.Helper()
	a := dashGet(t, base, path, "", false)
	var j struct{ Index, HTML string }
	if err := json.Unmarshal([]byte(a.body), &j); err != nil || a.code != 200 {
		t.Fatalf("live %s: %d %q: %v", path, a.code, a.body, err)
	}
	return j.Index, j.HTML
}

// liveWait long-polls path from index in the background.
func liveWait(t *testing.T, base, path, index string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		a := dashGet(t, base, path+sep+"index="+index, "", false)
		ch <- a.body
	}()
	return ch
}

// TestDashboardRolloutsAndEventsLive: the rollouts page follows a rollout
// (its live poll answers when a wave opens, and shows every node healthy
// and the rollout completed at the end) and the events page's live poll
// answers when an event of its filter is published, not before.
func TestDashboardRolloutsAndEventsLive(t *testing.T) {
	f := newRolloutFleet(t, 3)
	base := "http://" + f.n.HTTPAddr()
	if a := dashGet(t, base, "/ui/rollouts", "", false); a.code != 200 || !strings.Contains(a.body, `data-state="none"`) || !strings.Contains(a.body, `data-live="/ui/live/rollouts"`) {
		t.Fatalf("rollouts page before any rollout: %d %.500s", a.code, a.body)
	}
	f.push(rolloutSite("1"), nil)
	f.converge(f.nodes...)
	i0, _ := liveGet(t, base, "/ui/live/rollouts")
	wait := liveWait(t, base, "/ui/live/rollouts", i0)
	select {
	case b := <-wait:
		t.Fatalf("live rollouts answered with nothing new: %.300s", b)
	case <-time.After(300 * time.Millisecond):
	}
	g2 := f.push(rolloutSite("2"), &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1))})
	var j struct{ Index, HTML string }
	if err := json.Unmarshal([]byte(<-wait), &j); err != nil || !strings.Contains(j.HTML, fmt.Sprintf(`data-generation="%d" data-state="running"`, g2)) || !strings.Contains(j.HTML, `data-opened="1"`) {
		t.Fatalf("live rollouts after the push: %v %.1000s", err, j.HTML)
	}
	f.converge("web-1")
	f.waitState("wave 2", func(r *hivev1.Rollout) bool { return r.GetOpened() == 2 })
	f.converge("web-2", "web-3")
	f.waitState("completed", func(r *hivev1.Rollout) bool { return r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED })
	_, html := liveGet(t, base, "/ui/live/rollouts")
	for _, want := range []string{`data-state="completed"`, `data-healthy="3"`, `class="wave" data-wave="2" data-state="healthy"`, `data-kind="rollout.completed"`, `data-kind="rollout.wave_opened"`} {
		if !strings.Contains(html, want) {
			t.Errorf("rollouts page at the end lacks %s: %.3000s", want, html)
		}
	}

	// Events: the page filters, and its live poll waits for a match.
	if a := dashGet(t, base, "/ui/events?kind=rollout.", "", false); a.code != 200 || !strings.Contains(a.body, `data-live="/ui/live/events?kind=rollout."`) || !strings.Contains(a.body, `data-kind="rollout.started"`) || strings.Contains(a.body, `data-kind="push"`) {
		t.Fatalf("events page: %d %.2000s", a.code, a.body)
	}
	e0, _ := liveGet(t, base, "/ui/live/events?kind=node.labeled")
	ev := liveWait(t, base, "/ui/live/events?kind=node.labeled", e0)
	f.converge(f.nodes...) // events of other kinds: no answer
	select {
	case b := <-ev:
		t.Fatalf("live events answered without a matching event: %.300s", b)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := f.c.LabelNode(f.ctx, &hivev1.LabelNodeRequest{Node: "web-2", Set: map[string]string{"zone": "b"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-ev:
		if err := json.Unmarshal([]byte(b), &j); err != nil || j.Index == e0 || !strings.Contains(j.HTML, `data-kind="node.labeled" data-node="web-2"`) {
			t.Fatalf("live events after the label: %v %.1000s", err, b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live events did not answer the label")
	}
}
