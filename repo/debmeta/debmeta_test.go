package debmeta_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/debmeta"
	"github.com/hivefleet/hive/repo/repotest"
)

func build(t testing.TB, comp string) []byte {
	b, err := repotest.BuildDeb(repotest.Deb{Name: "hello", Version: "1:2.0-1", Arch: "amd64", Compression: comp, Depends: "libc6"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCompressions(t *testing.T) {
	for _, c := range []string{"gz", "xz", "zst", "none"} {
		t.Run(c, func(t *testing.T) {
			b := build(t, c)
			p, err := debmeta.Parse(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if p.Name != "hello" || p.Version != "1:2.0-1" || p.Architecture != "amd64" || p.Field("Depends") != "libc6" {
				t.Errorf("got %+v", p)
			}
			if p.Size != int64(len(b)) || len(p.SHA256) != 64 || len(p.MD5) != 32 || len(p.SHA1) != 40 {
				t.Errorf("sums %+v", p)
			}
			if !strings.Contains(p.Field("Description"), "\n .\n") {
				t.Errorf("description lost continuation lines: %q", p.Field("Description"))
			}
		})
	}
}

// TestParseDpkgDeb checks a package built by the real dpkg-deb, and that
// dpkg-deb accepts ours.
func TestParseDpkgDeb(t *testing.T) {
	dpkgDeb := testenv.RequireTool(t, "dpkg-deb")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/share/x"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/share/x/f"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte("Package: realdeb\nVersion: 3.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: real\n long\n"), 0o644)
	for _, z := range []string{"gzip", "xz", "zstd"} {
		out := filepath.Join(dir, "real-"+z+".deb")
		if b, err := exec.Command(dpkgDeb, "-Z"+z, "--build", root, out).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb: %v\n%s", err, b)
		}
		f, _ := os.Open(out)
		p, err := debmeta.Parse(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", z, err)
		}
		if p.Name != "realdeb" || p.Version != "3.0" {
			t.Errorf("%s: %+v", z, p)
		}
	}
	ours := filepath.Join(dir, "ours.deb")
	os.WriteFile(ours, build(t, "zst"), 0o644)
	if b, err := exec.Command(dpkgDeb, "--info", ours).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --info on ours: %v\n%s", err, b)
	}
}

func TestParseRejects(t *testing.T) {
	b := build(t, "gz")
	rpm, _ := repotest.BuildRPM(repotest.RPM{Name: "x", Version: "1"})
	noCtl := []byte("!<arch>\ndebian-binary   1700000000  0     0     100644  4         `\n2.0\n")
	cases := map[string][]byte{
		"empty":       nil,
		"truncated":   b[:len(b)/2],
		"rpm as deb":  rpm,
		"no control":  noCtl,
		"header only": b[:8],
	}
	corrupt := append([]byte(nil), b...)
	corrupt[132+60+30] ^= 0xff // inside the gzip'ed control member
	cases["corrupt control"] = corrupt
	for name, in := range cases {
		_, err := debmeta.Parse(bytes.NewReader(in))
		if !errors.Is(err, debmeta.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range []string{"gz", "xz", "zst", "none"} {
		f.Add(build(f, c))
	}
	f.Add([]byte("!<arch>\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := debmeta.Parse(bytes.NewReader(in))
		if err == nil && (p.Name == "" || p.Version == "") {
			t.Fatal("accepted package without name or version")
		}
	})
}

func FuzzParseControl(f *testing.F) {
	f.Add([]byte("Package: a\nVersion: 1\nDescription: x\n y\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		debmeta.ParseControl(in)
	})
}
