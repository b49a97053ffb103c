package ui

import (
	"html/template"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestVisible(t *testing.T) {
	for in, want := range map[string]string{
		"plain text, ünïcode ✓":  "plain text, ünïcode ✓",
		"a\x1b[2Jb":              `a\u001b[2Jb`,
		"a\rb\nc\td":             `a\u000db\u000ac\u0009d`,
		"ok\u202edeggol":         `ok\u202edeggol`,
		"zero\u200bwidth\ufeff":  `zero\u200bwidth\ufeff`,
		"c1\u009b2J\x7f":         `c1\u009b2J\u007f`,
		"bad \xff utf8":          `bad \xff utf8`,
		"line\u2028sep\u2066iso": `line\u2028sep\u2066iso`,
	} {
		if got := visible(in, false); got != want {
			t.Errorf("visible(%q) = %q, want %q", in, got, want)
		}
	}
	if got := visible("-a\n+b\tc\x1b", true); got != "-a\n+b\tc\\u001b" {
		t.Errorf("multiline: %q", got)
	}
}

// TestTemplatesParse: every page's template set parses and the embedded
// assets are there.
func TestTemplatesParse(t *testing.T) {
	p := newPages()
	for _, n := range pageNames {
		if p.sets[n] == nil {
			t.Errorf("no template set %s", n)
		}
	}
	for _, f := range []string{"assets/static/live.js", "assets/static/style.css"} {
		b, err := assets.ReadFile(f)
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
	if b, _ := assets.ReadFile("assets/layout.html"); strings.Contains(string(b), "<script>") {
		t.Error("layout has an inline script: the CSP forbids it")
	}
}

// TestExtraPages: a feature's page (the rollouts/events hook) is shown in
// the layout and navigation, behind the same authentication; a page not
// mounted yet is a placeholder.
func TestExtraPages(t *testing.T) {
	h := New(Config{Dev: true, Extra: []Page{{Title: "Rollouts", Path: "rollouts",
		Content: func(r *http.Request) (template.HTML, error) { return "<p id=rollout>42%</p>", nil }}}})
	get := func(path, remote string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = remote
		req.Header.Set("Accept", "text/html")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	if w := get("/ui/rollouts", "127.0.0.1:5000"); w.Code != 200 || !strings.Contains(w.Body.String(), "<p id=rollout>42%</p>") || !strings.Contains(w.Body.String(), `href="/ui/rollouts">Rollouts`) {
		t.Errorf("rollouts: %d %s", w.Code, w.Body)
	}
	if w := get("/ui/events", "[::1]:5000"); w.Code != 200 || !strings.Contains(w.Body.String(), "not part of this build yet") {
		t.Errorf("events placeholder: %d %s", w.Code, w.Body)
	}
	if w := get("/ui/rollouts", "10.0.0.1:5000"); w.Code != 401 {
		t.Errorf("rollouts from a non-loopback address without a token: %d", w.Code)
	}
	if w := get("/ui/nowhere", "127.0.0.1:5000"); w.Code != 404 {
		t.Errorf("unknown page: %d", w.Code)
	}
}
