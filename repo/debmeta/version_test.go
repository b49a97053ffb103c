package debmeta_test

import (
	"os/exec"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/debmeta"
)

// TestCanonicalVersionMatchesDpkg: two versions have the same canonical
// form exactly when the real dpkg --compare-versions calls them equal.
func TestCanonicalVersionMatchesDpkg(t *testing.T) {
	dpkg := testenv.RequireTool(t, "dpkg")
	vs := []string{"1.0", "1.00", "0:1.0", "00:1.0", "1:1.0", "1.0-0", "1.0-00", "1.0-1", "1.0-01", "01.0",
		"1.0~rc1", "1.0~rc01", "1.0+b1", "1.0.", "1.0a", "1.0a0", "1.0-1.0", "1.0-1.00", "1.0-a-1", "1.0-a-01", "10"}
	for i, a := range vs {
		for _, b := range vs[i+1:] {
			dpkgEq := exec.Command(dpkg, "--compare-versions", a, "eq", b).Run() == nil
			ours := debmeta.CanonicalVersion(a) == debmeta.CanonicalVersion(b)
			if dpkgEq != ours {
				t.Errorf("%q vs %q: dpkg equal=%v, canonical equal=%v (%q, %q)", a, b, dpkgEq, ours, debmeta.CanonicalVersion(a), debmeta.CanonicalVersion(b))
			}
		}
	}
}
