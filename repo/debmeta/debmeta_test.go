package debmeta_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz/lzma"

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

// arMembers returns the body offset and size of each ar member of a .deb.
func arMembers(t testing.TB, b []byte) map[string][2]int {
	t.Helper()
	out := map[string][2]int{}
	for off := 8; off+60 <= len(b); {
		name := strings.TrimRight(strings.TrimSpace(string(b[off:off+16])), "/")
		var size int
		if _, err := fmt.Sscan(string(b[off+48:off+58]), &size); err != nil {
			t.Fatalf("ar header at %d: %v", off, err)
		}
		out[name] = [2]int{off + 60, size}
		off += 60 + size + size%2
	}
	return out
}

// dataMember returns the name, offset and size of the data member.
func dataMember(t testing.TB, b []byte) (string, int, int) {
	t.Helper()
	for name, m := range arMembers(t, b) {
		if strings.HasPrefix(name, "data.tar") {
			return name, m[0], m[1]
		}
	}
	t.Fatal("no data member")
	return "", 0, 0
}

// TestParseRejectsCorruptData: a byte flipped inside the data member, or
// the file cut inside it, is refused naming the member, for every
// compression (before: only the control member was read, and these were
// accepted and published).
func TestParseRejectsCorruptData(t *testing.T) {
	for _, c := range []string{"gz", "xz", "zst", "none"} {
		t.Run(c, func(t *testing.T) {
			b := build(t, c)
			name, off, size := dataMember(t, b)
			flip := append([]byte(nil), b...)
			if c == "none" {
				flip[off+148] ^= 0x11 // the first tar header's checksum field: no checksum covers plain file bytes
			} else {
				flip[off+size/2] ^= 0xff
			}
			_, err := debmeta.Parse(bytes.NewReader(flip))
			if !errors.Is(err, debmeta.ErrInvalid) || !strings.Contains(err.Error(), name) {
				t.Errorf("flipped byte in %s: err = %v, want ErrInvalid naming %s", name, err, name)
			} else {
				t.Logf("flipped: %v", err)
			}
			_, err = debmeta.Parse(bytes.NewReader(b[:off+size/2]))
			if !errors.Is(err, debmeta.ErrInvalid) || !strings.Contains(err.Error(), name+" truncated") {
				t.Errorf("cut inside %s: err = %v, want ErrInvalid naming the truncated member", name, err)
			} else {
				t.Logf("cut: %v", err)
			}
		})
	}
}

// TestParseRejectsCorruptDpkgDeb: the same for a package built by the real
// dpkg-deb, and dpkg-deb itself agrees the flipped package is broken.
func TestParseRejectsCorruptDpkgDeb(t *testing.T) {
	dpkgDeb := testenv.RequireTool(t, "dpkg-deb")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755)
	os.MkdirAll(filepath.Join(root, "usr/share/x"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/share/x/f"), bytes.Repeat([]byte("hive data member\n"), 4000), 0o644)
	os.WriteFile(filepath.Join(root, "DEBIAN/control"), []byte("Package: realdeb\nVersion: 3.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: real\n long\n"), 0o644)
	for _, z := range []string{"gzip", "xz", "zstd"} {
		out := filepath.Join(dir, "real-"+z+".deb")
		if b, err := exec.Command(dpkgDeb, "-Z"+z, "--build", root, out).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb: %v\n%s", err, b)
		}
		b, _ := os.ReadFile(out)
		name, off, size := dataMember(t, b)
		b[off+size/2] ^= 0xff
		bad := filepath.Join(dir, "bad-"+z+".deb")
		os.WriteFile(bad, b, 0o644)
		if out, err := exec.Command(dpkgDeb, "--fsys-tarfile", bad).CombinedOutput(); err == nil {
			t.Errorf("%s: dpkg-deb accepts the flipped package; the test corrupts nothing (%d bytes out)", z, len(out))
		}
		_, err := debmeta.Parse(bytes.NewReader(b))
		if !errors.Is(err, debmeta.ErrInvalid) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err = %v, want ErrInvalid naming %s", z, err, name)
		} else {
			t.Logf("%s: %v", z, err)
		}
	}
}

// TestParseMemberOrder: dpkg's member order is enforced; reserved
// underscore members (dpkg-sig's signature after data, for one) are
// ignored; an .lzma data member is read.
func TestParseMemberOrder(t *testing.T) {
	b := build(t, "gz")
	ms := arMembers(t, b)
	body := func(name string) []byte { m := ms[name]; return b[m[0] : m[0]+m[1]] }
	ar := func(members ...string) []byte {
		var out bytes.Buffer
		out.WriteString("!<arch>\n")
		for i := 0; i < len(members); i += 2 {
			d := []byte(members[i+1])
			fmt.Fprintf(&out, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", members[i], 1700000000, 0, 0, "100644", len(d))
			out.Write(d)
			if len(d)%2 == 1 {
				out.WriteByte('\n')
			}
		}
		return out.Bytes()
	}
	bin, ctl, data := string(body("debian-binary")), string(body("control.tar.gz")), string(body("data.tar.gz"))
	cases := []struct {
		name string
		in   []byte
		want string // "" = accepted
	}{
		{"reserved member", ar("debian-binary", bin, "_extra", "x", "control.tar.gz", ctl, "data.tar.gz", data), ""},
		{"data before control", ar("debian-binary", bin, "data.tar.gz", data, "control.tar.gz", ctl), "before the control member"},
		{"member after data", ar("debian-binary", bin, "control.tar.gz", ctl, "data.tar.gz", data, "evil", "x"), "after the data member"},
		{"signature after data", ar("debian-binary", bin, "control.tar.gz", ctl, "data.tar.gz", data, "_gpgbuilder", "-----BEGIN PGP SIGNED MESSAGE-----\n"), ""},
		{"two control members", ar("debian-binary", bin, "control.tar.gz", ctl, "control.tar.gz", ctl, "data.tar.gz", data), "second control member"},
		{"unknown member", ar("debian-binary", bin, "notes", "x", "control.tar.gz", ctl, "data.tar.gz", data), "unexpected member"},
		{"data not a tar", ar("debian-binary", bin, "control.tar.gz", ctl, "data.tar", "not a tar archive at all"), "data.tar"},
	}
	var lz bytes.Buffer
	w, _ := lzma.NewWriter(&lz)
	dtar, err := gzip.NewReader(bytes.NewReader(body("data.tar.gz")))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(w, dtar)
	w.Close()
	cases = append(cases, struct {
		name string
		in   []byte
		want string
	}{"lzma data", ar("debian-binary", bin, "control.tar.gz", ctl, "data.tar.lzma", lz.String()), ""})
	for _, c := range cases {
		_, err := debmeta.Parse(bytes.NewReader(c.in))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (!errors.Is(err, debmeta.ErrInvalid) || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err = %v, want ErrInvalid with %q", c.name, err, c.want)
		}
	}
}

// BenchmarkParse: one pass over a .deb with a 512 KiB data file (hashes,
// control, and the data member decompressed and read to its end).
func BenchmarkParse(b *testing.B) {
	body := make([]byte, 512<<10)
	for i := range body {
		body[i] = "abcdefghijklmnopqrstuvwxyz0123456789 \n"[(i*7919+i/977)%38]
	}
	for _, c := range []string{"gz", "xz", "zst"} {
		b.Run(c, func(b *testing.B) {
			pkg, err := repotest.BuildDeb(repotest.Deb{Name: "big", Version: "1", Compression: c, Files: map[string]string{"./usr/share/big.txt": string(body)}})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(pkg)))
			for b.Loop() {
				if _, err := debmeta.Parse(bytes.NewReader(pkg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestParseBzip2Data: a data member compressed by the real bzip2 is read to
// its end; a flipped byte in it is refused naming it.
func TestParseBzip2Data(t *testing.T) {
	bz := testenv.RequireTool(t, "bzip2")
	b := build(t, "none")
	ms := arMembers(t, b)
	body := func(name string) []byte { m := ms[name]; return b[m[0] : m[0]+m[1]] }
	cmd := exec.Command(bz, "-c")
	cmd.Stdin = bytes.NewReader(body("data.tar"))
	data, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.WriteString("!<arch>\n")
	for _, m := range [][2]string{{"debian-binary", string(body("debian-binary"))}, {"control.tar", string(body("control.tar"))}, {"data.tar.bz2", string(data)}} {
		fmt.Fprintf(&out, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m[0], 1700000000, 0, 0, "100644", len(m[1]))
		out.WriteString(m[1])
		if len(m[1])%2 == 1 {
			out.WriteByte('\n')
		}
	}
	deb := out.Bytes()
	if _, err := debmeta.Parse(bytes.NewReader(deb)); err != nil {
		t.Fatalf("bzip2 data member: %v", err)
	}
	_, off, size := dataMember(t, deb)
	deb[off+size/2] ^= 0xff
	if _, err := debmeta.Parse(bytes.NewReader(deb)); !errors.Is(err, debmeta.ErrInvalid) || !strings.Contains(err.Error(), "data.tar.bz2") {
		t.Errorf("flipped bzip2 data member: err = %v, want ErrInvalid naming data.tar.bz2", err)
	} else {
		t.Logf("flipped: %v", err)
	}
}
