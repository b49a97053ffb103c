package netlabtests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/hivefleet/hive/internal/testenv"
)

// The dashboard scenarios drive a real headless Chromium (Debian's
// chromium package) with the Chrome DevTools protocol (chromedp). The
// browser must run on the lab's network, so the test binary runs itself on
// the admin host as a helper (NETLAB_DASHBOARD=fleet|escape, the test
// TestDashboardBrowserHelper), which starts Chromium there and talks to the
// test over its standard input and output: lines "DASH WORD ...".
//
// Screenshots go to $HIVE_TEST_ARTIFACTS/TEST_NAME/ (default: the test's
// temporary directory, removed afterwards).

// artifactDir is where a test saves its screenshots.
func artifactDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("HIVE_TEST_ARTIFACTS")
	if root == "" {
		return t.TempDir()
	}
	dir := filepath.Join(root, strings.ReplaceAll(t.Name(), "/", "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dashboardToken makes a read-only dashboard token with the real hivectl
// on the admin host (signed with the admin certificate's key).
func (c *cluster) dashboardToken(ctx context.Context) string {
	c.t.Helper()
	out, err := c.ctl(ctx, "dashboard", "token", "--ttl", "15m", "-o", "json")
	if err != nil {
		c.t.Fatalf("hivectl dashboard token: %v\n%s", err, out)
	}
	var r struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal(out, &r); err != nil || !strings.HasPrefix(r.Token, "hdt1.") {
		c.t.Fatalf("hivectl dashboard token: %q: %v", out, err)
	}
	return r.Token
}

// browser is the helper process running Chromium on the admin host.
type browser struct {
	t     *testing.T
	stdin io.WriteCloser
	lines chan string
	wait  func() error
	out   *strings.Builder
	mu    *sync.Mutex
}

// startBrowser starts the helper in mode on the admin host against the
// dashboard of coordinator co; env adds NAME=VALUE settings.
func (c *cluster) startBrowser(t *testing.T, ctx context.Context, mode string, co *node, env ...string) *browser {
	t.Helper()
	chromium := testenv.RequireTool(t, "chromium")
	tokFile := filepath.Join(c.dir, "dashboard.token")
	if err := os.WriteFile(tokFile, []byte(c.dashboardToken(ctx)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := c.admin.Command(ctx, os.Args[0], "-test.run=^TestDashboardBrowserHelper$", "-test.v")
	cmd.Env = append(append(os.Environ(),
		"NETLAB_DASHBOARD="+mode,
		"NETLAB_CHROMIUM="+chromium,
		"NETLAB_URL=http://"+co.host.Addr+":"+httpPort,
		"NETLAB_TOKEN_FILE="+tokFile,
		"NETLAB_ARTIFACTS="+artifactDir(t),
		"GORACE=atexit_sleep_ms=0",
	), env...)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, stdin: stdin, lines: make(chan string, 16), wait: cmd.Wait, out: &out, mu: &sync.Mutex{}}
	go func() {
		defer close(b.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			b.mu.Lock()
			out.WriteString(l + "\n")
			b.mu.Unlock()
			if rest, ok := strings.CutPrefix(l, "DASH "); ok {
				b.lines <- rest
			}
		}
	}()
	t.Cleanup(func() { stdin.Close(); _ = cmd.Wait() })
	return b
}

// expect waits for the helper's next "DASH WORD rest" line and returns rest.
func (b *browser) expect(word string, timeout time.Duration) string {
	b.t.Helper()
	select {
	case l, ok := <-b.lines:
		if ok {
			if rest, found := strings.CutPrefix(l, word); found {
				return strings.TrimSpace(rest)
			}
			b.t.Fatalf("browser helper: %q, want %s", l, word)
		}
	case <-time.After(timeout):
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.t.Fatalf("browser helper: no %s within %v; its output:\n%s", word, timeout, b.out.String())
	return ""
}

// TestDashboardFleet (issue 17, the dashboard's "done when"): 20 real agents
// and 3 coordinators; a real Chromium on the admin host signs in to a
// coordinator's dashboard with a token from `hivectl dashboard token`,
// sees 20 nodes converged on the first generation; then a push, and the
// same page — never reloaded (a marker set in the page survives) — shows
// all 20 converge on the new generation through its live long-poll.
// Then the Rollouts page, open before a push with waves (a canary, then
// waves of 10), follows that rollout to "completed" with all 20 nodes
// healthy, and the Events page shows a node label event as it happens,
// neither reloaded. Screenshots of the fleet, a node, the generation diff,
// the history, the rollout and the events are saved (docs/testing.md).
func TestDashboardFleet(t *testing.T) {
	agents := envInt("NETLAB_DASHBOARD_AGENTS", 20)
	start := time.Now()
	c := newCluster(t, clusterConfig{coordinators: 3, agents: agents, interval: time.Minute, agentsCPU: 2})
	g1 := c.push(siteFiles("v1", 2), false)
	c.waitConverged(g1, 60*time.Second, c.agents...)
	t.Logf("%d agents converged on generation %d %v after start", agents, g1, time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := c.startBrowser(t, ctx, "fleet", c.coords[1], "NETLAB_AGENTS="+strconv.Itoa(agents), "NETLAB_G1="+strconv.FormatUint(g1, 10))
	ready := b.expect("READY", 60*time.Second)
	t.Logf("browser: %s", ready)

	pushed := time.Now()
	g2 := c.push(siteFiles("v2", 2), false)
	if _, err := fmt.Fprintf(b.stdin, "PUSHED %d\n", g2); err != nil {
		t.Fatal(err)
	}
	res := b.expect("CONVERGED", 60*time.Second)
	t.Logf("the page showed all %d agents converged on generation %d %v after the push, without a reload: %s", agents, g2, time.Since(pushed).Round(time.Millisecond), res)
	c.waitConverged(g2, 10*time.Second, c.agents...)

	// A push with waves while the Rollouts page is open.
	t.Logf("browser: %s", b.expect("ROLLOUTS", 30*time.Second))
	pushed = time.Now()
	g3 := c.push(siteFiles("v3", 2)+"rollout:\n  canary: 1\n  max_parallel: 10\n  min_healthy_time: 0s\n", false)
	if _, err := fmt.Fprintf(b.stdin, "PUSHED %d\n", g3); err != nil {
		t.Fatal(err)
	}
	res = b.expect("ROLLOUT", 60*time.Second)
	t.Logf("the Rollouts page showed generation %d's rollout completed %v after the push, without a reload: %s", g3, time.Since(pushed).Round(time.Millisecond), res)

	// An event while the Events page is open.
	t.Logf("browser: %s", b.expect("EVENTS", 30*time.Second))
	labeled := time.Now()
	if out, err := c.ctl(ctx, "node", "label", "a1", "zone=z1"); err != nil {
		t.Fatalf("node label: %v\n%s", err, out)
	}
	if _, err := fmt.Fprintf(b.stdin, "LABELED a1\n"); err != nil {
		t.Fatal(err)
	}
	res = b.expect("LABELED", 30*time.Second)
	t.Logf("the Events page showed the label event %v after the label, without a reload: %s", time.Since(labeled).Round(time.Millisecond), res)
	b.expect("DONE", 30*time.Second)
	if err := b.wait(); err != nil {
		t.Fatalf("browser helper: %v\n%s", err, b.out.String())
	}
}

// dashboardEscapeCheck opens node NODE's page and the fleet page of a
// coordinator in Chromium after a hostile report (TestHostileReportEscaped)
// and fails if any of the report's markup ran or became an element, or if
// a terminal control character reached the page's text.
func (c *cluster) dashboardEscapeCheck(t *testing.T, node string, sent int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b := c.startBrowser(t, ctx, "escape", c.coords[0], "NETLAB_NODE="+node)
	var got struct {
		Owned    int  `json:"owned"`
		Injected int  `json:"injected"`
		Rows     int  `json:"rows"`
		FleetRow int  `json:"fleetRows"`
		Raw      bool `json:"raw"`
		Escaped  bool `json:"escaped"`
		Errors   int  `json:"errors"`
	}
	res := b.expect("ESCAPE", 60*time.Second)
	if err := json.Unmarshal([]byte(res), &got); err != nil {
		t.Fatalf("browser helper: %q: %v", res, err)
	}
	t.Logf("dashboard after the hostile report: %s", res)
	if got.Owned != 0 || got.Injected != 0 {
		t.Errorf("the dashboard ran or rendered the report's markup: %s", res)
	}
	if got.Raw || !got.Escaped {
		t.Errorf("the dashboard shows control characters raw, or not their escapes: %s", res)
	}
	if got.Rows != sent || got.FleetRow != 1 {
		t.Errorf("%d result rows for %d results, %d fleet rows for one node: %s", got.Rows, sent, got.FleetRow, res)
	}
	if got.Errors != 0 {
		t.Errorf("%d script errors on the page", got.Errors)
	}
	if err := b.wait(); err != nil {
		t.Fatalf("browser helper: %v\n%s", err, b.out.String())
	}
}

// TestDashboardBrowserHelper is the browser side of the dashboard
// scenarios, run by them inside the admin host's namespace.
func TestDashboardBrowserHelper(t *testing.T) {
	mode := os.Getenv("NETLAB_DASHBOARD")
	if mode == "" {
		t.Skip("run by the dashboard scenarios")
	}
	env := os.Getenv
	tok, err := os.ReadFile(env("NETLAB_TOKEN_FILE"))
	if err != nil {
		t.Fatal(err)
	}
	base, shots := env("NETLAB_URL"), env("NETLAB_ARTIFACTS")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(env("NETLAB_CHROMIUM")),
		chromedp.NoSandbox, // root in a namespace
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
	)
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, 170*time.Second)
	defer tcancel()
	var jsErrors []string
	var jsMu sync.Mutex
	t.Logf("starting %s", env("NETLAB_CHROMIUM"))
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			jsMu.Lock()
			jsErrors = append(jsErrors, exceptionText(e.ExceptionDetails))
			jsMu.Unlock()
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		t.Logf("browser: %s", what)
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(what, js string, v any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js))
		if err == nil && v != nil {
			err = json.Unmarshal(raw, v)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Sign in through the form: the coordinator sets the cookie.
	run("open the sign-in page", chromedp.Navigate(base+"/ui/login"))
	run("fill in the token", chromedp.WaitVisible(chromedp.CSS("#token")), chromedp.SetValue(chromedp.CSS("#token"), strings.TrimSpace(string(tok))))
	run("sign in", chromedp.Submit(chromedp.CSS("#login")))
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	err = chromedp.Do(wctx, chromedp.WaitVisible(chromedp.CSS("#nodes, #error")))
	wcancel()
	if err != nil {
		var page struct{ URL, Text string }
		eval("the page after sign-in", `({url: location.href, text: document.body ? document.body.innerText : "(no body)"})`, &page)
		t.Fatalf("after sign-in: %v: at %s: %.2000s", err, page.URL, page.Text)
	}
	var signIn struct {
		Error, URL string
	}
	eval("after sign-in", `(() => { const e = document.getElementById("error"); return {error: e ? e.textContent : "", url: location.href}; })()`, &signIn)
	if signIn.Error != "" {
		t.Fatalf("sign in refused at %s: %s", signIn.URL, signIn.Error)
	}
	t.Logf("signed in: %s", signIn.URL)

	switch mode {
	case "fleet":
		n, _ := strconv.Atoi(env("NETLAB_AGENTS"))
		type fleet struct {
			Rows      int    `json:"rows"`
			Converged int    `json:"converged"`
			Marker    int    `json:"marker"`
			Gen       string `json:"gen"`
		}
		read := func(gen string) fleet {
			var f fleet
			eval("read the fleet table", `(() => {
				const rows = [...document.querySelectorAll("#nodes tr.node")];
				const s = document.getElementById("summary");
				return {rows: rows.length, marker: window.__hiveMarker || 0, gen: s ? s.dataset.generation : "",
					converged: rows.filter(r => r.dataset.phase === "converged" && r.dataset.generation === `+strconv.Quote(gen)+`).length};
			})()`, &f)
			return f
		}
		waitFor := func(gen string, d time.Duration) (fleet, []string) {
			var seen []string
			deadline := time.Now().Add(d)
			for {
				f := read(gen)
				if s := fmt.Sprintf("%d/%d", f.Converged, f.Rows); len(seen) == 0 || seen[len(seen)-1] != s {
					seen = append(seen, s)
				}
				if f.Rows == n && f.Converged == n && f.Gen == gen {
					return f, seen
				}
				if time.Now().After(deadline) {
					t.Fatalf("the page shows %+v, want %d rows converged on generation %s (seen %v)", f, n, gen, seen)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		f, _ := waitFor(env("NETLAB_G1"), 30*time.Second)
		eval("mark the page", `window.__hiveMarker = 42`, nil)
		shot("01-fleet.png")
		fmt.Printf("DASH READY %d nodes converged on generation %s\n", f.Rows, f.Gen)

		stdin := bufio.NewReader(os.Stdin)
		line, err := stdin.ReadString('\n')
		var g2 uint64
		if _, err2 := fmt.Sscanf(line, "PUSHED %d", &g2); err != nil || err2 != nil {
			t.Fatalf("want PUSHED N on stdin: %q %v %v", line, err, err2)
		}
		start := time.Now()
		f, seen := waitFor(strconv.FormatUint(g2, 10), 60*time.Second)
		if f.Marker != 42 {
			t.Fatalf("the page was reloaded (marker %d)", f.Marker)
		}
		fmt.Printf("DASH CONVERGED in %v, converged/rows as the page showed them: %s\n", time.Since(start).Round(time.Millisecond), strings.Join(seen, " "))
		shot("02-fleet-converged.png")
		run("node page", chromedp.Navigate(base+"/ui/node?name=a1"), chromedp.WaitVisible(chromedp.CSS("#resources")))
		shot("03-node-a1.png")
		run("generation page", chromedp.Navigate(base+"/ui/generation?n="+strconv.FormatUint(g2, 10)), chromedp.WaitVisible(chromedp.CSS("#changes")))
		var changes int
		eval("count changes", `document.querySelectorAll("#changes tr.change").length`, &changes)
		if changes == 0 {
			t.Errorf("generation %d shows no changes from its parent", g2)
		}
		shot("04-generation-diff.png")
		run("history", chromedp.Navigate(base+"/ui/generations"), chromedp.WaitVisible(chromedp.CSS("#generations")))
		shot("05-history.png")
		dashboardRollouts(t, stdin, n, run, eval, shot)
	case "escape":
		node := env("NETLAB_NODE")
		var fleetRows int
		eval("fleet rows", `document.querySelectorAll("#nodes tr.node").length`, &fleetRows)
		shot("01-fleet-hostile.png")
		var got map[string]any
		run("node page", chromedp.Navigate(base+"/ui/node?name="+node), chromedp.WaitVisible(chromedp.CSS("#resources")))
		eval("read the node page", `(() => {
				const live = document.getElementById("live");
				const text = document.body.innerText;
				return {owned: window.__owned || 0,
					injected: live.querySelectorAll("script, img, iframe, [onerror]").length,
					rows: document.querySelectorAll("#resources tr.resource").length,
					raw: /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/.test(text),
					escaped: text.includes("ok\\u001b[2J")};
			})()`, &got)
		shot("02-node-hostile.png")
		jsMu.Lock()
		got["errors"] = len(jsErrors)
		jsMu.Unlock()
		got["fleetRows"] = fleetRows
		b, _ := json.Marshal(got)
		fmt.Printf("DASH ESCAPE %s\n", b)
	default:
		t.Fatalf("unknown NETLAB_DASHBOARD %q", mode)
	}
	jsMu.Lock()
	defer jsMu.Unlock()
	if len(jsErrors) > 0 {
		t.Errorf("script errors: %v", jsErrors)
	}
	fmt.Println("DASH DONE")
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d == nil {
		return "exception"
	}
	s := fmt.Sprintf("%s (%s:%d:%d)", d.Text, d.URL, d.LineNumber, d.ColumnNumber)
	if d.Exception != nil && d.Exception.Description != "" {
		s += ": " + d.Exception.Description
	}
	return s
}

// dashboardRollouts is the helper's part of TestDashboardFleet after the
// history: the Rollouts page, open before a push with waves, follows it
// to its end; the Events page shows a label event as it happens.
func dashboardRollouts(t *testing.T, stdin *bufio.Reader, n int, run func(string, ...chromedp.Action[chromedp.Void]), eval func(string, string, any), shot func(string)) {
	t.Helper()
	base := os.Getenv("NETLAB_URL")
	type rollout struct {
		Gen, State     string
		Healthy, Nodes string
		Opened, Waves  string
		Marker         int
	}
	read := func() rollout {
		var r rollout
		eval("read the rollouts page", `(() => {
			const r = document.getElementById("rollout");
			const d = r ? r.dataset : {};
			return {gen: d.generation || "", state: d.state || "", healthy: d.healthy || "", nodes: d.nodes || "",
				opened: d.opened || "", waves: d.waves || "", marker: window.__hiveMarker || 0};
		})()`, &r)
		return r
	}
	run("rollouts page", chromedp.Navigate(base+"/ui/rollouts"), chromedp.WaitVisible(chromedp.CSS("#rollout")))
	eval("mark the page", `window.__hiveMarker = 43`, nil)
	fmt.Printf("DASH ROLLOUTS page open: %+v\n", read())
	line, err := stdin.ReadString('\n')
	var g3 uint64
	if _, err2 := fmt.Sscanf(line, "PUSHED %d", &g3); err != nil || err2 != nil {
		t.Fatalf("want PUSHED N on stdin: %q %v %v", line, err, err2)
	}
	gen := strconv.FormatUint(g3, 10)
	start := time.Now()
	var seen []string
	for deadline := start.Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r := read()
		if r.Gen == gen {
			if s := fmt.Sprintf("%s %s/%s waves %s/%s healthy", r.State, r.Opened, r.Waves, r.Healthy, r.Nodes); len(seen) == 0 || seen[len(seen)-1] != s {
				seen = append(seen, s)
			}
		}
		if r.Gen == gen && r.State == "completed" && r.Healthy == strconv.Itoa(n) {
			if r.Marker != 43 {
				t.Fatalf("the rollouts page was reloaded (marker %d)", r.Marker)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rollouts page shows %+v, want generation %s completed with %d healthy (seen %v)", r, gen, n, seen)
		}
	}
	var waveStates []string
	eval("wave states", `[...document.querySelectorAll("#waves tr.wave")].map(r => r.dataset.state)`, &waveStates)
	shot("06-rollout.png")
	fmt.Printf("DASH ROLLOUT completed in %v, waves %v, as the page showed it: %s\n", time.Since(start).Round(time.Millisecond), waveStates, strings.Join(seen, " → "))

	run("events page", chromedp.Navigate(base+"/ui/events"), chromedp.WaitVisible(chromedp.CSS("#events")))
	eval("mark the page", `window.__hiveMarker = 44`, nil)
	countLabeled := `(() => ({n: document.querySelectorAll('#events tr.event[data-kind="node.labeled"][data-node="a1"]').length, marker: window.__hiveMarker || 0,
		rollout: document.querySelectorAll('#events tr.event[data-kind^="rollout."]').length}))()`
	var ev struct {
		N, Marker, Rollout int
	}
	eval("events before", countLabeled, &ev)
	fmt.Printf("DASH EVENTS page open: %d rollout events shown\n", ev.Rollout)
	if line, err = stdin.ReadString('\n'); err != nil || !strings.HasPrefix(line, "LABELED") {
		t.Fatalf("want LABELED on stdin: %q %v", line, err)
	}
	start = time.Now()
	for deadline := start.Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		eval("events", countLabeled, &ev)
		if ev.N > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the events page never showed the node.labeled event of a1")
		}
	}
	if ev.Marker != 44 {
		t.Fatalf("the events page was reloaded (marker %d)", ev.Marker)
	}
	shot("07-events.png")
	fmt.Printf("DASH LABELED shown %v after the label was sent\n", time.Since(start).Round(time.Millisecond))
}
