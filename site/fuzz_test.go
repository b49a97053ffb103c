package site

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
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
		// The canonical form is a fixed point: parsing the same bytes again
		// gives the same hash.
		again, err := Parse("fuzz.yaml", data)
		if err != nil || Hash(again) != Hash(s) {
			t.Fatalf("hash not stable across parses: %v", err)
		}
	})
}
