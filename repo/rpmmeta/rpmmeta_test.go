package rpmmeta_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/rpmmeta"
	"github.com/hivefleet/hive/repo/sign"
)

func testRPM(t testing.TB) []byte {
	b, err := repotest.BuildRPM(repotest.RPM{Name: "hello", Version: "2.1", Release: "3", Arch: "x86_64", Epoch: 0,
		Files:    map[string]string{"/usr/bin/hello": "x", "/usr/share/doc/hello/README": "y", "/etc/hello.conf": "z"},
		Requires: []string{"bash"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	b := testRPM(t)
	p, err := rpmmeta.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "hello" || p.Version != "2.1" || p.Release != "3" || p.Arch != "x86_64" || p.Epoch != "0" {
		t.Errorf("NEVRA = %s", p.NEVRA())
	}
	if p.Size != int64(len(b)) || len(p.SHA256) != 64 {
		t.Errorf("size %d sha %q", p.Size, p.SHA256)
	}
	if p.HeaderStart <= 96 || p.HeaderEnd <= p.HeaderStart || p.HeaderEnd > len(b) {
		t.Errorf("header range %d-%d of %d", p.HeaderStart, p.HeaderEnd, len(b))
	}
	var paths []string
	for _, f := range p.Files {
		paths = append(paths, f.Path)
	}
	if len(paths) < 3 {
		t.Errorf("files = %v", paths)
	}
	found := false
	for _, r := range p.Requires {
		if r.Name == "bash" {
			found = true
		}
	}
	if !found {
		t.Errorf("requires = %+v", p.Requires)
	}
	if p.Summary != "test package hello" {
		t.Errorf("summary %q", p.Summary)
	}
}

// TestParseMatchesRPM compares with the real rpm tool's view of the header.
func TestParseMatchesRPM(t *testing.T) {
	rpmBin := testenv.RequireTool(t, "rpm")
	b := testRPM(t)
	f := filepath.Join(t.TempDir(), "hello.rpm")
	os.WriteFile(f, b, 0o644)
	out, err := exec.Command(rpmBin, "-qp", "--dbpath", t.TempDir(), "--qf", "%{NAME}|%{EPOCHNUM}|%{VERSION}|%{RELEASE}|%{ARCH}|%{SIZE}|%{BUILDTIME}", f).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qp: %v\n%s", err, out)
	}
	p, err := rpmmeta.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	got := p.Name + "|" + p.Epoch + "|" + p.Version + "|" + p.Release + "|" + p.Arch + "|" + itoa(p.InstalledSize) + "|" + itoa(p.BuildTime)
	if got != string(out) {
		t.Errorf("parsed %q, rpm says %q", got, out)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestParseRejects(t *testing.T) {
	b := testRPM(t)
	corrupt := append([]byte(nil), b...)
	corrupt[len(corrupt)-20] ^= 0xff // payload byte
	hdr := append([]byte(nil), b...)
	hdr[400] ^= 0xff // inside the main header
	cases := map[string][]byte{
		"empty":           nil,
		"truncated lead":  b[:50],
		"truncated":       b[:len(b)/2],
		"corrupt payload": corrupt,
		"corrupt header":  hdr,
		"not rpm":         []byte("!<arch>\ndebian-binary   " + string(make([]byte, 200))),
	}
	for name, in := range cases {
		_, err := rpmmeta.Parse(bytes.NewReader(in))
		if !errors.Is(err, rpmmeta.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// TestParseBytesAgrees: the in-memory path (headers read in place) accepts
// and refuses exactly what the streaming path (go-rpmutils) does, and
// returns the same metadata: for every seventh prefix of a package, and for
// every fourth byte of its lead and headers changed, of an unsigned and a
// signed package, and of one built by rpmbuild when it is installed.
func TestParseBytesAgrees(t *testing.T) {
	signer, err := sign.Generate(sign.Ed25519, "t", "t@example.invalid")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := repotest.BuildRPM(repotest.RPM{Name: "signed", Version: "1.0", Signer: signer, Requires: []string{"bash"}})
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string][]byte{"rpmpack": testRPM(t), "signed": signed}
	for name, b := range pkgs {
		agreeAround(t, name, b)
	}
	t.Run("rpmbuild", func(t *testing.T) {
		testenv.RequireTool(t, "rpmbuild")
		built, err := repotest.RPMBuild(t.TempDir(), repotest.RPMBuildSpec{Names: []string{"built"}, Changelog: true})
		if err != nil {
			t.Fatal(err)
		}
		agreeAround(t, "rpmbuild", built[0])
	})
}

// agreeAround checks agree on prefixes of the package b and on copies
// with one byte of its lead or headers altered.
func agreeAround(t *testing.T, name string, b []byte) {
	t.Helper()
	p, err := rpmmeta.ParseBytes(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for n := 0; n <= len(b); n += 7 {
		agree(t, fmt.Sprintf("%s prefix %d", name, n), b[:n])
	}
	// Every fourth byte, each changed one of three ways in turn (fast
	// enough under -race; FuzzParse goes further).
	in := make([]byte, len(b))
	for i := 0; i < p.HeaderEnd; i += 4 {
		x := []byte{0x01, 0x80, 0xff}[i/4%3]
		copy(in, b)
		in[i] ^= x
		agree(t, fmt.Sprintf("%s byte %d ^ %#x", name, i, x), in)
	}
}

// agree fails unless Parse and ParseBytes both refuse in or both return
// the same package.
func agree(t *testing.T, what string, in []byte) {
	t.Helper()
	p, e1 := rpmmeta.Parse(bytes.NewReader(in))
	q, e2 := rpmmeta.ParseBytes(in)
	if (e1 == nil) != (e2 == nil) {
		t.Fatalf("%s: Parse %v, ParseBytes %v", what, e1, e2)
	}
	if e1 != nil && (!errors.Is(e1, rpmmeta.ErrInvalid) || !errors.Is(e2, rpmmeta.ErrInvalid)) {
		t.Fatalf("%s: errors do not wrap ErrInvalid: %v / %v", what, e1, e2)
	}
	if e1 == nil && !reflect.DeepEqual(p, q) {
		t.Fatalf("%s: Parse and ParseBytes disagree:\n%+v\n%+v", what, p, q)
	}
}

func FuzzParse(f *testing.F) {
	b := testRPM(f)
	f.Add(b)
	f.Add(b[:200])
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := rpmmeta.Parse(bytes.NewReader(in))
		if err == nil && p.Name == "" {
			t.Fatal("accepted package without name")
		}
		agree(t, "fuzz input", in)
	})
}
