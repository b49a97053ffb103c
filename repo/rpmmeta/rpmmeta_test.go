package rpmmeta_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/rpmmeta"
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

// TestParseBytesAgrees: the in-memory path accepts and refuses exactly
// what the streaming path does.
func TestParseBytesAgrees(t *testing.T) {
	b := testRPM(t)
	for n := 0; n <= len(b); n += 7 {
		_, e1 := rpmmeta.Parse(bytes.NewReader(b[:n]))
		_, e2 := rpmmeta.ParseBytes(b[:n])
		if (e1 == nil) != (e2 == nil) {
			t.Fatalf("prefix %d: Parse %v, ParseBytes %v", n, e1, e2)
		}
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
		q, err2 := rpmmeta.ParseBytes(in)
		if (err == nil) != (err2 == nil) || err == nil && q.SHA256 != p.SHA256 {
			t.Fatalf("Parse and ParseBytes disagree: %v / %v", err, err2)
		}
	})
}
