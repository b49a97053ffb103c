package site

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRenderTemplateLimits: runaway templates (issue 11 finding 7) stop
// with an error naming the limit, promptly, in the caller's goroutine.
// Before the limits, the first case spun for days and the output cases
// allocated until the agent was killed.
func TestRenderTemplateLimits(t *testing.T) {
	facts := &hivev1.NodeFacts{Name: "n1", Roles: []string{"web"}}
	small := TemplateLimits{Timeout: 10 * time.Second, MaxOutput: 1 << 20, MaxIterations: 10_000}
	doubling := `{{ $x := "0123456789" }}` + strings.Repeat(`{{ $x = printf "%s%s" $x $x }}`, 40) + `{{ len $x }}`
	for _, c := range []struct {
		name, tmpl string
		lim        TemplateLimits
		want       string
	}{
		{"range over a huge int", `{{ range 1000000000000000 }}{{ end }}`, TemplateLimits{}, "limit"}, // iterations, or time under -race
		{"nested ranges", `{{ range 100000 }}{{ range 100000 }}{{ end }}{{ end }}`, small, "limit of 10000 range iterations"},
		{"timeout", `{{ range 1000000000000000 }}{{ end }}`, TemplateLimits{Timeout: 50 * time.Millisecond, MaxIterations: 1 << 62}, "longer than the 50ms limit"},
		{"recursion", `{{ define "a" }}{{ template "a" . }}{{ template "a" . }}{{ end }}{{ template "a" . }}`, small, "limit of 10000"},
		{"output", `{{ range 2000 }}` + strings.Repeat("x", 1000) + `{{ end }}`, small, "output larger than the 1 MiB limit"},
		{"output default", `{{ range 20000 }}` + strings.Repeat("x", 1000) + `{{ end }}`, TemplateLimits{Timeout: time.Minute}, "output larger than the 16 MiB limit"}, // the default output limit; a longer time limit, since 16 MiB under -race on a loaded machine took more than the default 2s
		{"doubling printf", doubling, small, "printf would build"},
		{"printf widths", `{{ printf "` + strings.Repeat("%999999d", 20) + `" 1 }}`, small, "printf would build"},
		{"star width", `{{ range 100 }}{{ printf "%*d" 1000000 1 }}{{ end }}`, small, "printf would build"},
		{"print repeat", `{{ $x := printf "%100000d" 1 }}{{ print ` + strings.Repeat("$x ", 100) + `}}`, small, "print would build"},
		{"join", `{{ $x := printf "%100000d" 1 }}{{ range 100 }}{{ join $.Roles $x }}{{ upper $x }}{{ end }}`, small, "would build"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			out, err := RenderTemplate(context.Background(), c.tmpl, facts, nil, c.lim)
			took := time.Since(start)
			if !errors.Is(err, ErrTemplateLimit) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v (output %d bytes), want a limit error containing %q", err, len(out), c.want)
			}
			if strings.Contains(err.Error(), tickFunc) {
				t.Errorf("error names the hidden function: %v", err)
			}
			if took > 15*time.Second { // runaway means days; 15s leaves room for -race on a loaded machine
				t.Errorf("took %v to stop", took)
			}
		})
	}
}

// TestRenderTemplateCancel: a rendering stops when its context ends (the
// agent cancels a run on SIGTERM or a newer generation).
func TestRenderTemplateCancel(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(50*time.Millisecond, func() { cancel(errors.New("superseded by generation 9")) })
	start := time.Now()
	_, err := RenderTemplate(ctx, `{{ range 1000000000000000 }}{{ end }}`, &hivev1.NodeFacts{}, nil, TemplateLimits{Timeout: time.Hour, MaxIterations: 1 << 62})
	if !errors.Is(err, ErrTemplateLimit) || !strings.Contains(err.Error(), "superseded by generation 9") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v to stop after cancel", took)
	}
}

// TestRenderTemplateWithinLimits: ordinary templates, including the
// builtins replaced by bounded ones, render as before.
func TestRenderTemplateWithinLimits(t *testing.T) {
	facts := &hivev1.NodeFacts{Name: "n1", Roles: []string{"db", "web"}, Labels: map[string]string{"z": "<&>"}}
	out, err := RenderTemplate(context.Background(),
		`{{ printf "%-4s|%5.2f|%[1]s" .Name 3.14159 }} {{ print 1 "a" }} {{ html .Labels.z }} {{ js "'" }} {{ urlquery "a b" }} {{ upper (join .Roles ",") }} {{ quote .Name }}{{ println }}{{ define "x" }}{{ . }}{{ end }}{{ range .Roles }}{{ template "x" . }}{{ end }}`,
		facts, nil, TemplateLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "n1  | 3.14|n1 1a &lt;&amp;&gt; \\' a+b DB,WEB \"n1\"\ndbweb"; out != want {
		t.Errorf("got  %q\nwant %q", out, want)
	}
}

// TestTemplateTickReserved: the hidden budget function cannot be called
// (or shadowed) by a site's template.
func TestTemplateTickReserved(t *testing.T) {
	_, err := templateSecrets(`{{ ` + tickFunc + ` }}`)
	if err == nil {
		t.Fatal("a template calling the hidden function was accepted")
	}
}

// TestPrintfBoundHolds: the bound a printf reserves is never below what it
// prints, for the verbs that expand their argument most.
func TestPrintfBoundHolds(t *testing.T) {
	s := "\xff\x00é😀" + strings.Repeat("a", 100)
	for _, c := range []struct {
		format string
		args   []any
	}{
		{"%x", []any{s}}, {"% x", []any{s}}, {"% X", []any{s}}, {"%q", []any{s}}, {"%+q", []any{s}},
		{"%#v", []any{s}}, {"%[1]q%[1]q%[1]q", []any{s}}, {"", []any{s, s, s}}, {"%s", []any{[]byte(s)}},
		{"%v", []any{map[string]string{"k": s}}}, {"%*d", []any{1000, 1}}, {"%.*f", []any{500, 1.0}},
		{"%d", []any{s}}, {"%!", nil}, {"%", nil},
	} {
		got := len(fmt.Sprintf(c.format, c.args...))
		if b := printfBound(c.format, c.args); b < got {
			t.Errorf("printfBound(%q) = %d, printed %d", c.format, b, got)
		}
	}
}

// TestValidateRefusesLiteralRunawayRange: the runaway template of issue 11
// finding 7 is refused by validate already, at its file.
func TestValidateRefusesLiteralRunawayRange(t *testing.T) {
	_, err := Parse("s.yaml", []byte("roles:\n  a:\n    files:\n      - path: /x\n        template: true\n        content: \"{{ range 1000000000000000 }}{{ end }}\"\n"))
	if err == nil || !strings.Contains(err.Error(), "s.yaml:6:9: roles.a.files[0].content: template: range 1000000000000000: more than the limit of 1000000") {
		t.Fatalf("err = %v", err)
	}
}
