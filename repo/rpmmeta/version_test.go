package rpmmeta_test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/rpmmeta"
)

// TestCanonicalVersionMatchesRpm: two version strings have the same
// canonical form exactly when the real rpm's rpmvercmp calls them equal.
func TestCanonicalVersionMatchesRpm(t *testing.T) {
	rpm := testenv.RequireTool(t, "rpm")
	vs := []string{"1.0", "1.00", "1_0", "1..0", "1.0.", ".1.0", "01.0", "10", "1.0a", "1.0.a", "1.0A",
		"1.0~rc1", "1.0~rc01", "1.0^1", "1.0^", "1.0~", "1", "1.0+b1", "1.0b1"}
	var lua strings.Builder
	type pair struct{ a, b string }
	var pairs []pair
	for i, a := range vs {
		for _, b := range vs[i+1:] {
			pairs = append(pairs, pair{a, b})
			fmt.Fprintf(&lua, "print(rpm.vercmp(%q, %q) .. \" \") ", a, b)
		}
	}
	out, err := exec.Command(rpm, "--eval", "%{lua: "+lua.String()+"}").CombinedOutput()
	if err != nil {
		t.Fatalf("rpm --eval: %v\n%s", err, out)
	}
	res := strings.Fields(string(out))
	if len(res) != len(pairs) {
		t.Fatalf("rpm gave %d results for %d pairs: %s", len(res), len(pairs), out)
	}
	for i, p := range pairs {
		rpmEq := res[i] == "0"
		ours := rpmmeta.CanonicalVersion(p.a) == rpmmeta.CanonicalVersion(p.b)
		if rpmEq != ours {
			t.Errorf("%q vs %q: rpm equal=%v, canonical equal=%v (%q, %q)", p.a, p.b, rpmEq, ours, rpmmeta.CanonicalVersion(p.a), rpmmeta.CanonicalVersion(p.b))
		}
	}
}
