package packaging

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge/service/servicetest"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
)

// booted is a Debian root with the hive packages installed and a real
// systemd running in it as PID 1 of its own namespaces.
type booted struct {
	*servicetest.Booted
}

// systemctl runs systemctl inside systemd's namespaces and root.
func (b booted) systemctl(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(b.PID), "-m", "-p", "-u", "-i", "-r", "-w",
		"/bin/systemctl"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (b booted) mustSystemctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := b.systemctl(args...)
	if err != nil {
		t.Fatalf("systemctl %s: %v\n%s\n%s", strings.Join(args, " "), err, out, b.status(args[len(args)-1]))
	}
	return out
}

// show returns a unit's properties.
func (b booted) show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out := b.mustSystemctl(t, "show", "-p", strings.Join(props, ","), unit)
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (b booted) status(unit string) string {
	out, _ := b.systemctl("status", "--no-pager", "-l", "-n", "30", unit)
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(b.PID), "-m", "-p", "-u", "-i", "-r", "-w",
		"/bin/journalctl", "--no-pager", "-n", "30", "-u", unit)
	j, _ := cmd.CombinedOutput()
	return out + "\njournal:\n" + string(j)
}

// proc is the path of /proc/PID/FILE of the booted system, seen through
// systemd's own root and mount namespace.
func (b booted) proc(pid, file string) string {
	return fmt.Sprintf("/proc/%d/root/proc/%s/%s", b.PID, pid, file)
}

// procStatus reads /proc/PID/status of a process of the booted system
// (PID as systemd sees it) through the root's /proc mount.
func (b booted) procStatus(t *testing.T, pid string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(b.proc(pid, "status"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// TestPackagesUnderSystemd installs the .deb packages, built from the real
// binaries, into a Debian root while a real systemd runs there, and checks
// what the units promise as systemd itself enforces it: the packages enable
// but never start a service; hive-coordinator, configured, starts as user
// hive under its hardening, reaches "active" and stops cleanly; hive-agent
// is skipped by its start rule until agent.yaml lists a join address, and
// then starts.
func TestPackagesUnderSystemd(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nsenter", "unshare")
	testenv.SkipShort(t)
	t0 := time.Now()
	step := func(what string) { t.Logf("%-28s %v", what, time.Since(t0).Round(time.Millisecond)) }
	bin := binaries(t)
	// Real binaries, deb only, uncompressed: compressing 80 MB under the
	// race detector takes minutes.
	cfg := DefaultConfig()
	cfg.Version, cfg.BinDir, cfg.Formats, cfg.Compression = "v1.0.0", bin, []string{"deb"}, "none"
	cfg.DeployDir = filepath.Join(repoRoot(t), "deploy")
	cfg.OutDir = t.TempDir()
	built, err := Build(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	arts := map[string]Artifact{}
	for _, a := range built {
		arts[a.Package+"."+a.Format] = a
	}
	step("binaries and packages")
	root := debroot.CopyWith(t, "systemd", "dbus")
	step("root copied")
	// systemd sets up the units' mount namespaces (ProtectSystem,
	// PrivateTmp, ...) only when its root is a mount point: bind the root
	// onto itself (undone before the directory is removed).
	if out, err := exec.Command("mount", "--bind", root, root).CombinedOutput(); err != nil {
		t.Fatalf("bind mount the root: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", root).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, out)
		}
	})
	b := booted{servicetest.BootSystemd(t, root)}
	step("systemd booted")

	debs := stagePackages(t, root, arts, "deb", "/var/tmp/pkgs")
	// dpkg runs in systemd's namespaces, as on a real machine: the
	// maintainer scripts see a running systemd.
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(b.PID), "-m", "-p", "-u", "-i", "-r", "-w",
		"dpkg", "-i"}, debs...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "DEBIAN_FRONTEND=noninteractive"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	step("packages installed")
	for _, u := range services {
		p := b.show(t, u, "UnitFileState", "ActiveState")
		if p["UnitFileState"] != "enabled" || p["ActiveState"] != "inactive" {
			t.Errorf("%s after install: %v, want enabled and inactive", u, p)
		}
	}

	// hive-coordinator, configured: one server on loopback ports the
	// kernel picks, TLS made with hivectl, readable by group hive.
	pki := pkiFiles(t, bin, "c1")
	tls := filepath.Join(root, "etc/hive/tls")
	hiveGID := groupID(t, root, "hive")
	for src, dst := range map[string]string{"ca.pem": "ca.pem", "c1.pem": "coordinator.pem", "c1-key.pem": "coordinator-key.pem"} {
		copyTo(t, filepath.Join(pki, src), filepath.Join(tls, dst), 0o640)
		if err := os.Chown(filepath.Join(tls, dst), 0, hiveGID); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(root, "etc/hive/coordinator.yaml")
	b2, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b2)
	for old, new := range map[string]string{
		"# name: c1": "name: c1", "grpc-addr: :7400": "grpc-addr: 127.0.0.1:0", "raft-addr: :7401": "raft-addr: 127.0.0.1:0",
		"gossip-addr: :7402": "gossip-addr: 127.0.0.1:0", "http-addr: :7403": "http-addr: 127.0.0.1:0", "bootstrap-expect: 3": "bootstrap-expect: 1",
	} {
		s = strings.Replace(s, old, new, 1)
	}
	if err := os.WriteFile(conf, []byte(s), 0o640); err != nil {
		t.Fatal(err)
	}

	// Type=notify: start returns once the coordinator sent READY=1.
	start := time.Now()
	b.mustSystemctl(t, "start", "hive-coordinator.service")
	p := b.show(t, "hive-coordinator.service", "ActiveState", "SubState", "MainPID", "Type", "NRestarts")
	if p["ActiveState"] != "active" || p["SubState"] != "running" || p["NRestarts"] != "0" {
		t.Fatalf("hive-coordinator after start: %v\n%s", p, b.status("hive-coordinator.service"))
	}
	t.Logf("hive-coordinator active (%s) after %v", p["Type"], time.Since(start).Round(time.Millisecond))
	ps := b.procStatus(t, p["MainPID"])
	uid := strings.Fields(ps["Uid"])
	if len(uid) == 0 || uid[0] != strconv.Itoa(userID(t, root, "hive")) {
		t.Errorf("hive-coordinator runs as uid %v, want the hive user", ps["Uid"])
	}
	if ps["NoNewPrivs"] != "1" || ps["CapEff"] != "0000000000000000" || ps["CapBnd"] != "0000000000000000" || ps["Seccomp"] != "2" {
		t.Errorf("hive-coordinator hardening not in effect: NoNewPrivs=%s CapEff=%s CapBnd=%s Seccomp=%s",
			ps["NoNewPrivs"], ps["CapEff"], ps["CapBnd"], ps["Seccomp"])
	}
	if st, err := os.Stat(filepath.Join(root, "var/lib/hive/coordinator/raft.db")); err != nil {
		t.Errorf("no raft.db in the state directory: %v", err)
	} else if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("raft.db mode %v: readable by others (UMask=0027)", st.Mode())
	}
	// The process sees a read-only file system outside its state directory.
	if mi, err := os.ReadFile(b.proc(p["MainPID"], "mountinfo")); err != nil {
		t.Error(err)
	} else if !strings.Contains(string(mi), " /usr ro,") && !strings.Contains(string(mi), " / ro,") {
		t.Errorf("ProtectSystem=strict not in effect: no read-only / or /usr in the coordinator's mounts")
	}
	b.mustSystemctl(t, "stop", "hive-coordinator.service")
	p = b.show(t, "hive-coordinator.service", "ActiveState", "Result")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Errorf("hive-coordinator after stop: %v, want inactive with result success", p)
	}

	step("coordinator checked")
	// hive-repo, configured as the packaged repo.yaml's comments say: a
	// signing key and an upload token readable by group hive.
	key := filepath.Join(root, "etc/hive/repo-signing.asc")
	run(t, filepath.Join(bin, "hive-repo"), "keygen", "--out", key)
	writeFile(t, filepath.Join(root, "etc/hive/repo-upload-token"), "token\n")
	for _, f := range []string{key, filepath.Join(root, "etc/hive/repo-upload-token")} {
		if err := os.Chown(f, 0, hiveGID); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	repoConf := filepath.Join(root, "etc/hive/repo.yaml")
	raw, err := os.ReadFile(repoConf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(repoConf, []byte(strings.Replace(string(raw), "addr: :7480", "addr: 127.0.0.1:0", 1)), 0o640); err != nil {
		t.Fatal(err)
	}
	b.mustSystemctl(t, "start", "hive-repo.service")
	time.Sleep(2 * time.Second) // Type=exec: give it time to fail, if it does
	p = b.show(t, "hive-repo.service", "ActiveState", "SubState", "MainPID", "NRestarts")
	if p["ActiveState"] != "active" || p["NRestarts"] != "0" {
		t.Fatalf("hive-repo after start: %v\n%s", p, b.status("hive-repo.service"))
	}
	ps = b.procStatus(t, p["MainPID"])
	if uid := strings.Fields(ps["Uid"]); len(uid) == 0 || uid[0] != strconv.Itoa(userID(t, root, "hive")) || ps["NoNewPrivs"] != "1" || ps["CapEff"] != "0000000000000000" {
		t.Errorf("hive-repo: Uid=%s NoNewPrivs=%s CapEff=%s, want the hive user without privileges", ps["Uid"], ps["NoNewPrivs"], ps["CapEff"])
	}
	b.mustSystemctl(t, "stop", "hive-repo.service")

	step("repo checked")
	// hive-agent: the packaged agent.yaml has no join address, so the unit
	// is skipped by its ExecCondition — not failed, not restarting.
	b.mustSystemctl(t, "start", "hive-agent.service")
	p = b.show(t, "hive-agent.service", "ActiveState", "Result", "NRestarts", "ExecMainPID")
	if p["ActiveState"] != "inactive" || p["Result"] != "exec-condition" || p["ExecMainPID"] != "0" {
		t.Errorf("unconfigured hive-agent: %v, want skipped (inactive, result exec-condition, never started)\n%s", p, b.status("hive-agent.service"))
	}
	// With a join address the start rule passes and the agent process runs
	// (it keeps joining; convergence is TestFirstBoot's business).
	agentConf := filepath.Join(root, "etc/hive/agent.yaml")
	raw, err = os.ReadFile(agentConf)
	if err != nil {
		t.Fatal(err)
	}
	raw = []byte(strings.Replace(string(raw), "join: []", "join: [127.0.0.1:1]\nname: web-7\ngossip-addr: 127.0.0.1:0", 1))
	if err := os.WriteFile(agentConf, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	b.mustSystemctl(t, "start", "--no-block", "hive-agent.service")
	deadline := time.Now().Add(20 * time.Second)
	for {
		p = b.show(t, "hive-agent.service", "ActiveState", "SubState", "ExecMainPID", "NRestarts")
		if p["ExecMainPID"] != "0" && p["NRestarts"] == "0" && (p["ActiveState"] == "activating" || p["ActiveState"] == "active") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("configured hive-agent did not start: %v\n%s", p, b.status("hive-agent.service"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.mustSystemctl(t, "stop", "hive-agent.service")
	step("agent checked")
}

func userID(t *testing.T, root, name string) int {
	t.Helper()
	for id, n := range names(t, filepath.Join(root, "etc/passwd")) {
		if n == name {
			return int(id)
		}
	}
	t.Fatalf("no user %s in %s", name, root)
	return 0
}

func groupID(t *testing.T, root, name string) int {
	t.Helper()
	for id, n := range names(t, filepath.Join(root, "etc/group")) {
		if n == name {
			return int(id)
		}
	}
	t.Fatalf("no group %s in %s", name, root)
	return 0
}

// TestImageProvision runs deploy/image/provision.sh, the script Packer runs
// on the build instance, in a Debian root with systemd and cloud-init
// running as on that instance, with the real hive-agent package: it must
// succeed, leave the agent enabled and stopped, and leave nothing
// instance-specific behind (machine ID, SSH host keys, agent state,
// certificates, cloud-init's record of the boot).
func TestImageProvision(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "nsenter", "unshare")
	testenv.SkipShort(t)
	bin := binaries(t)
	cfg := DefaultConfig()
	cfg.Version, cfg.BinDir, cfg.Formats, cfg.Compression = "v1.0.0", bin, []string{"deb"}, "none"
	cfg.Packages = []string{"hive-agent"}
	cfg.DeployDir = filepath.Join(repoRoot(t), "deploy")
	cfg.OutDir = t.TempDir()
	built, err := Build(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	root := debroot.CopyWith(t, "systemd", "dbus", "cloud-init")
	if out, err := exec.Command("mount", "--bind", root, root).CombinedOutput(); err != nil {
		t.Fatalf("bind mount the root: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", root).Run() }) //nolint:errcheck
	if err := copyFile("/etc/resolv.conf", filepath.Join(root, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	// What a previous boot of the build instance leaves: a machine ID, SSH
	// host keys, and (had an agent ever run) state and certificates.
	writeFile(t, filepath.Join(root, "etc/machine-id"), "0123456789abcdef0123456789abcdef\n")
	if err := os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "etc/ssh/ssh_host_ed25519_key"), "key")
	b := booted{servicetest.BootSystemd(t, root)}

	pkg := "/var/tmp/" + filepath.Base(built[0].Path)
	copyTo(t, built[0].Path, filepath.Join(root, pkg), 0o644)
	copyTo(t, filepath.Join(repoRoot(t), "deploy/image/provision.sh"), filepath.Join(root, "var/tmp/provision.sh"), 0o755)
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(b.PID), "-m", "-p", "-u", "-i", "-r", "-w",
		"/usr/bin/env", "HIVE_AGENT_PACKAGE="+pkg, "HIVE_OS_FAMILY=debian", "/var/tmp/provision.sh")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("provision.sh: %v\n%s", err, out)
	}

	p := b.show(t, "hive-agent.service", "UnitFileState", "ActiveState")
	if p["UnitFileState"] != "enabled" || p["ActiveState"] != "inactive" {
		t.Errorf("hive-agent after provisioning: %v, want enabled and inactive", p)
	}
	if st, err := os.Stat(filepath.Join(root, "etc/machine-id")); err != nil {
		t.Error(err)
	} else if st.Size() != 0 {
		t.Errorf("/etc/machine-id not emptied (%d bytes): every instance of the image would share it", st.Size())
	}
	for _, p := range []string{"etc/ssh/ssh_host_ed25519_key", pkg} {
		if exists(root, "/"+p) {
			t.Errorf("%s left in the image", p)
		}
	}
	for _, d := range []string{"var/lib/hive/agent", "etc/hive/tls"} {
		if ents, err := os.ReadDir(filepath.Join(root, d)); err != nil || len(ents) != 0 {
			t.Errorf("%s in the image: %v %v", d, ents, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "var/lib/cloud/instances")); len(ents) != 0 {
		t.Errorf("cloud-init's instance records left in the image: %v", ents)
	}
}
