package yumindex_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"testing"

	"github.com/hivefleet/hive/repo/rpmmeta"
	"github.com/hivefleet/hive/repo/yumindex"
)

func entries(n int) []*yumindex.Entry {
	var es []*yumindex.Entry
	for i := range n {
		name := fmt.Sprintf("bench-pkg-%05d", i)
		p := &rpmmeta.Package{Name: name, Arch: "x86_64", Epoch: "0", Version: "1.0", Release: "1", SHA256: fmt.Sprintf("%064x", i),
			Summary: "test package " + name, Description: "A package built by hive's tests.", License: "MIT", Size: 1500, HeaderStart: 1000, HeaderEnd: 2000,
			Provides: []rpmmeta.Dep{{Name: name, Flags: "EQ", Epoch: "0", Ver: "1.0", Rel: "1"}}, Requires: []rpmmeta.Dep{{Name: "bash"}},
			Files: []rpmmeta.File{{Path: "/usr/bin/" + name}, {Path: "/etc/" + name + ".conf"}, {Path: "/usr/share/doc/" + name + "/README"}}}
		es = append(es, &yumindex.Entry{Pkg: p, Href: "packages/" + name + "-1.0-1.x86_64.rpm", FileTime: 1700000000})
	}
	return es
}

// BenchmarkBuildAddOne: a 2,000-package index rebuilt after one package was
// added, with the run cache (what a server publish does).
func BenchmarkBuildAddOne(b *testing.B) {
	es := entries(2001)
	c := yumindex.NewChunks()
	if _, err := yumindex.Build(es[:2000], yumindex.Options{Chunks: c}); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		n := 2000 + i%2
		if _, err := yumindex.Build(es[:n], yumindex.Options{Chunks: c}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkBuildFull: a fresh 2,000-package index, one gzip member per file.
func BenchmarkBuildFull(b *testing.B) {
	es := entries(2000)
	for b.Loop() {
		if _, err := yumindex.Build(es, yumindex.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestChunkedEqualsWhole: the chunked build decompresses to exactly the
// single-member build, with the same open checksum, through many
// incremental changes (adds, removes, replaced content).
func TestChunkedEqualsWhole(t *testing.T) {
	all := entries(700)
	c := yumindex.NewChunks()
	sets := [][]*yumindex.Entry{all[:500], all[:501], append(append([]*yumindex.Entry{}, all[:100]...), all[101:501]...), all[200:700], all[:700], all[:1]}
	for i, es := range sets {
		a, err := yumindex.Build(es, yumindex.Options{Chunks: c})
		if err != nil {
			t.Fatal(err)
		}
		b, err := yumindex.Build(es, yumindex.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for j := range a.Files {
			fa, fb := a.Files[j], b.Files[j]
			if fa.OpenSHA != fb.OpenSHA || fa.OpenSize != fb.OpenSize {
				t.Fatalf("set %d %s: open checksum %s/%d, whole build %s/%d", i, fa.Type, fa.OpenSHA, fa.OpenSize, fb.OpenSHA, fb.OpenSize)
			}
			if got, want := gunzip(t, fa.Data), gunzip(t, fb.Data); !bytes.Equal(got, want) {
				t.Fatalf("set %d %s: content differs", i, fa.Type)
			}
			if s := sha256.Sum256(gunzip(t, fa.Data)); hex.EncodeToString(s[:]) != fa.OpenSHA {
				t.Fatalf("set %d %s: open checksum does not match content", i, fa.Type)
			}
		}
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
