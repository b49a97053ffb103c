package aptindex_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/repo/aptindex"
	"github.com/hivefleet/hive/repo/debmeta"
	"github.com/hivefleet/hive/repo/repotest"
)

func entry(t *testing.T, name, arch string) *aptindex.Entry {
	b, err := repotest.BuildDeb(repotest.Deb{Name: name, Version: "1", Arch: arch})
	if err != nil {
		t.Fatal(err)
	}
	p, err := debmeta.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return &aptindex.Entry{Pkg: p, Filename: "pool/main/" + name + "_1_" + arch + ".deb"}
}

func TestBuild(t *testing.T) {
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	res, err := aptindex.Build([]*aptindex.Entry{entry(t, "both", "all"), entry(t, "only", "arm64")},
		aptindex.Options{Date: date, ValidUntil: date.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	rel := string(res.Release)
	for _, want := range []string{"Suite: stable\n", "Codename: stable\n", "Date: Fri, 02 Jan 2026 03:04:05 +0000\n",
		"Valid-Until: Fri, 02 Jan 2026 04:04:05 +0000\n", "Architectures: amd64 arm64\n", "Components: main\n", "Acquire-By-Hash: yes\n", "SHA256:\n", "SHA512:\n"} {
		if !strings.Contains(rel, want) {
			t.Errorf("Release lacks %q:\n%s", want, rel)
		}
	}
	files := map[string]aptindex.File{}
	for _, f := range res.Files {
		files[f.Path] = f
		if !strings.Contains(rel, " "+f.SHA256+" ") || !strings.HasSuffix(strings.SplitN(rel[strings.Index(rel, f.SHA256):], "\n", 2)[0], " "+f.Path) {
			t.Errorf("Release does not list %s with its sha256", f.Path)
		}
	}
	amd := string(files["main/binary-amd64/Packages"].Data)
	arm := string(files["main/binary-arm64/Packages"].Data)
	if !strings.Contains(amd, "Package: both") || strings.Contains(amd, "Package: only") {
		t.Errorf("amd64 Packages:\n%s", amd)
	}
	if !strings.Contains(arm, "Package: both") || !strings.Contains(arm, "Package: only") {
		t.Errorf("arm64 Packages:\n%s", arm)
	}
	for _, field := range []string{"Filename: pool/main/both_1_all.deb\n", "Size: ", "MD5sum: ", "SHA1: ", "SHA256: ", "Description: test package both\n Built"} {
		if !strings.Contains(amd, field) {
			t.Errorf("stanza lacks %q", field)
		}
	}
	bh := aptindex.ByHash(files["main/binary-amd64/Packages.xz"])
	if bh[0] != "main/binary-amd64/by-hash/SHA256/"+files["main/binary-amd64/Packages.xz"].SHA256 {
		t.Errorf("by-hash path %q", bh[0])
	}
}
