package repotest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Dnf runs Debian's dnf against one repository with a configuration of its
// own (no system repos, skip_if_unavailable off, gpgcheck and repo_gpgcheck
// on), everything under dir.
type Dnf struct {
	Bin  string
	Dir  string
	Root string
	conf string
}

// NewDnf prepares dir for a dnf client of baseurl, trusting keyURL.
func NewDnf(t testing.TB, bin, dir, repoID, baseurl, keyURL string) *Dnf {
	t.Helper()
	d := &Dnf{Bin: bin, Dir: dir, Root: filepath.Join(dir, "root"), conf: filepath.Join(dir, "dnf.conf")}
	for _, s := range []string{"repos.d", "cache", "persist", "log", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`[main]
reposdir=%[1]s/repos.d
cachedir=%[1]s/cache
persistdir=%[1]s/persist
logdir=%[1]s/log
skip_if_unavailable=0
gpgcheck=1
repo_gpgcheck=1
install_weak_deps=0
keepcache=0
metadata_expire=0
`, dir)
	repo := fmt.Sprintf("[%s]\nname=%s\nbaseurl=%s\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey=%s\nmetadata_expire=0\nskip_if_unavailable=0\n", repoID, repoID, baseurl, keyURL)
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "repos.d", repoID+".repo"), []byte(repo), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// Run runs dnf with args and returns its combined output.
func (d *Dnf) Run(ctx context.Context, args ...string) (string, error) {
	all := append([]string{"-c", d.conf, "--releasever=1", "--installroot", d.Root, "--noplugins", "-y",
		"--setopt=cachedir=" + filepath.Join(d.Dir, "cache"), "--setopt=reposdir=" + filepath.Join(d.Dir, "repos.d"),
		"--setopt=persistdir=" + filepath.Join(d.Dir, "persist"), "--setopt=logdir=" + filepath.Join(d.Dir, "log")}, args...)
	cmd := exec.CommandContext(ctx, d.Bin, all...)
	cmd.Env = append(os.Environ(), "HOME="+d.Dir, "LC_ALL=C.UTF-8")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Apt runs apt-get with an APT_CONFIG of its own (no system config parts,
// no hooks), state under dir, one source line.
type Apt struct {
	Dir  string
	conf string
}

// NewApt prepares dir for an apt client of sourceLine (a full "deb [...] URI suite comp" line).
func NewApt(t testing.TB, dir, sourceLine string) *Apt {
	t.Helper()
	a := &Apt{Dir: dir, conf: filepath.Join(dir, "apt.conf")}
	for _, s := range []string{"etc/parts", "etc/prefs", "state/lists/partial", "cache/archives/partial", "log", "dl"} {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "state/status"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/sources.list"), []byte(sourceLine+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`Dir::Etc::Main "/dev/null";
Dir::Etc::Parts "%[1]s/etc/parts";
Dir::Etc::PreferencesParts "%[1]s/etc/prefs";
Dir::Etc::SourceList "%[1]s/etc/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State "%[1]s/state";
Dir::State::Lists "%[1]s/state/lists";
Dir::State::status "%[1]s/state/status";
Dir::Cache "%[1]s/cache";
Dir::Cache::Archives "%[1]s/cache/archives";
Dir::Log "%[1]s/log";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::Retries "0";
Debug::NoLocking "true";
APT::Sandbox::User "root";
`, dir)
	if err := os.WriteFile(a.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return a
}

// Config returns the APT_CONFIG file.
func (a *Apt) Config() string { return a.conf }

// Run runs an apt program (apt-get, apt-cache) and returns combined output.
func (a *Apt) Run(ctx context.Context, prog string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = filepath.Join(a.Dir, "dl")
	cmd.Env = append(os.Environ(), "APT_CONFIG="+a.conf, "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Warnings returns apt's W:/E: lines.
func Warnings(out string) []string {
	var w []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "W:") || strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "Err:") {
			w = append(w, l)
		}
	}
	return w
}

// Ctx returns a context bounded by d, cancelled at test end.
func Ctx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
