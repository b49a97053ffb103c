package repo_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/mirror"
	"github.com/hivefleet/hive/repo/repotest"
)

// TestAptThroughMirror: apt-get, pointed at /mirror/<name>/ of one
// hive-repo whose upstream is another hive-repo, updates and downloads;
// with the upstream gone it still updates (stale within Valid-Until) and
// downloads cached packages.
func TestAptThroughMirror(t *testing.T) {
	aptGet := testenv.RequireTool(t, "apt-get", "gpgv")
	up := start(t, func(c *repo.Config) { c.ValidFor = time.Hour })
	up.upload("site", "tool_2.0_all.deb", debPkg(t, "tool", "2.0", "gz"))
	up.reindex("site")
	front := start(t, func(c *repo.Config) {
		c.Mirrors = map[string]mirror.Upstream{"up": {URL: up.url + "/apt/site"}}
	})
	dir := t.TempDir()
	key := filepath.Join(dir, "k.asc")
	os.WriteFile(key, up.get("/keys/site.asc"), 0o644)
	a := repotest.NewApt(t, dir, "deb [signed-by="+key+"] "+front.url+"/mirror/up stable main")
	ctx := repotest.Ctx(t, 2*time.Minute)
	for i, step := range [][]string{{"update"}, {"download", "tool"}} {
		out, err := a.Run(ctx, aptGet, step...)
		if err != nil || len(repotest.Warnings(out)) > 0 {
			t.Fatalf("step %d %v: %v\n%s", i, step, err, out)
		}
	}
	os.Remove(filepath.Join(dir, "dl", "tool_2.0_all.deb"))
	// Upstream down: flush apt's lists so everything is fetched again.
	up.stop()
	os.RemoveAll(filepath.Join(dir, "state/lists"))
	os.MkdirAll(filepath.Join(dir, "state/lists/partial"), 0o755)
	for i, step := range [][]string{{"update"}, {"download", "tool"}} {
		out, err := a.Run(ctx, aptGet, step...)
		if err != nil || len(repotest.Warnings(out)) > 0 {
			t.Fatalf("upstream down, step %d %v: %v\n%s", i, step, err, out)
		}
	}
}

// TestDnfThroughMirror: dnf with gpgcheck and repo_gpgcheck installs from
// /mirror/<name>/ whose upstream is another hive-repo's /yum/<repo>; the
// package is verified against the primary.xml that passed through, and
// served from the cache once the upstream is gone.
func TestDnfThroughMirror(t *testing.T) {
	dnf := testenv.RequireTool(t, "dnf", "rpm")
	up := start(t, nil)
	up.upload("site", "hello-1.0-1.noarch.rpm", rpmPkg(t, "hello", "1.0", true))
	up.reindex("site")
	front := start(t, func(c *repo.Config) {
		c.Mirrors = map[string]mirror.Upstream{"rocky": {URL: up.url + "/yum/site"}}
	})
	key := filepath.Join(t.TempDir(), "k.asc")
	os.WriteFile(key, up.get("/keys/site.asc"), 0o644)
	ctx := repotest.Ctx(t, 3*time.Minute)
	c := repotest.NewDnf(t, dnf, t.TempDir(), "mirrored", front.url+"/mirror/rocky/", "file://"+key)
	if out, err := c.Run(ctx, "install", "hello"); err != nil {
		t.Fatalf("dnf install through the mirror: %v\n%s", err, out)
	}
	m := string(front.get("/metrics"))
	if !strings.Contains(m, `hive_repo_mirror_requests_total{mirror="rocky",result="miss"}`) || strings.Contains(m, `result="proxied"`) {
		t.Errorf("package was not verified and cached:\n%s", grepLines(m, "mirror_requests"))
	}
	up.stop()
	c2 := repotest.NewDnf(t, dnf, t.TempDir(), "mirrored", front.url+"/mirror/rocky/", "file://"+key)
	if out, err := c2.Run(ctx, "install", "hello"); err != nil {
		t.Fatalf("dnf install through the mirror with the upstream down: %v\n%s", err, out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
