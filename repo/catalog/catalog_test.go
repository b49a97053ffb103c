package catalog_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/rpmpack"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/catalog"
	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/sign"
)

type primary struct {
	Packages []struct {
		Name    string `xml:"name"`
		Arch    string `xml:"arch"`
		Version struct {
			Epoch string `xml:"epoch,attr"`
			Ver   string `xml:"ver,attr"`
			Rel   string `xml:"rel,attr"`
		} `xml:"version"`
		Checksum string `xml:"checksum"`
		Summary  string `xml:"summary"`
		Desc     string `xml:"description"`
		Size     struct {
			Package   string `xml:"package,attr"`
			Installed string `xml:"installed,attr"`
			Archive   string `xml:"archive,attr"`
		} `xml:"size"`
		Location struct {
			Href string `xml:"href,attr"`
		} `xml:"location"`
		Format struct {
			License     string `xml:"license"`
			Group       string `xml:"group"`
			SourceRPM   string `xml:"sourcerpm"`
			HeaderRange struct {
				Start string `xml:"start,attr"`
				End   string `xml:"end,attr"`
			} `xml:"header-range"`
			Provides []entry `xml:"provides>entry"`
			Requires []entry `xml:"requires>entry"`
			Files    []struct {
				Type string `xml:"type,attr"`
				Path string `xml:",chardata"`
			} `xml:"file"`
		} `xml:"format"`
	} `xml:"package"`
}

type entry struct {
	Name  string `xml:"name,attr"`
	Flags string `xml:"flags,attr"`
	Epoch string `xml:"epoch,attr"`
	Ver   string `xml:"ver,attr"`
	Rel   string `xml:"rel,attr"`
	Pre   string `xml:"pre,attr"`
}

func readPrimary(t *testing.T, dir string) primary {
	t.Helper()
	md, err := os.ReadFile(filepath.Join(dir, "repodata/repomd.xml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`href="(repodata/[^"]*primary.xml.gz)"`).FindSubmatch(md)
	if m == nil {
		t.Fatalf("no primary in %s", md)
	}
	b, err := os.ReadFile(filepath.Join(dir, string(m[1])))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	x, _ := io.ReadAll(zr)
	var p primary
	if err := xml.Unmarshal(x, &p); err != nil {
		t.Fatal(err)
	}
	sort.Slice(p.Packages, func(i, j int) bool { return p.Packages[i].Location.Href < p.Packages[j].Location.Href })
	return p
}

func writeCorpus(t *testing.T, dir string) {
	t.Helper()
	pkgs := []repotest.RPM{
		{Name: "alpha", Version: "1.0", Arch: "x86_64", Files: map[string]string{"/usr/bin/alpha": "a", "/etc/alpha.conf": "c", "/usr/share/alpha/data": "d"}, Requires: []string{"bash", "/bin/sh"}},
		{Name: "beta", Version: "2.3", Release: "4.el9", Arch: "noarch", Epoch: 2},
		{Name: "gamma", Version: "0.1", Arch: "aarch64", Epoch: rpmpack.NoEpoch, Files: map[string]string{"/usr/sbin/gammad": "g", "/usr/lib/sendmail": "s"}},
	}
	for _, p := range pkgs {
		b, err := repotest.BuildRPM(p)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, p.Name+".rpm"), b, 0o644)
	}
}

// TestIndexYumMatchesCreaterepo indexes one directory with hive-repo and
// with createrepo_c and compares primary.xml field by field.
func TestIndexYumMatchesCreaterepo(t *testing.T) {
	cr := testenv.RequireTool(t, "createrepo_c")
	ours, theirs := t.TempDir(), t.TempDir()
	writeCorpus(t, ours)
	if out, err := exec.Command("cp", "-a", ours+"/.", theirs).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if _, err := catalog.IndexYum(context.Background(), ours, catalog.Options{}); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cr, "--no-database", theirs).CombinedOutput(); err != nil {
		t.Fatalf("createrepo_c: %v\n%s", err, out)
	}
	a, b := readPrimary(t, ours), readPrimary(t, theirs)
	if len(a.Packages) != 3 || len(b.Packages) != 3 {
		t.Fatalf("packages: ours %d, createrepo_c %d", len(a.Packages), len(b.Packages))
	}
	for i := range a.Packages {
		pa, pb := a.Packages[i], b.Packages[i]
		if len(pa.Format.Requires) == 0 && pa.Name == "alpha" || pa.Format.HeaderRange.End == "" || pa.Checksum == "" {
			t.Errorf("%s: parsed too little: %+v", pa.Name, pa)
		}
		if !reflect.DeepEqual(pa, pb) {
			t.Errorf("package %s differs from createrepo_c:\nours   %+v\ntheirs %+v", pa.Name, pa, pb)
		}
	}
}

// TestIndexYumIncrementalAndDnf: a second run reads only the new package;
// dnf (gpgcheck off, repo_gpgcheck on) reads the signed result via file://.
func TestIndexYumIncrementalAndDnf(t *testing.T) {
	dnf := testenv.RequireTool(t, "dnf", "rpm")
	dir := t.TempDir()
	writeCorpus(t, dir)
	signer, err := sign.Generate(sign.Ed25519, "t", "t@t")
	if err != nil {
		t.Fatal(err)
	}
	cache := catalog.NewCache()
	st, err := catalog.IndexYum(context.Background(), dir, catalog.Options{Cache: cache, Signer: signer})
	if err != nil || st.Parsed != 3 {
		t.Fatalf("first run: %+v %v", st, err)
	}
	b, _ := repotest.BuildRPM(repotest.RPM{Name: "delta", Version: "1", Signer: signer})
	os.WriteFile(filepath.Join(dir, "delta.rpm"), b, 0o644)
	cf := filepath.Join(t.TempDir(), "cache")
	cache.Save(cf)
	cache2, _ := catalog.LoadCache(cf)
	st, err = catalog.IndexYum(context.Background(), dir, catalog.Options{Cache: cache2, Signer: signer})
	if err != nil || st.Parsed != 1 || st.Packages != 4 {
		t.Fatalf("incremental run: %+v %v", st, err)
	}
	key := filepath.Join(t.TempDir(), "key.asc")
	os.WriteFile(key, signer.PublicArmored(), 0o644)
	c := repotest.NewDnf(t, dnf, t.TempDir(), "pipe", "file://"+dir, "file://"+key)
	out, err := c.Run(repotest.Ctx(t, 2*time.Minute), "list", "available")
	if err != nil {
		t.Fatalf("dnf: %v\n%s", err, out)
	}
	for _, n := range []string{"alpha.x86_64", "beta.noarch", "delta.noarch"} {
		if !strings.Contains(out, n) {
			t.Errorf("dnf list lacks %s\n%s", n, out)
		}
	}
}

// TestIndexAptFlat: the flat repository is read by apt-get with Signed-By,
// and Packages agrees with apt-ftparchive on the sums.
func TestIndexAptFlat(t *testing.T) {
	aptGet := testenv.RequireTool(t, "apt-get", "apt-ftparchive", "gpgv")
	dir := t.TempDir()
	for i, c := range []string{"gz", "xz", "zst"} {
		b, _ := repotest.BuildDeb(repotest.Deb{Name: fmt.Sprintf("pkg%d", i), Version: "1.0", Compression: c})
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("pkg%d_1.0_all.deb", i)), b, 0o644)
	}
	signer, _ := sign.Generate(sign.Ed25519, "t", "t@t")
	if _, err := catalog.IndexApt(context.Background(), dir, catalog.Options{Signer: signer}); err != nil {
		t.Fatal(err)
	}
	ftp, err := exec.Command("apt-ftparchive", "packages", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := os.ReadFile(filepath.Join(dir, "Packages"))
	for _, line := range strings.Split(string(ftp), "\n") {
		if strings.HasPrefix(line, "SHA256: ") || strings.HasPrefix(line, "Size: ") || strings.HasPrefix(line, "MD5sum: ") {
			if !strings.Contains(string(ours), line+"\n") {
				t.Errorf("apt-ftparchive has %q, ours lacks it", line)
			}
		}
	}
	key := filepath.Join(t.TempDir(), "key.asc")
	os.WriteFile(key, signer.PublicArmored(), 0o644)
	adir := t.TempDir()
	a := repotest.NewApt(t, adir, "deb [signed-by="+key+"] file:"+dir+" ./")
	ctx := repotest.Ctx(t, time.Minute)
	out, err := a.Run(ctx, aptGet, "update")
	if err != nil || len(repotest.Warnings(out)) > 0 {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	out, err = a.Run(ctx, "apt-cache", "show", "pkg2")
	if err != nil || !strings.Contains(out, "Package: pkg2") {
		t.Fatalf("apt-cache show: %v\n%s", err, out)
	}
}

// TestIndexRefusesDuplicatesAndCorrupt: pipeline mode holds the same rules
// as uploads. Two files of one package version (other bytes, or identical
// copies) fail the run naming both files; a .deb with a corrupt data member
// fails it naming the file and member; a cache entry written by an older,
// laxer parser does not vouch for a file. Nothing is written on failure.
// Before: all three runs succeeded and listed every file.
func TestIndexRefusesDuplicatesAndCorrupt(t *testing.T) {
	ctx := context.Background()
	deb := func(t *testing.T, comp string) []byte {
		b, err := repotest.BuildDeb(repotest.Deb{Name: "tool", Version: "1.0", Compression: comp})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("apt duplicate", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "tool_1.0_all.deb"), deb(t, "gz"), 0o644)
		os.WriteFile(filepath.Join(dir, "tool_1.00_all.deb"), deb(t, "xz"), 0o644)
		_, err := catalog.IndexApt(ctx, dir, catalog.Options{})
		if !errors.Is(err, catalog.ErrDuplicate) || !strings.Contains(err.Error(), "tool_1.00_all.deb and tool_1.0_all.deb") {
			t.Errorf("err = %v, want ErrDuplicate naming both files", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "Packages")); err == nil {
			t.Errorf("Packages written despite the error")
		}
	})
	t.Run("yum identical copies", func(t *testing.T) {
		dir := t.TempDir()
		b, _ := repotest.BuildRPM(repotest.RPM{Name: "good", Version: "1.0"})
		os.WriteFile(filepath.Join(dir, "good-1.0-1.noarch.rpm"), b, 0o644)
		os.MkdirAll(filepath.Join(dir, "copy"), 0o755)
		os.WriteFile(filepath.Join(dir, "copy/good-1.0-1.noarch.rpm"), b, 0o644)
		_, err := catalog.IndexYum(ctx, dir, catalog.Options{})
		if !errors.Is(err, catalog.ErrDuplicate) || !strings.Contains(err.Error(), "identical copies") {
			t.Errorf("err = %v, want ErrDuplicate (identical copies)", err)
		}
	})
	t.Run("apt corrupt data and stale cache", func(t *testing.T) {
		dir := t.TempDir()
		b := deb(t, "gz")
		i := bytes.Index(b, []byte("data.tar.gz"))
		var size int
		fmt.Sscan(string(b[i+48:i+58]), &size)
		b[i+60+size/2] ^= 0xff
		path := filepath.Join(dir, "tool_1.0_all.deb")
		os.WriteFile(path, b, 0o644)
		_, err := catalog.IndexApt(ctx, dir, catalog.Options{})
		if err == nil || !strings.Contains(err.Error(), "tool_1.0_all.deb") || !strings.Contains(err.Error(), "data.tar.gz") {
			t.Errorf("err = %v, want an error naming the file and data.tar.gz", err)
		}
		// A cache from a parser that did not read the data member, with a
		// matching path/size/mtime hint.
		c := catalog.NewCache()
		good, err := catalog.Parse(catalog.KindDeb, bytes.NewReader(deb(t, "gz")))
		if err != nil {
			t.Fatal(err)
		}
		good.Checks = 0
		c.Put(good)
		fi, _ := os.Stat(path)
		cacheFile := filepath.Join(t.TempDir(), "cache")
		c.Hints[path] = struct {
			Size, MTime int64
			Sum         string
		}{fi.Size(), fi.ModTime().UnixNano(), good.SHA256()}
		if err := c.Save(cacheFile); err != nil {
			t.Fatal(err)
		}
		c, _ = catalog.LoadCache(cacheFile)
		if _, err := catalog.IndexApt(ctx, dir, catalog.Options{Cache: c}); err == nil {
			t.Errorf("a stale cache entry vouched for a corrupt file")
		}
	})
}
