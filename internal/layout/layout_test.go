// Package layout holds repository-wide tests of the code's shape: every
// package has exactly one doc comment, and the agent, the coordinator and
// the CLI do not import each other; and docs/security.md names only tests
// that exist.
package layout

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/hivefleet/hive"

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", "-deps=false", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return pkgs
}

// TestPackageDocs checks that each package states its purpose in exactly
// one doc comment (generated code excepted).
func TestPackageDocs(t *testing.T) {
	for _, p := range listPackages(t) {
		var withDoc []string
		for _, f := range p.GoFiles {
			if strings.HasSuffix(f, ".pb.go") {
				withDoc = []string{"(generated)"}
				break
			}
			af, err := parser.ParseFile(token.NewFileSet(), filepath.Join(p.Dir, f), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				withDoc = append(withDoc, f)
			}
		}
		switch {
		case len(p.GoFiles) == 0:
		case len(withDoc) == 0:
			t.Errorf("%s has no package doc comment", p.ImportPath)
		case len(withDoc) > 1:
			t.Errorf("%s has package doc comments in several files: %v", p.ImportPath, withDoc)
		}
	}
}

// TestLayering keeps the three programs' libraries apart: the agent, the
// coordinator and the CLI share only small packages (proto, site, pki,
// client, gossip, converge), never each other.
func TestLayering(t *testing.T) {
	forbidden := map[string][]string{
		module + "/agent":       {module + "/coordinator", module + "/ctl", module + "/repo"},
		module + "/coordinator": {module + "/agent", module + "/ctl", module + "/converge", module + "/repo"},
		module + "/converge":    {module + "/agent", module + "/coordinator", module + "/ctl"},
		module + "/site":        {module + "/agent", module + "/coordinator", module + "/ctl", module + "/converge"},
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		path, deps := fields[0], fields[1:]
		for root, bad := range forbidden {
			if path != root && !strings.HasPrefix(path, root+"/") {
				continue
			}
			for _, d := range deps {
				for _, b := range bad {
					if d == b || strings.HasPrefix(d, b+"/") {
						t.Errorf("%s imports %s", path, d)
					}
				}
			}
		}
	}
}
