package convergetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/rpmpack"

	"github.com/hivefleet/hive/internal/testenv"
)

// Deb describes a tiny Debian package built by BuildDeb.
type Deb struct {
	Name, Version string
	// Files by absolute path; a file under /etc is a conffile, one in a
	// bin or sbin directory is executable.
	Files map[string]string
	// Depends, optional, as in a control file.
	Depends string
}

// BuildDeb builds the package with dpkg-deb into dir and returns its path.
func BuildDeb(t testing.TB, dir string, d Deb) string {
	t.Helper()
	testenv.RequireTool(t, "dpkg-deb")
	src := filepath.Join(t.TempDir(), d.Name)
	mustMk(t, filepath.Join(src, "DEBIAN"))
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: hive tests <t@hive.invalid>\nDescription: hive test package %s\n",
		d.Name, d.Version, d.Name)
	if d.Depends != "" {
		control += "Depends: " + d.Depends + "\n"
	}
	mustWrite(t, filepath.Join(src, "DEBIAN", "control"), control)
	var conf []string
	for p, body := range d.Files {
		mustMk(t, filepath.Join(src, filepath.Dir(p)))
		mustWrite(t, filepath.Join(src, p), body)
		if isExec(p) {
			if err := os.Chmod(filepath.Join(src, p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if strings.HasPrefix(p, "/etc/") {
			conf = append(conf, p)
		}
	}
	if len(conf) > 0 {
		mustWrite(t, filepath.Join(src, "DEBIAN", "conffiles"), strings.Join(conf, "\n")+"\n")
	}
	out := filepath.Join(dir, fmt.Sprintf("%s_%s_all.deb", d.Name, d.Version))
	mustMk(t, dir)
	run(t, "", "dpkg-deb", "--root-owner-group", "--build", src, out)
	return out
}

// GPGKey is a throw-away OpenPGP signing key in its own home directory.
type GPGKey struct {
	Home string
	// Armored public key.
	Public string
}

// NewGPGKey generates an ed25519 signing key; its agent is stopped when
// the test ends.
func NewGPGKey(t testing.TB) *GPGKey {
	t.Helper()
	testenv.RequireTool(t, "gpg", "gpgconf")
	home, err := os.MkdirTemp("", "hive-gpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "gpg-agent").Run() //nolint:errcheck
		os.RemoveAll(home)
	})
	run(t, "", "gpg", "--batch", "--homedir", home, "--passphrase", "", "--quick-gen-key", "hive test <t@hive.invalid>", "ed25519", "sign", "never")
	pub := run(t, "", "gpg", "--batch", "--homedir", home, "--armor", "--export")
	return &GPGKey{Home: home, Public: pub}
}

// AptRepo writes a signed APT repository with suite "stable", component
// "main", architecture amd64, holding debs, into dir. key may be nil for an
// unsigned repository.
func AptRepo(t testing.TB, dir string, key *GPGKey, debs ...string) {
	t.Helper()
	testenv.RequireTool(t, "apt-ftparchive")
	pool := filepath.Join(dir, "pool")
	mustMk(t, pool)
	for _, d := range debs {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(pool, filepath.Base(d)), string(b))
	}
	bin := filepath.Join(dir, "dists", "stable", "main", "binary-amd64")
	mustMk(t, bin)
	mustWrite(t, filepath.Join(bin, "Packages"), run(t, dir, "apt-ftparchive", "packages", "pool"))
	rel := run(t, dir, "apt-ftparchive",
		"-o", "APT::FTPArchive::Release::Origin=hive-test", "-o", "APT::FTPArchive::Release::Label=hive-test",
		"-o", "APT::FTPArchive::Release::Suite=stable", "-o", "APT::FTPArchive::Release::Codename=stable",
		"-o", "APT::FTPArchive::Release::Architectures=amd64", "-o", "APT::FTPArchive::Release::Components=main",
		"release", filepath.Join("dists", "stable"))
	relPath := filepath.Join(dir, "dists", "stable", "Release")
	mustWrite(t, relPath, rel)
	if key != nil {
		run(t, "", "gpg", "--batch", "--yes", "--homedir", key.Home, "--clearsign", "-o", filepath.Join(dir, "dists", "stable", "InRelease"), relPath)
	}
}

// RPM describes a tiny package built by BuildRPM.
type RPM struct {
	Name, Version, Release string
	Epoch                  uint32
	// Files by absolute path; one in a bin or sbin directory is
	// executable.
	Files map[string]string
	// Preun, optional, is the pre-uninstall scriptlet.
	Preun string
}

// BuildRPM builds the package with rpmpack into dir and returns its path.
func BuildRPM(t testing.TB, dir string, r RPM) string {
	t.Helper()
	md := rpmpack.RPMMetaData{Name: r.Name, Version: r.Version, Release: r.Release, Epoch: r.Epoch, Arch: "noarch",
		Summary: "hive test package", Description: "hive test package " + r.Name, Licence: "MIT", OS: "linux"}
	p, err := rpmpack.NewRPM(md)
	if err != nil {
		t.Fatal(err)
	}
	if r.Preun != "" {
		p.AddPreun(r.Preun)
	}
	for path, body := range r.Files {
		mode := uint(0o100644)
		if isExec(path) {
			mode = 0o100755
		}
		p.AddFile(rpmpack.RPMFile{Name: path, Body: []byte(body), Mode: mode, Owner: "root", Group: "root"})
	}
	var buf bytes.Buffer
	if err := p.Write(&buf); err != nil {
		t.Fatal(err)
	}
	mustMk(t, dir)
	out := filepath.Join(dir, fmt.Sprintf("%s-%s-%s.noarch.rpm", r.Name, r.Version, r.Release))
	mustWrite(t, out, buf.String())
	return out
}

// YumRepo indexes dir (holding .rpm files) with createrepo_c.
func YumRepo(t testing.TB, dir string) {
	t.Helper()
	testenv.RequireTool(t, "createrepo_c")
	run(t, "", "createrepo_c", "--no-database", "--quiet", dir)
}

// DnfConfig writes a dnf.conf into the root that touches nothing outside
// the installroot and fails on broken repositories (see REAL-TOOLS.md), and
// returns the dnf arguments to use with it.
func DnfConfig(t testing.TB, root string) []string {
	t.Helper()
	conf := filepath.Join(root, "etc", "dnf", "dnf.conf")
	mustMk(t, filepath.Dir(conf))
	mustWrite(t, conf, "[main]\ngpgcheck=1\nskip_if_unavailable=False\ninstall_weak_deps=False\nkeepcache=False\n")
	// With --installroot, dnf keeps cache, logs and history inside the
	// root and reads repos from <root>/etc/yum.repos.d.
	return []string{"-c", conf, "--releasever=1", "--noplugins"}
}

func run(t testing.TB, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// RunCmd runs a command and fails t when it fails; it returns stdout.
func RunCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	return run(t, "", name, args...)
}

func mustMk(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func isExec(p string) bool {
	d := filepath.Base(filepath.Dir(p))
	return d == "bin" || d == "sbin"
}
