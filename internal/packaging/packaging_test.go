package packaging

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
)

// repoRoot is the repository root, two levels up from this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// fakeBins writes small executable stand-ins for the four binaries; the
// package layout does not depend on what they contain.
func fakeBins(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, s := range Packages {
		script := "#!/bin/sh\necho " + s.Binary + " stand-in\n"
		if err := os.WriteFile(filepath.Join(dir, s.Binary), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// buildPackages builds every package from binDir at version into a new
// directory and returns the artifacts by "name.format".
func buildPackages(t testing.TB, binDir, version string) map[string]Artifact {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Version = version
	cfg.BinDir = binDir
	cfg.DeployDir = filepath.Join(repoRoot(t), "deploy")
	cfg.OutDir = t.TempDir()
	cfg.MTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	arts, err := Build(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	out := map[string]Artifact{}
	for _, a := range arts {
		out[a.Package+"."+a.Format] = a
	}
	if len(out) != len(Packages)*len(Formats) {
		t.Fatalf("Build wrote %d packages, want %d: %v", len(out), len(Packages)*len(Formats), arts)
	}
	return out
}

func TestPackageVersion(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		version, pre, meta string
		deb, rpm           string
		wantErr            bool
	}{
		{in: "v1.2.3", version: "1.2.3", deb: "1.2.3-1", rpm: "1.2.3-1"},
		{in: "1.2.3", version: "1.2.3", deb: "1.2.3-1", rpm: "1.2.3-1"},
		{in: "v1.2.3-rc.1", version: "1.2.3", pre: "rc.1", deb: "1.2.3~rc.1-1", rpm: "1.2.3~rc.1-1"},
		{in: "v1.2.3-4-gabcdef0", version: "1.2.3", meta: "git4.abcdef0", deb: "1.2.3+git4.abcdef0-1", rpm: "1.2.3+git4.abcdef0-1"},
		{in: "v1.2.3-rc.1-4-gabcdef0-dirty", version: "1.2.3", pre: "rc.1", meta: "git4.abcdef0.dirty"},
		{in: "974c809", version: "0.0.0", pre: "git.974c809"},
		{in: "974c809-dirty", version: "0.0.0", pre: "git.974c809.dirty"},
		{in: "dev", version: "0.0.0", pre: "dev"},
		{in: "", wantErr: true},
		{in: "v1.2", wantErr: true},
		{in: "v1.2.3-rc_1", wantErr: true},
		{in: "release candidate", wantErr: true},
	} {
		v, pre, meta, err := PackageVersion(tc.in)
		if tc.wantErr {
			if err == nil {
				t.Errorf("PackageVersion(%q) = %q %q %q, want an error", tc.in, v, pre, meta)
			}
			continue
		}
		if err != nil || v != tc.version || pre != tc.pre || meta != tc.meta {
			t.Errorf("PackageVersion(%q) = %q %q %q %v, want %q %q %q", tc.in, v, pre, meta, err, tc.version, tc.pre, tc.meta)
		}
	}
}

// TestVersionOrder checks with dpkg's own comparison that the versions
// PackageVersion makes sort the way releases follow each other.
func TestVersionOrder(t *testing.T) {
	testenv.RequireTool(t, "dpkg", "rpm")
	// Each version is older than the next.
	order := []string{"dev", "974c809", "v0.9.0", "v1.0.0-rc.1", "v1.0.0-rc.1-3-gabcdef0", "v1.0.0-rc.2", "v1.0.0", "v1.0.0-2-gabcdef0", "v1.0.0-10-g0123456-dirty", "v1.0.1"}
	full := func(v string) string {
		ver, pre, meta, err := PackageVersion(v)
		if err != nil {
			t.Fatal(err)
		}
		if pre != "" {
			ver += "~" + pre
		}
		if meta != "" {
			ver += "+" + meta
		}
		return ver + "-1"
	}
	for i := 0; i+1 < len(order); i++ {
		a, b := full(order[i]), full(order[i+1])
		if err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run(); err != nil {
			t.Errorf("dpkg: %s (%s) is not older than %s (%s)", a, order[i], b, order[i+1])
		}
		got := strings.TrimSpace(run(t, "rpm", "--eval", `%{lua: print(rpm.vercmp("`+a+`", "`+b+`"))}`))
		if got != "-1" {
			t.Errorf("rpm: vercmp(%s, %s) = %s, want -1", a, b, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	if err := good.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"version":  func(c *Config) { c.Version = "latest" },
		"arch":     func(c *Config) { c.Arch = "x86_64" },
		"format":   func(c *Config) { c.Formats = []string{"apk"} },
		"noformat": func(c *Config) { c.Formats = nil },
		"package":  func(c *Config) { c.Packages = []string{"hive-web"} },
		"bindir":   func(c *Config) { c.BinDir = "" },
		"rpmnone":  func(c *Config) { c.Compression = "none" },
		"bzip2":    func(c *Config) { c.Compression = "bzip2" },
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", name)
		}
	}
}

func TestBuildFailsOnMissingSource(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BinDir = t.TempDir() // empty: no binaries
	cfg.DeployDir = filepath.Join(repoRoot(t), "deploy")
	cfg.OutDir = t.TempDir()
	_, err := Build(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "hive-agent") {
		t.Fatalf("Build without binaries = %v, want an error naming hive-agent", err)
	}
	if ents, _ := os.ReadDir(cfg.OutDir); len(ents) != 0 {
		t.Fatalf("Build without binaries wrote %d files", len(ents))
	}
}

// entry is one file or directory of a package as installed.
type entry struct {
	pkg, path, perms, owner, group string
	config                         bool
}

// layout is the documented install layout (docs/operations.md, "Packages
// and services").
var layout = []entry{
	{"hive-agent", "/usr/bin/hive-agent", "-rwxr-xr-x", "root", "root", false},
	{"hive-agent", "/usr/lib/systemd/system/hive-agent.service", "-rw-r--r--", "root", "root", false},
	{"hive-agent", "/usr/lib/hive/agent-configured", "-rwxr-xr-x", "root", "root", false},
	{"hive-agent", "/usr/lib/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-agent", "/usr/share/doc/hive-agent/examples/cloud-init.yaml", "-rw-r--r--", "root", "root", false},
	{"hive-agent", "/etc/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-agent", "/etc/hive/tls", "drwxr-xr-x", "root", "root", false},
	{"hive-agent", "/etc/hive/agent.yaml", "-rw-r--r--", "root", "root", true},
	{"hive-agent", "/var/lib/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-agent", "/var/lib/hive/agent", "drwx------", "root", "root", false},

	{"hive-coordinator", "/usr/bin/hive-coordinator", "-rwxr-xr-x", "root", "root", false},
	{"hive-coordinator", "/usr/lib/systemd/system/hive-coordinator.service", "-rw-r--r--", "root", "root", false},
	{"hive-coordinator", "/usr/lib/sysusers.d/hive-coordinator.conf", "-rw-r--r--", "root", "root", false},
	{"hive-coordinator", "/etc/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-coordinator", "/etc/hive/tls", "drwxr-xr-x", "root", "root", false},
	{"hive-coordinator", "/etc/hive/coordinator.yaml", "-rw-r-----", "root", "hive", true},
	{"hive-coordinator", "/var/lib/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-coordinator", "/var/lib/hive/coordinator", "drwxr-x---", "hive", "hive", false},

	{"hive-repo", "/usr/bin/hive-repo", "-rwxr-xr-x", "root", "root", false},
	{"hive-repo", "/usr/lib/systemd/system/hive-repo.service", "-rw-r--r--", "root", "root", false},
	{"hive-repo", "/usr/lib/sysusers.d/hive-repo.conf", "-rw-r--r--", "root", "root", false},
	{"hive-repo", "/etc/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-repo", "/etc/hive/tls", "drwxr-xr-x", "root", "root", false},
	{"hive-repo", "/etc/hive/repo.yaml", "-rw-r-----", "root", "hive", true},
	{"hive-repo", "/var/lib/hive", "drwxr-xr-x", "root", "root", false},
	{"hive-repo", "/var/lib/hive/repo", "drwxr-x---", "hive", "hive", false},

	{"hivectl", "/usr/bin/hivectl", "-rwxr-xr-x", "root", "root", false},
}

// layoutOf returns the layout entries of pkg, sorted by path.
func layoutOf(pkg string) []entry {
	var out []entry
	for _, e := range layout {
		if e.pkg == pkg {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

// parentDirs are directories dpkg archives carry as implicit parents; they
// belong to the base system, not to hive.
var parentDirs = []string{"/etc", "/usr", "/usr/bin", "/usr/lib", "/usr/lib/systemd", "/usr/lib/systemd/system",
	"/usr/lib/sysusers.d", "/usr/share", "/usr/share/doc", "/usr/share/doc/hive-agent",
	"/usr/share/doc/hive-agent/examples", "/var", "/var/lib"}

// TestPackageLayout reads every built package with the real dpkg-deb and
// rpm and compares its files, modes, owners and config marks with the
// documented layout.
func TestPackageLayout(t *testing.T) {
	testenv.RequireTool(t, "dpkg-deb", "rpm")
	arts := buildPackages(t, fakeBins(t), "v1.2.3")
	for _, s := range Packages {
		want := layoutOf(s.Name)

		deb := arts[s.Name+".deb"].Path
		out := run(t, "dpkg-deb", "--contents", deb)
		var got []entry
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			// drwxr-xr-x root/root 0 2026-01-02 03:04 ./etc/hive/
			f := strings.Fields(line)
			if len(f) < 6 {
				t.Fatalf("%s: unexpected dpkg-deb line %q", deb, line)
			}
			p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
			if slices.Contains(parentDirs, p) {
				continue
			}
			og := strings.SplitN(f[1], "/", 2)
			got = append(got, entry{s.Name, p, f[0], og[0], og[1], false})
		}
		conffiles := map[string]bool{}
		if s.Config != "" {
			for _, c := range strings.Fields(run(t, "dpkg-deb", "--info", deb, "conffiles")) {
				conffiles[c] = true
			}
		}
		for i := range got {
			got[i].config = conffiles[got[i].path]
		}
		compareLayout(t, deb, got, want)

		rpmFile := arts[s.Name+".rpm"].Path
		out = run(t, "rpm", "-qp", "--qf", `[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILEFLAGS:fflags}. %{FILENAMES}\n]`, rpmFile)
		got = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) != 5 {
				t.Fatalf("%s: unexpected rpm line %q", rpmFile, line)
			}
			got = append(got, entry{s.Name, f[4], f[0], f[1], f[2], strings.Contains(f[3], "c")})
			if strings.Contains(f[3], "c") && !strings.Contains(f[3], "n") {
				t.Errorf("%s: %s is %%config without noreplace", rpmFile, f[4])
			}
		}
		compareLayout(t, rpmFile, got, want)
	}
}

func compareLayout(t *testing.T, pkg string, got, want []entry) {
	t.Helper()
	sort.Slice(got, func(i, j int) bool { return got[i].path < got[j].path })
	if !slices.Equal(got, want) {
		t.Errorf("%s layout:\n got %v\nwant %v", filepath.Base(pkg), got, want)
	}
}

// TestMaintainerScripts checks the rendered scripts are valid sh, carry no
// placeholder and create the hive user exactly where documented.
func TestMaintainerScripts(t *testing.T) {
	testenv.RequireTool(t, "rpm", "sh")
	arts := buildPackages(t, fakeBins(t), "v1.2.3")
	for _, s := range Packages {
		scripts := run(t, "rpm", "-qp", "--scripts", arts[s.Name+".rpm"].Path)
		if s.Unit == "" {
			if strings.TrimSpace(scripts) != "" {
				t.Errorf("%s has maintainer scripts:\n%s", s.Name, scripts)
			}
			continue
		}
		if strings.Contains(scripts, "@") && strings.Contains(scripts, "@PACKAGE@") {
			t.Errorf("%s: placeholder left in scripts", s.Name)
		}
		if got := strings.Contains(scripts, "useradd"); got != s.CreateUser {
			t.Errorf("%s: scripts create the hive user = %v, want %v", s.Name, got, s.CreateUser)
		}
		if !strings.Contains(scripts, "unit="+s.Unit) {
			t.Errorf("%s: scripts do not name %s", s.Name, s.Unit)
		}
	}
	// Every template parses as POSIX sh.
	dir := filepath.Join(repoRoot(t), "deploy", "packaging", "scripts")
	for _, n := range scriptNames {
		run(t, "sh", "-n", filepath.Join(dir, n+".sh"))
	}
	run(t, "sh", "-n", filepath.Join(repoRoot(t), "deploy", "packaging", "agent-configured"))
}

// TestAgentConfigured runs the start-rule script against configurations
// in the YAML forms an operator or cloud-init writes.
func TestAgentConfigured(t *testing.T) {
	testenv.RequireTool(t, "sh", "awk")
	script := filepath.Join(repoRoot(t), "deploy", "packaging", "agent-configured")
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{"join: []\n", false},
		{"join: [ ]\n", false},
		{"join: [10.0.0.1:7402]\n", true},
		{"join: [ \"a:7402\", b:7402 ]\n", true},
		{"join:\n  - a:7402\n", true},
		{"join:\n- a:7402\n", true},
		{"join:\n\n  # first\n  - \"10.0.0.1:7402\" # comment\n", true},
		{"join:\n  # - a:7402\nlabels:\n  - x\n", false},
		{"join: # none yet\nlabels: {role: web}\n", false},
		{"# join: [a:7402]\n", false},
		{"join: \"\"\n", false},
		{"join: ''\n", false},
		{"join: ~\n", false},
		{"join: null\n", false},
		{"join: a:7402\n", true},
		{"gossip:\n  join: [a:7402]\n", false},
		{"node: web-1\r\njoin:\r\n  - a:7402\r\n", true},
		{"", false},
	} {
		p := filepath.Join(t.TempDir(), "agent.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		err := exec.Command("sh", script, p).Run()
		if got := err == nil; got != tc.want {
			t.Errorf("agent-configured on %q = %v (%v), want %v", tc.yaml, got, err, tc.want)
		}
	}
	if err := exec.Command("sh", script, filepath.Join(t.TempDir(), "missing.yaml")).Run(); err == nil {
		t.Error("agent-configured on a missing file succeeded")
	}
	// The package's default configuration must not start the agent.
	if err := exec.Command("sh", script, filepath.Join(repoRoot(t), "deploy", "config", "agent.yaml")).Run(); err == nil {
		t.Error("the default agent.yaml counts as configured: the agent would start unconfigured")
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// FuzzPackageVersion: whatever the input, PackageVersion either fails or
// returns parts made only of the characters both deb and rpm versions
// allow, with a numeric X.Y.Z version.
func FuzzPackageVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3", "v1.2.3-rc.1", "v1.2.3-4-gabcdef0-dirty", "974c809", "dev", "", "v1.2", "v1.2.3-"} {
		f.Add(s)
	}
	okVersion := regexp.MustCompile(`^\d+\.\d+\.\d+$`)
	okPart := regexp.MustCompile(`^[0-9A-Za-z.]*$`)
	f.Fuzz(func(t *testing.T, in string) {
		v, pre, meta, err := PackageVersion(in)
		if err != nil {
			return
		}
		if !okVersion.MatchString(v) || !okPart.MatchString(pre) || !okPart.MatchString(meta) {
			t.Fatalf("PackageVersion(%q) = %q %q %q", in, v, pre, meta)
		}
	})
}

// TestArchNames builds arm64 packages and reads the architecture back with
// dpkg-deb and rpm: each format's own name for it.
func TestArchNames(t *testing.T) {
	testenv.RequireTool(t, "dpkg-deb", "rpm")
	for _, tc := range []struct{ goarch, deb, rpm string }{{"amd64", "amd64", "x86_64"}, {"arm64", "arm64", "aarch64"}} {
		cfg := DefaultConfig()
		cfg.Arch = tc.goarch
		cfg.BinDir = fakeBins(t)
		cfg.DeployDir = filepath.Join(repoRoot(t), "deploy")
		cfg.OutDir = t.TempDir()
		cfg.Packages = []string{"hivectl"}
		arts, err := Build(context.Background(), cfg, nil)
		if err != nil || len(arts) != 2 {
			t.Fatalf("Build %s: %v %v", tc.goarch, arts, err)
		}
		for _, a := range arts {
			var got, want string
			switch a.Format {
			case "deb":
				got, want = strings.TrimSpace(run(t, "dpkg-deb", "-f", a.Path, "Architecture")), tc.deb
			case "rpm":
				got, want = strings.TrimSpace(run(t, "rpm", "-qp", "--qf", "%{ARCH}", a.Path)), tc.rpm
			}
			if got != want || !strings.Contains(filepath.Base(a.Path), want) {
				t.Errorf("%s %s: architecture %q in %s, want %q", tc.goarch, a.Format, got, filepath.Base(a.Path), want)
			}
		}
	}
}
