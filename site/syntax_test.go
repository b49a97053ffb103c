package site

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

// TestYAMLSyntaxErrorPosition: a syntax error appended to the example
// site is reported where the problem is, as PyYAML 6.0 reports it
// (problem_mark; for an unterminated quote, its start), not at the
// enclosing block as yaml.v3 says (issue 11 finding 11: "24:1").
func TestYAMLSyntaxErrorPosition(t *testing.T) {
	example, err := os.ReadFile("../deploy/examples/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tail      string
		line, col int
	}{
		{"  - bad\n", 165, 3},              // PyYAML: 165:3, yaml.v3: line 24
		{" bad: 1\n", 165, 2},              // PyYAML: 165:2, yaml.v3: line 6
		{"  key: value: other\n", 165, 13}, // PyYAML: 165:13
		{"  x: \"unterminated\n", 165, 6},  // PyYAML: context 165:6
		{"  - {a: 1\n", 165, 3},            // PyYAML: 165:3
	} {
		t.Run(fmt.Sprintf("%q", c.tail), func(t *testing.T) {
			_, err := Parse("site.yaml", append(append([]byte(nil), example...), c.tail...))
			var list ErrorList
			if !errors.As(err, &list) || len(list) != 1 {
				t.Fatalf("err = %v", err)
			}
			if list[0].Line != c.line || list[0].Col != c.col {
				t.Errorf("reported at %d:%d, want %d:%d: %v", list[0].Line, list[0].Col, c.line, c.col, list[0])
			}
		})
	}
}
