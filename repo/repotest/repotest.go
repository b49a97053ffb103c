// Package repotest builds small but real .rpm and .deb packages for tests and
// benchmarks: RPMs with github.com/google/rpmpack (optionally signed, so dnf's
// gpgcheck passes), debs with a minimal ar/tar writer in any of the member
// compressions dpkg accepts (gzip, xz, zstd). Used by tests only.
package repotest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/rpmpack"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/hivefleet/hive/repo/sign"
)

// RPM describes a test RPM.
type RPM struct {
	Name, Version, Release, Arch string
	Epoch                        uint32 // rpmpack.NoEpoch for none
	Files                        map[string]string
	Requires                     []string // plain names
	Signer                       *sign.Signer
	BuildTime                    time.Time
}

// BuildRPM returns the bytes of the package.
func BuildRPM(r RPM) ([]byte, error) {
	if r.Arch == "" {
		r.Arch = "noarch"
	}
	if r.Release == "" {
		r.Release = "1"
	}
	if r.BuildTime.IsZero() {
		r.BuildTime = time.Unix(1700000000, 0)
	}
	md := rpmpack.RPMMetaData{
		Name: r.Name, Version: r.Version, Release: r.Release, Arch: r.Arch, Epoch: r.Epoch,
		Summary: "test package " + r.Name, Description: "A package built by hive's tests.\nSecond line & <xml>.",
		Licence: "MIT", Group: "Applications/System", BuildHost: "hive-test", BuildTime: r.BuildTime,
		Compressor: "gzip",
	}
	for _, q := range r.Requires {
		md.Requires = append(md.Requires, &rpmpack.Relation{Name: q})
	}
	p, err := rpmpack.NewRPM(md)
	if err != nil {
		return nil, err
	}
	if r.Signer != nil {
		p.SetPGPSigner(r.Signer.Detach)
	}
	files := r.Files
	if files == nil {
		files = map[string]string{"/usr/share/hive-test/" + r.Name + ".txt": r.Name + " " + r.Version + "\n"}
	}
	for _, name := range sortedKeys(files) {
		p.AddFile(rpmpack.RPMFile{Name: name, Body: []byte(files[name]), Mode: 0o100644, Owner: "root", Group: "root", MTime: uint32(r.BuildTime.Unix())})
	}
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Deb describes a test .deb.
type Deb struct {
	Name, Version, Arch string
	Compression         string // gz (default), xz, zst, none
	Files               map[string]string
	Depends             string
}

// BuildDeb returns the bytes of the package.
func BuildDeb(d Deb) ([]byte, error) {
	if d.Arch == "" {
		d.Arch = "all"
	}
	files := d.Files
	if files == nil {
		files = map[string]string{"./usr/share/hive-test/" + d.Name + ".txt": d.Name + " " + d.Version + "\n"}
	}
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: hive tests <tests@hive.invalid>\nInstalled-Size: 1\nSection: misc\nPriority: optional\n", d.Name, d.Version, d.Arch)
	if d.Depends != "" {
		control += "Depends: " + d.Depends + "\n"
	}
	control += "Description: test package " + d.Name + "\n Built by hive's tests.\n .\n Second paragraph.\n"
	ctar, err := tarOf(map[string]string{"./control": control})
	if err != nil {
		return nil, err
	}
	dtar, err := tarOf(files)
	if err != nil {
		return nil, err
	}
	ext := d.Compression
	if ext == "" {
		ext = "gz"
	}
	cz, err := compress(ext, ctar)
	if err != nil {
		return nil, err
	}
	dz, err := compress(ext, dtar)
	if err != nil {
		return nil, err
	}
	suffix := ".tar"
	if ext != "none" {
		suffix += "." + ext
	}
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	arMember(&b, "debian-binary", []byte("2.0\n"))
	arMember(&b, "control"+suffix, cz)
	arMember(&b, "data"+suffix, dz)
	return b.Bytes(), nil
}

func arMember(b *bytes.Buffer, name string, data []byte) {
	fmt.Fprintf(b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 1700000000, 0, 0, "100644", len(data))
	b.Write(data)
	if len(data)%2 == 1 {
		b.WriteByte('\n')
	}
}

func tarOf(files map[string]string) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dirs := map[string]bool{}
	for _, name := range sortedKeys(files) {
		for d := filepath.Dir(name); d != "." && d != "/" && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range sortedKeys(dirs) {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(1700000000, 0)}); err != nil {
			return nil, err
		}
	}
	for _, name := range sortedKeys(files) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}); err != nil {
			return nil, err
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func compress(ext string, data []byte) ([]byte, error) {
	var b bytes.Buffer
	switch ext {
	case "none":
		return data, nil
	case "gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	case "xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		w.Write(data)
		w.Close()
	case "zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		w.Write(data)
		w.Close()
	default:
		return nil, fmt.Errorf("unknown compression %q", ext)
	}
	return b.Bytes(), nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// CorpusRPM writes n small RPMs into dir (once: a complete corpus left by
// an earlier run is reused) and returns dir.
func CorpusRPM(dir string, n int) (string, error) {
	return corpus(dir, n, "rpm", func(i int) (string, []byte, error) {
		name := fmt.Sprintf("bench-pkg-%05d", i)
		b, err := BuildRPM(RPM{Name: name, Version: "1.0", Arch: "x86_64", Files: map[string]string{
			"/usr/bin/" + name: "#!/bin/sh\necho " + name + "\n", "/usr/share/doc/" + name + "/README": "readme\n", "/etc/" + name + ".conf": "x=1\n",
		}, Requires: []string{"bash"}})
		return name + "-1.0-1.x86_64.rpm", b, err
	})
}

// CorpusDeb writes n small debs into dir (once) and returns dir.
func CorpusDeb(dir string, n int) (string, error) {
	return corpus(dir, n, "deb", func(i int) (string, []byte, error) {
		name := fmt.Sprintf("bench-pkg-%05d", i)
		b, err := BuildDeb(Deb{Name: name, Version: "1.0-1", Arch: "amd64", Depends: "bash"})
		return name + "_1.0-1_amd64.deb", b, err
	})
}

func corpus(dir string, n int, kind string, gen func(int) (string, []byte, error)) (string, error) {
	stamp := filepath.Join(dir, ".complete-"+kind+"-"+strconv.Itoa(n))
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for i := range n {
		name, b, err := gen(i)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", err
		}
	}
	return dir, os.WriteFile(stamp, nil, 0o644)
}

// RPMBuildSpec describes packages made by the real rpmbuild: one spec whose
// subpackages are the named packages (version 1.0, release 1, noarch), each
// owning one small file, as a distribution's small packages are built
// (rpmlib() requires, file digests, payload digest, a changelog entry).
type RPMBuildSpec struct {
	Names     []string
	Changelog bool
}

// RPMBuild runs rpmbuild in workDir and returns the packages' bytes in the
// order of s.Names. It needs rpmbuild on PATH.
func RPMBuild(workDir string, s RPMBuildSpec) ([][]byte, error) {
	paths, err := rpmBuildFiles(workDir, s)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(paths))
	for i, p := range paths {
		if out[i], err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func rpmBuildFiles(workDir string, s RPMBuildSpec) ([]string, error) {
	if len(s.Names) == 0 {
		return nil, fmt.Errorf("rpmbuild: no package names")
	}
	var spec strings.Builder
	fmt.Fprintf(&spec, "Name: %s-base\nVersion: 1.0\nRelease: 1\nSummary: base\nLicense: MIT\nBuildArch: noarch\n%%description\nbase\n%%prep\n%%build\n%%install\nmkdir -p %%{buildroot}/usr/share/hive-test\n", s.Names[0])
	for _, n := range s.Names {
		fmt.Fprintf(&spec, "printf '%s\\n' > %%{buildroot}/usr/share/hive-test/%s.txt\n", n, n)
	}
	for _, n := range s.Names {
		fmt.Fprintf(&spec, "%%package -n %s\nSummary: test package %s\n%%description -n %s\nA package built by hive's tests with rpmbuild.\n%%files -n %s\n/usr/share/hive-test/%s.txt\n", n, n, n, n, n)
	}
	if s.Changelog {
		spec.WriteString("%changelog\n* Thu Nov 16 2023 hive tests <tests@hive.invalid> - 1.0-1\n- First build.\n")
	}
	top, err := filepath.Abs(filepath.Join(workDir, "rpmbuild"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(top, 0o755); err != nil {
		return nil, err
	}
	specFile := filepath.Join(top, "pkgs.spec")
	if err := os.WriteFile(specFile, []byte(spec.String()), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command("rpmbuild", "-bb", "--quiet", "--define", "_topdir "+top, "--define", "_build_id_links none", specFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("rpmbuild: %v\n%s", err, out)
	}
	paths := make([]string, len(s.Names))
	for i, n := range s.Names {
		paths[i] = filepath.Join(top, "RPMS", "noarch", n+"-1.0-1.noarch.rpm")
		if _, err := os.Stat(paths[i]); err != nil {
			return nil, fmt.Errorf("rpmbuild: %w", err)
		}
	}
	return paths, nil
}

// CorpusRPMBuild writes n small RPMs made by rpmbuild into dir (once, like
// CorpusRPM), building 200 per spec, GOMAXPROCS specs at a time.
func CorpusRPMBuild(dir string, n int) (string, error) {
	stamp := filepath.Join(dir, ".complete-rpmbuild-"+strconv.Itoa(n))
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "hive-rpmbuild")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	const batch = 200
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for start := 0; start < n; start += batch {
		names := make([]string, 0, batch)
		for i := start; i < n && i < start+batch; i++ {
			names = append(names, fmt.Sprintf("small-pkg-%05d", i))
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			paths, err := rpmBuildFiles(filepath.Join(work, strconv.Itoa(start)), RPMBuildSpec{Names: names, Changelog: true})
			for _, p := range paths {
				if err == nil {
					err = os.Rename(p, filepath.Join(dir, filepath.Base(p)))
				}
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return "", errs[0]
	}
	return dir, os.WriteFile(stamp, nil, 0o644)
}
