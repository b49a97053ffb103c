package pkg

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
)

// Tricky cases: tilde, epochs, leading zeros, letters vs symbols, missing
// revision, plus signs, long numbers.
var debCases = [][2]string{
	{"1.0", "1.0"}, {"1.0", "1.0-0"}, {"1.0~rc1", "1.0"}, {"1.0~~", "1.0~"}, {"1.0~", "1.0"},
	{"1.0~rc1-1", "1.0-1"}, {"1:0.1", "2.0"}, {"0:1.0", "1.0"}, {"1.0-1", "1.0-1ubuntu1"},
	{"1.01", "1.1"}, {"1.001", "1.1"}, {"1.0a", "1.0"}, {"1.0a", "1.0+"}, {"1.0+dfsg", "1.0"},
	{"1.0.0", "1.0"}, {"2.30-1", "2.4-1"}, {"1.2.3-1+deb12u1", "1.2.3-1"}, {"9", "10"},
	{"1.0-1~bpo1", "1.0-1"}, {"a", "b"}, {"1.0-a", "1.0-1"}, {"10000000000000000000", "9"},
	{"1.0.", "1.0"}, {"1:1.0-1", "1.0-1"}, {"2:1", "10:0"}, {"1.2-3-4", "1.2-3"}, {"0.0.0~", "0.0.0"},
	{"1.0+~", "1.0+"}, {"1.0-1.1", "1.0-1.a"},
}

func TestDebCompareAgainstDpkg(t *testing.T) {
	dpkg := testenv.RequireTool(t, "dpkg")
	for _, c := range debCases {
		for _, pair := range [][2]string{c, {c[1], c[0]}} {
			want := 0
			switch {
			case exec.Command(dpkg, "--compare-versions", pair[0], "lt", pair[1]).Run() == nil:
				want = -1
			case exec.Command(dpkg, "--compare-versions", pair[0], "gt", pair[1]).Run() == nil:
				want = 1
			}
			if got := DebCompare(pair[0], pair[1]); got != want {
				t.Errorf("DebCompare(%q, %q) = %d, dpkg says %d", pair[0], pair[1], got, want)
			}
		}
	}
}

func TestRPMCompare(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1.0-1", "1.0-1", 0}, {"1.0-1", "1.0-2", -1}, {"1:1.0-1", "2.0-1", 1}, {"1.0~rc1-1", "1.0-1", -1},
		{"1.10-1", "1.9-1", 1}, {"1.0a-1", "1.0-1", 1}, {"0:1.0-1", "1.0-1", 0}, {"1.0^git1-1", "1.0-1", 1},
	} {
		if got := RPMCompare(c.a, c.b); got != c.want {
			t.Errorf("RPMCompare(%q, %q) = %d want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		debian         bool
		installed, pin string
		want           bool
	}{
		{true, "1.0-1", "1.0", true}, {true, "1.0-1", "1.0-1", true}, {true, "1.0-1", "1.0-2", false},
		{true, "1:1.0-1", "1.0", false}, {true, "1:1.0-1", "1:1.0", true}, {true, "1.00-1", "1.0", true},
		{false, "0:1.0-1", "1.0", true}, {false, "0:1.0-1", "1.0-1", true}, {false, "1:1.0-1", "1.0-1", false},
		{false, "0:2.0-1", "1.0", false},
	} {
		if got := Matches(c.debian, c.installed, c.pin); got != c.want {
			t.Errorf("Matches(%v, %q, %q) = %v", c.debian, c.installed, c.pin, got)
		}
	}
}

func FuzzDebCompare(f *testing.F) {
	for _, c := range debCases {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if DebCompare(a, b) != -DebCompare(b, a) {
			t.Fatalf("not antisymmetric: %q %q", a, b)
		}
		if DebCompare(a, a) != 0 {
			t.Fatalf("not reflexive: %q", a)
		}
	})
}

func FuzzParseDpkgStatus(f *testing.F) {
	f.Add([]byte("Package: a\nStatus: install ok installed\nVersion: 1.0\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n"))
	f.Add([]byte("Package: c\nDescription: x\n multi\n line\nStatus: hold ok installed\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for name, p := range parseDpkgStatus(b) {
			if name == "" || p.Version != strings.TrimSpace(p.Version) {
				t.Fatalf("bad entry %q %+v", name, p)
			}
		}
	})
}

func TestParseDpkgStatus(t *testing.T) {
	got := parseDpkgStatus([]byte("Package: a\nStatus: install ok installed\nVersion: 1:1.0-2\nArchitecture: amd64\n\n" +
		"Package: b\nStatus: deinstall ok config-files\nVersion: 2\n\nPackage: c\nDescription: x\n Package: fake\nStatus: hold ok installed\nVersion: 3\n"))
	if len(got) != 2 || got["a"].Version != "1:1.0-2" || got["c"].Version != "3" {
		t.Errorf("got %+v", got)
	}
}
