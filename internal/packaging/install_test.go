package packaging

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

var services = []string{"hive-agent.service", "hive-coordinator.service", "hive-repo.service"}

var systemdRoot struct {
	once sync.Once
	dir  string
	err  error
}

// bootRoot returns a private copy of the cached Debian root with systemd
// installed (from the Debian mirror), as on a real server or image: the
// maintainer scripts' systemctl enable/disable and systemd-analyze verify
// then run for real. The systemd root is built once per test binary.
func bootRoot(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.SkipShort(t)
	base := debroot.Shared(t)
	systemdRoot.once.Do(func() {
		dir, err := os.MkdirTemp("", "hive-packaging-root-")
		if err != nil {
			systemdRoot.err = err
			return
		}
		systemdRoot.dir = filepath.Join(dir, "root")
		if out, err := exec.Command("cp", "-a", "--reflink=auto", base, systemdRoot.dir).CombinedOutput(); err != nil {
			systemdRoot.err = fmt.Errorf("copy root: %v: %s", err, out)
			return
		}
		if err := copyFile("/etc/resolv.conf", filepath.Join(systemdRoot.dir, "etc/resolv.conf")); err != nil {
			systemdRoot.err = err
			return
		}
		for _, args := range [][]string{
			{"apt-get", "update", "-qq"},
			{"apt-get", "install", "-y", "-qq", "--no-install-recommends", "systemd"},
		} {
			cmd := exec.Command("chroot", append([]string{systemdRoot.dir}, args...)...)
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			if out, err := cmd.CombinedOutput(); err != nil {
				systemdRoot.err = fmt.Errorf("chroot %s: %v: %s", strings.Join(args, " "), err, out)
				return
			}
		}
	})
	if systemdRoot.err != nil {
		t.Fatalf("systemd root: %v", systemdRoot.err)
	}
	dst := filepath.Join(t.TempDir(), "root")
	if out, err := exec.Command("cp", "-a", "--reflink=auto", systemdRoot.dir, dst).CombinedOutput(); err != nil {
		t.Fatalf("copy systemd root: %v: %s", err, out)
	}
	return dst
}

func TestMain(m *testing.M) {
	code := m.Run()
	if systemdRoot.dir != "" {
		os.RemoveAll(filepath.Dir(systemdRoot.dir))
	}
	netlab.CleanupBuilds()
	os.Exit(code)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// inRoot runs a command chrooted into root with stdin closed, so that a
// package manager prompt fails the test instead of hanging it.
func inRoot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := chroot(root, args...)
	if err != nil {
		t.Fatalf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func chroot(root string, args ...string) (string, error) {
	cmd := exec.Command("chroot", append([]string{root}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C", "DEBIAN_FRONTEND=noninteractive"}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// names maps the numeric ids of a root's passwd or group file to names.
func names(t *testing.T, file string) map[uint32]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[uint32]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 3 {
			continue
		}
		id, err := strconv.ParseUint(f[2], 10, 32)
		if err == nil {
			out[uint32(id)] = f[0]
		}
	}
	return out
}

// checkInstalled checks every layout entry of pkgs is on disk in root with
// its documented mode and owner.
func checkInstalled(t *testing.T, root string, pkgs ...string) {
	t.Helper()
	users := names(t, filepath.Join(root, "etc/passwd"))
	groups := names(t, filepath.Join(root, "etc/group"))
	for _, pkg := range pkgs {
		for _, e := range layoutOf(pkg) {
			st, err := os.Lstat(filepath.Join(root, e.path))
			if err != nil {
				t.Errorf("%s: %v", pkg, err)
				continue
			}
			sys := st.Sys().(*syscall.Stat_t)
			got := entry{pkg, e.path, permString(st.Mode()), users[sys.Uid], groups[sys.Gid], e.config}
			if got != e {
				t.Errorf("installed %s:\n got %v\nwant %v", e.path, got, e)
			}
		}
	}
}

// permString renders a mode like ls -l and rpm's %{FILEMODES:perms}.
func permString(m fs.FileMode) string {
	s := []byte("----------")
	if m.IsDir() {
		s[0] = 'd'
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if m&(1<<uint(8-i)) != 0 {
			s[i+1] = rwx[i]
		}
	}
	return string(s)
}

func exists(root, p string) bool {
	_, err := os.Lstat(filepath.Join(root, p))
	return err == nil
}

func isEnabled(t *testing.T, root, unit string) bool {
	t.Helper()
	out, _ := chroot(root, "systemctl", "is-enabled", unit)
	return strings.TrimSpace(out) == "enabled"
}

// checkHiveUser checks the hive system user the preinst creates.
func checkHiveUser(t *testing.T, root string) {
	t.Helper()
	f := strings.Split(strings.TrimSpace(inRoot(t, root, "getent", "passwd", "hive")), ":")
	if len(f) != 7 {
		t.Fatalf("getent passwd hive: %v", f)
	}
	uid, _ := strconv.Atoi(f[2])
	if uid == 0 || uid >= 1000 || f[5] != "/var/lib/hive" || f[6] != "/usr/sbin/nologin" {
		t.Errorf("hive user = %v, want a system user (uid < 1000) with home /var/lib/hive and shell /usr/sbin/nologin", f)
	}
}

func stagePackages(t *testing.T, root string, arts map[string]Artifact, format, dir string) []string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, s := range Packages {
		a := arts[s.Name+"."+format]
		dst := filepath.Join(dir, filepath.Base(a.Path))
		b, err := os.ReadFile(a.Path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, dst)
	}
	return paths
}

// TestDebInstallUpgradeRemove installs the four .deb packages with the real
// dpkg into a Debian root with systemd, and walks them through upgrade,
// remove, reinstall and purge, checking at each step what
// docs/operations.md promises.
func TestDebInstallUpgradeRemove(t *testing.T) {
	root := bootRoot(t)
	bins := fakeBins(t)
	v1 := buildPackages(t, bins, "v1.0.0")
	v2 := buildPackages(t, bins, "v1.0.1")

	debs := stagePackages(t, root, v1, "deb", "/tmp/v1")
	inRoot(t, root, append([]string{"dpkg", "-i"}, debs...)...)

	// Files land where documented, owned as documented.
	checkInstalled(t, root, "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	checkHiveUser(t, root)
	// Enabled, never started: nothing runs in a chroot, and the agent's
	// start rule says its default configuration is not enough to start.
	for _, u := range services {
		if !isEnabled(t, root, u) {
			t.Errorf("%s not enabled after install", u)
		}
	}
	if out, err := chroot(root, "/usr/lib/hive/agent-configured", "/etc/hive/agent.yaml"); err == nil {
		t.Errorf("default agent.yaml counts as configured: %s", out)
	}
	// The unit files, as installed, pass systemd-analyze verify with the
	// binaries at their ExecStart paths.
	for _, u := range services {
		out, err := chroot(root, "systemd-analyze", "verify", "/usr/lib/systemd/system/"+u)
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}

	// Hardening of the services that need no privileges stays at
	// systemd's "OK" exposure (1.6 when written): --threshold is in tenths.
	for _, u := range []string{"hive-coordinator.service", "hive-repo.service"} {
		out, err := chroot(root, "systemd-analyze", "security", "--offline=yes", "--threshold=20", "/usr/lib/systemd/system/"+u)
		if err != nil {
			t.Errorf("systemd-analyze security %s: exposure above 2.0 (%v)\n%s", u, err, out)
		}
	}

	// The operator edits configuration and the services write data.
	appendTo(t, filepath.Join(root, "etc/hive/coordinator.yaml"), "# edited by the operator\n")
	appendTo(t, filepath.Join(root, "etc/hive/agent.yaml"), "# edited by the operator\n")
	writeFile(t, filepath.Join(root, "var/lib/hive/coordinator/raft.db"), "raft log")
	writeFile(t, filepath.Join(root, "var/lib/hive/repo/blob"), "package")
	writeFile(t, filepath.Join(root, "var/lib/hive/agent/state.pb"), "state")
	// An operator who disabled the repo server keeps it disabled on upgrade.
	inRoot(t, root, "systemctl", "disable", "hive-repo.service")

	// Upgrade: no conffile prompt (stdin is closed), edits kept, enablement
	// kept as the operator left it.
	debs = stagePackages(t, root, v2, "deb", "/tmp/v2")
	inRoot(t, root, append([]string{"dpkg", "-i"}, debs...)...)
	if v := inRoot(t, root, "dpkg-query", "-W", "-f=${Version}", "hive-coordinator"); v != "1.0.1-1" {
		t.Errorf("after upgrade hive-coordinator is %q, want 1.0.1-1", v)
	}
	checkInstalled(t, root, "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	mustContain(t, filepath.Join(root, "etc/hive/coordinator.yaml"), "edited by the operator")
	if !isEnabled(t, root, "hive-coordinator.service") || isEnabled(t, root, "hive-repo.service") {
		t.Error("upgrade changed which services are enabled")
	}

	// Remove: programs and units go, configuration and data stay, services
	// are disabled.
	inRoot(t, root, "dpkg", "-r", "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	for _, p := range []string{"/usr/bin/hive-agent", "/usr/bin/hivectl", "/usr/lib/systemd/system/hive-coordinator.service", "/usr/lib/hive/agent-configured"} {
		if exists(root, p) {
			t.Errorf("%s left after dpkg -r", p)
		}
	}
	for _, p := range []string{"/etc/hive/agent.yaml", "/etc/hive/coordinator.yaml", "/etc/hive/repo.yaml",
		"/var/lib/hive/coordinator/raft.db", "/var/lib/hive/repo/blob", "/var/lib/hive/agent/state.pb"} {
		if !exists(root, p) {
			t.Errorf("%s removed by dpkg -r", p)
		}
	}
	if links, _ := filepath.Glob(filepath.Join(root, "etc/systemd/system/*.wants/hive-*")); len(links) != 0 {
		t.Errorf("enablement links left after remove: %v", links)
	}

	// Reinstall after remove: enabled again like a first install.
	inRoot(t, root, append([]string{"dpkg", "-i"}, debs...)...)
	for _, u := range services {
		if !isEnabled(t, root, u) {
			t.Errorf("%s not enabled after reinstall", u)
		}
	}
	mustContain(t, filepath.Join(root, "etc/hive/coordinator.yaml"), "edited by the operator")

	// Purge: configuration goes, data and the hive user stay.
	inRoot(t, root, "dpkg", "--purge", "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	for _, p := range []string{"/etc/hive/agent.yaml", "/etc/hive/coordinator.yaml", "/etc/hive/repo.yaml"} {
		if exists(root, p) {
			t.Errorf("%s left after purge", p)
		}
	}
	for _, p := range []string{"/var/lib/hive/coordinator/raft.db", "/var/lib/hive/repo/blob", "/var/lib/hive/agent/state.pb"} {
		if !exists(root, p) {
			t.Errorf("%s removed by purge: data must stay", p)
		}
	}
	checkHiveUser(t, root)
}

// TestRPMInstallUpgradeRemove installs the .rpm packages with the real dnf
// (--installroot, from a createrepo_c repository, as a fleet would) into
// the same kind of root, upgrades with dnf and erases with rpm --root.
func TestRPMInstallUpgradeRemove(t *testing.T) {
	testenv.RequireTool(t, "dnf", "rpm", "createrepo_c")
	root := bootRoot(t)
	bins := fakeBins(t)
	v1 := buildPackages(t, bins, "v1.0.0")
	v2 := buildPackages(t, bins, "v1.0.1")

	tmp := t.TempDir()
	repo := filepath.Join(tmp, "repo")
	publish := func(arts map[string]Artifact) {
		t.Helper()
		if err := os.MkdirAll(repo, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range Packages {
			a := arts[s.Name+".rpm"]
			b, err := os.ReadFile(a.Path)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(repo, filepath.Base(a.Path)), string(b))
		}
		run(t, "createrepo_c", "--quiet", "--no-database", "--update", repo)
	}
	conf := filepath.Join(tmp, "dnf.conf")
	writeFile(t, conf, fmt.Sprintf(`[main]
skip_if_unavailable=0
reposdir=%[1]s/none
cachedir=%[1]s/cache
persistdir=%[1]s/persist
logdir=%[1]s/log
gpgcheck=0
install_weak_deps=0
metadata_expire=0

[hive]
name=hive
baseurl=file://%[2]s
gpgcheck=0
`, tmp, repo))
	dnf := func(args ...string) {
		t.Helper()
		// A fresh metadata cache per call: repomd.xml written twice within
		// a second can look unchanged to dnf's cache check.
		cmd := exec.Command("dnf", append([]string{"-c", conf, "--installroot=" + root, "--releasever=1", "--noplugins", "-y",
			"--setopt=cachedir=" + t.TempDir()}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dnf %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rpmq := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("rpm", append([]string{"--root=" + root}, args...)...)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("rpm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	publish(v1)
	dnf("install", "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	checkInstalled(t, root, "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	checkHiveUser(t, root)
	for _, u := range services {
		if !isEnabled(t, root, u) {
			t.Errorf("%s not enabled after dnf install", u)
		}
	}
	if got := strings.Fields(rpmq("-qc", "hive-agent", "hive-coordinator", "hive-repo")); strings.Join(got, " ") != "/etc/hive/agent.yaml /etc/hive/coordinator.yaml /etc/hive/repo.yaml" {
		t.Errorf("rpm -qc = %v", got)
	}

	appendTo(t, filepath.Join(root, "etc/hive/coordinator.yaml"), "# edited by the operator\n")
	writeFile(t, filepath.Join(root, "var/lib/hive/coordinator/raft.db"), "raft log")
	writeFile(t, filepath.Join(root, "var/lib/hive/agent/state.pb"), "state")

	// Upgrade: %config(noreplace) keeps the edit in place (no .rpmnew for
	// an unchanged default), services stay enabled.
	publish(v2)
	dnf("upgrade")
	if v := rpmq("-q", "--qf", "%{VERSION}-%{RELEASE}", "hive-coordinator"); v != "1.0.1-1" {
		t.Errorf("after upgrade hive-coordinator is %q, want 1.0.1-1", v)
	}
	mustContain(t, filepath.Join(root, "etc/hive/coordinator.yaml"), "edited by the operator")
	for _, u := range services {
		if !isEnabled(t, root, u) {
			t.Errorf("%s not enabled after upgrade", u)
		}
	}

	// Erase: an edited config is kept as .rpmsave, an unedited one goes;
	// data and the hive user stay; services are disabled.
	rpmq("-e", "hive-agent", "hive-coordinator", "hive-repo", "hivectl")
	if !exists(root, "/etc/hive/coordinator.yaml.rpmsave") {
		t.Error("edited coordinator.yaml not saved as .rpmsave on erase")
	}
	for _, p := range []string{"/etc/hive/agent.yaml", "/etc/hive/repo.yaml", "/usr/bin/hive-coordinator", "/usr/lib/systemd/system/hive-agent.service"} {
		if exists(root, p) {
			t.Errorf("%s left after rpm -e", p)
		}
	}
	for _, p := range []string{"/var/lib/hive/coordinator/raft.db", "/var/lib/hive/agent/state.pb"} {
		if !exists(root, p) {
			t.Errorf("%s removed by rpm -e: data must stay", p)
		}
	}
	if links, _ := filepath.Glob(filepath.Join(root, "etc/systemd/system/*.wants/hive-*")); len(links) != 0 {
		t.Errorf("enablement links left after erase: %v", links)
	}
	checkHiveUser(t, root)
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, p, s string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func mustContain(t *testing.T, p, s string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), s) {
		t.Errorf("%s lost %q", p, s)
	}
}

func copyTo(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
