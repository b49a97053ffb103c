package site

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// FuzzParse checks that no input makes the parser panic or hang, that every
// rejection carries a position, and that accepted sites pass Check and hash
// stably.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.yaml")
	seeds = append(seeds, "../deploy/examples/site.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("roles: {a: {files: [{path: /x, template: true, content: '{{ secret \"s\" }}'}]}}\nsecrets: [s]"))
	f.Add([]byte("a: &a [*a]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList: %v", err, err)
			}
			for _, e := range list {
				if e.Line == 0 || e.Col == 0 {
					t.Fatalf("error without position: %v", e)
				}
			}
			return
		}
		if err := Check(s); err != nil {
			t.Fatalf("Parse accepted what Check rejects: %v", err)
		}
		_ = Warnings(s) // never panics
		// The canonical form is a fixed point: parsing the same bytes again
		// gives the same hash.
		again, err := Parse("fuzz.yaml", data)
		if err != nil || Hash(again) != Hash(s) {
			t.Fatalf("hash not stable across parses: %v", err)
		}
	})
}

// FuzzRenderTemplate checks that no template, however written, makes a
// rendering panic, run past its time limit, or produce more than its
// output limit.
func FuzzRenderTemplate(f *testing.F) {
	for _, s := range []string{
		`{{ range 1000000000000000 }}{{ end }}`,
		`{{ define "a" }}{{ template "a" . }}{{ template "a" . }}{{ end }}{{ template "a" . }}`,
		`{{ $x := "ab" }}{{ range 64 }}{{ $x = printf "%s%s" $x $x }}{{ end }}{{ $x }}`,
		`{{ printf "%*d" 999999 1 }}{{ upper (join .Roles ",") }}{{ quote .Name }}`,
		`{{ range $i, $r := .Roles }}{{ $i }}{{ html $r }}{{ js $r }}{{ urlquery $r }}{{ end }}`,
	} {
		f.Add(s)
	}
	lim := TemplateLimits{Timeout: 200 * time.Millisecond, MaxOutput: 64 << 10, MaxIterations: 10_000}
	facts := &hivev1.NodeFacts{Name: "n1", Roles: []string{"a", "b"}, Labels: map[string]string{"k": "v"}}
	f.Fuzz(func(t *testing.T, tmpl string) {
		start := time.Now()
		out, err := RenderTemplate(context.Background(), tmpl, facts, map[string][]byte{"s": []byte("v")}, lim)
		if took := time.Since(start); took > lim.Timeout+2*time.Second {
			t.Fatalf("rendering took %v, limit %v", took, lim.Timeout)
		}
		if err == nil && len(out) > lim.MaxOutput {
			t.Fatalf("output %d bytes over the %d limit", len(out), lim.MaxOutput)
		}
	})
}
