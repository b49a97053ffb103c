package packaging

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hivefleet/hive/site"
)

// TestQuickstartSite checks that the site file docs/quickstart.md asks the
// reader to push is valid, with the same parser and checks hivectl and the
// coordinators use.
func TestQuickstartSite(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "quickstart.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)A small site file, `site.yaml`:\n\n```yaml\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/quickstart.md: the site.yaml block is gone")
	}
	s, err := site.Parse("quickstart.md:site.yaml", m[1])
	if err != nil {
		t.Fatalf("quickstart site.yaml: %v", err)
	}
	if err := site.Check(s); err != nil {
		t.Fatalf("quickstart site.yaml: %v", err)
	}
}
