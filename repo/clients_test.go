package repo_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo/repotest"
)

// TestDnfInstall: Debian's dnf, with gpgcheck and repo_gpgcheck on, lists
// and installs from /yum/<repo>.
func TestDnfInstall(t *testing.T) {
	dnf := testenv.RequireTool(t, "dnf", "rpm")
	e := start(t, nil)
	e.upload("site", "hello-1.0-1.noarch.rpm", rpmPkg(t, "hello", "1.0", true))
	e.upload("site", "other-2.0-1.noarch.rpm", rpmPkg(t, "other", "2.0", true))
	e.reindex("site")

	c := repotest.NewDnf(t, dnf, t.TempDir(), "hive-site", e.url+"/yum/site/", e.url+"/keys/site.asc")
	ctx := repotest.Ctx(t, 3*time.Minute)
	out, err := c.Run(ctx, "list", "available")
	if err != nil {
		t.Fatalf("dnf list: %v\n%s", err, out)
	}
	for _, p := range []string{"hello.noarch", "other.noarch"} {
		if !strings.Contains(out, p) {
			t.Errorf("dnf list lacks %s:\n%s", p, out)
		}
	}
	out, err = c.Run(ctx, "install", "hello")
	if err != nil {
		t.Fatalf("dnf install: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(c.Root, "usr/share/hive-test/hello.txt")); err != nil {
		t.Errorf("installed file missing: %v\n%s", err, out)
	}

	// A new version published later is seen and upgraded to.
	e.upload("site", "hello-1.1-1.noarch.rpm", rpmPkg(t, "hello", "1.1", true))
	e.reindex("site")
	out, err = c.Run(ctx, "--refresh", "upgrade", "hello")
	if err != nil || !strings.Contains(out, "1.1-1") {
		t.Fatalf("dnf upgrade: %v\n%s", err, out)
	}
}

// TestDnfRefusesUnsignedPackage: gpgcheck is real: an unsigned package
// in the repository is refused by dnf.
func TestDnfRefusesUnsignedPackage(t *testing.T) {
	dnf := testenv.RequireTool(t, "dnf", "rpm")
	e := start(t, nil)
	e.upload("site", "bare-1.0-1.noarch.rpm", rpmPkg(t, "bare", "1.0", false))
	e.reindex("site")
	c := repotest.NewDnf(t, dnf, t.TempDir(), "hive-site", e.url+"/yum/site/", e.url+"/keys/site.asc")
	out, err := c.Run(repotest.Ctx(t, 3*time.Minute), "install", "bare")
	if err == nil {
		t.Fatalf("dnf installed an unsigned package with gpgcheck=1:\n%s", out)
	}
	if !strings.Contains(out, "not signed") && !strings.Contains(out, "GPG") {
		t.Errorf("dnf failed for another reason than the missing signature:\n%s", out)
	}
}

// TestAptClient: apt-get update with Signed-By the repo key, no warnings,
// then the package is fetched and verified by apt.
func TestAptClient(t *testing.T) {
	aptGet := testenv.RequireTool(t, "apt-get", "gpgv")
	e := start(t, nil)
	e.upload("site", "tool_2.0_all.deb", debPkg(t, "tool", "2.0", "xz"))
	e.upload("site", "zed_1.0_all.deb", debPkg(t, "zed", "1.0", "zst"))
	e.reindex("site")

	dir := t.TempDir()
	key := filepath.Join(dir, "site.asc")
	os.WriteFile(key, e.get("/keys/site.asc"), 0o644)
	a := repotest.NewApt(t, dir, "deb [signed-by="+key+"] "+e.url+"/apt/site stable main")
	ctx := repotest.Ctx(t, 2*time.Minute)
	out, err := a.Run(ctx, aptGet, "update")
	if err != nil || len(repotest.Warnings(out)) > 0 {
		t.Fatalf("apt-get update: %v\n%s", err, out)
	}
	out, err = a.Run(ctx, aptGet, "download", "tool", "zed")
	if err != nil || len(repotest.Warnings(out)) > 0 {
		t.Fatalf("apt-get download: %v\n%s", err, out)
	}
	for _, f := range []string{"tool_2.0_all.deb", "zed_1.0_all.deb"} {
		if _, err := os.Stat(filepath.Join(dir, "dl", f)); err != nil {
			t.Errorf("%s not downloaded: %v", f, err)
		}
	}
	// A second update after a new publish uses by-hash and stays clean.
	e.upload("site", "tool_2.1_all.deb", debPkg(t, "tool", "2.1", "gz"))
	e.reindex("site")
	out, err = a.Run(ctx, aptGet, "update")
	if err != nil || len(repotest.Warnings(out)) > 0 {
		t.Fatalf("apt-get update 2: %v\n%s", err, out)
	}
	out, err = a.Run(ctx, aptGet, "install", "--print-uris", "-qq", "tool")
	if err != nil || !strings.Contains(out, "tool_2.1_all.deb") {
		t.Fatalf("apt-get install --print-uris: %v\n%s", err, out)
	}

	// A wrong key is refused.
	other := filepath.Join(dir, "other.asc")
	os.WriteFile(other, []byte(strings.Repeat("x", 10)), 0o644)
	b := repotest.NewApt(t, t.TempDir(), "deb [signed-by="+other+"] "+e.url+"/apt/site stable main")
	out, _ = b.Run(ctx, aptGet, "update")
	if len(repotest.Warnings(out)) == 0 {
		t.Errorf("apt-get update with a wrong key gave no warning:\n%s", out)
	}
}

// TestAptInstallIntoDebianRoot: in a private Debian root, apt-get update
// with Signed-By the repo key, then apt-get install from /apt/<repo>, with
// no warnings about signatures or hashes.
func TestAptInstallIntoDebianRoot(t *testing.T) {
	testenv.RequireTool(t, "chroot")
	root := debroot.Copy(t)
	e := start(t, nil)
	e.upload("site", "hive-hello_1.0_all.deb", debPkg(t, "hive-hello", "1.0", "zst"))
	e.upload("site", "hive-other_1.0_all.deb", debPkg(t, "hive-other", "1.0", "xz"))
	e.reindex("site")

	if err := os.Remove(filepath.Join(root, "etc/apt/sources.list")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(root, "etc/apt/keyrings"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "etc/apt/keyrings/hive.asc"), e.get("/keys/site.asc"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "Types: deb\nURIs: " + e.url + "/apt/site\nSuites: stable\nComponents: main\nSigned-By: /etc/apt/keyrings/hive.asc\n"
	if err := os.WriteFile(filepath.Join(root, "etc/apt/sources.list.d/hive.sources"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := repotest.Ctx(t, 3*time.Minute)
	for _, args := range [][]string{{"apt-get", "update"}, {"apt-get", "-o", "Dpkg::Use-Pty=0", "install", "-y", "hive-hello"}} {
		cmd := exec.CommandContext(ctx, "chroot", append([]string{root}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"}
		out, err := cmd.CombinedOutput()
		if err != nil || len(repotest.Warnings(string(out))) > 0 {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "usr/share/hive-test/hive-hello.txt")); err != nil || string(b) != "hive-hello 1.0\n" {
		t.Errorf("installed file: %q %v", b, err)
	}
	out, err := exec.Command("chroot", root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "hive-hello").CombinedOutput()
	if err != nil || string(out) != "install ok installed 1.0" {
		t.Errorf("dpkg-query: %q %v", out, err)
	}
}
