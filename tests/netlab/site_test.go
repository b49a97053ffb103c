package netlabtests

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hivefleet/hive/site"
)

// siteFiles is a site with one role "web" (for tier=web) holding n files
// /srv/netlab/f-NNN whose content names version v.
func siteFiles(v string, n int) string {
	var b strings.Builder
	b.WriteString("site: netlab\nselectors:\n  - match: {tier: web}\n    roles: [web]\nroles:\n  web:\n    files:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "      - path: %s\n        mode: \"0644\"\n        content: %q\n", filePath(i), fileContent(v, i))
	}
	return b.String()
}

func filePath(i int) string { return fmt.Sprintf("/srv/netlab/f-%03d", i) }

func fileContent(v string, i int) string { return fmt.Sprintf("version %s file %d\n", v, i) }

// The scenarios' generated site is valid and has what they expect (runs
// without root).
func TestSiteFilesParse(t *testing.T) {
	s, err := site.Parse("netlab.yaml", []byte(siteFiles("7", 3)))
	if err != nil {
		t.Fatalf("generated site does not parse: %v\n%s", err, siteFiles("7", 3))
	}
	if err := site.Check(s); err != nil {
		t.Fatalf("generated site fails Check: %v", err)
	}
	if len(s.GetRoles()) != 1 || len(s.GetRoles()[0].GetResources()) != 3 {
		t.Fatalf("want one role with 3 resources: %v", s)
	}
	for i, r := range s.GetRoles()[0].GetResources() {
		f := r.GetFile()
		if f.GetPath() != filePath(i) || f.GetContent() != fileContent("7", i) || f.GetMode() != 0o644 {
			t.Errorf("resource %d: %v", i, r)
		}
	}
	if site.Hash(s) == "" {
		t.Fatal("empty hash")
	}
	if a, b := site.Hash(s), hashOf(t, siteFiles("8", 3)); a == b {
		t.Fatal("two versions hash the same: pushes would be no-ops")
	}
}

func hashOf(t *testing.T, y string) string {
	s, err := site.Parse("x.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return site.Hash(s)
}
