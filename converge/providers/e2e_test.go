package providers_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/converge/service/servicetest"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// nodeState parses a site and renders it for one node holding every role
// (the coordinator's renderer does more; this is enough for one node).
func nodeState(t *testing.T, yaml string, secrets map[string][]byte) *hivev1.NodeState {
	t.Helper()
	s, err := site.Parse("site.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse site: %v", err)
	}
	st := &hivev1.NodeState{Node: "web-1", Generation: 1, Secrets: secrets,
		Facts: &hivev1.NodeFacts{Name: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.5"}}}
	for _, r := range s.GetRoles() {
		st.Facts.Roles = append(st.Facts.Roles, r.GetName())
		st.Resources = append(st.Resources, r.GetResources()...)
	}
	return st
}

func serve(t *testing.T, dir string) string {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv.URL
}

func engine(t *testing.T, root string, cfg providers.Config, planOnly map[string]bool) *converge.Engine {
	t.Helper()
	reg, err := providers.Default(cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := converge.New(converge.Config{Root: root, Runner: converge.ExecRunner{}, PlanOnly: planOnly,
		Logger: slog.New(slog.NewTextHandler(tlog{t}, nil))}, reg)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

func results(rep *converge.Report) string {
	var l []string
	for _, r := range rep.GetResults() {
		l = append(l, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	}
	sort.Strings(l)
	return strings.Join(l, " ")
}

const siteTmpl = `site: e2e
secrets: [api-token]
selectors:
  - roles: [web]
roles:
  web:
    repos:
      - name: local
        type: %s
        url: %s
%s
    packages:
      - hive-web
    files:
      - path: /etc/hive-web/web.conf
        template: true
        mode: "0640"
        content: |
          node={{ .Name }} tier={{ .Labels.tier }}
          token={{ secret "api-token" }}
        notify: [service:hive-web]
      - path: /etc/systemd/system/hive-web.service
        content: |
          [Unit]
          Description=hive e2e web
          [Service]
          ExecStart=/usr/bin/hive-web
          [Install]
          WantedBy=multi-user.target
    services:
      - name: hive-web
`

// checkRuns runs st twice and checks the second run changes nothing.
func checkRuns(t *testing.T, eng *converge.Engine, st *hivev1.NodeState, wantFirst string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// A dry run first: everything planned, nothing touched.
	rep, err := eng.Run(ctx, st, converge.RunOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Count(hivev1.Outcome_OUTCOME_PLANNED) != len(st.GetResources()) {
		t.Fatalf("dry run: %s", results(rep))
	}
	rep, err = eng.Run(ctx, st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := results(rep); got != wantFirst {
		t.Fatalf("first run:\n got %s\nwant %s\n%v", got, wantFirst, rep.GetResults())
	}
	for _, r := range rep.GetResults() {
		if strings.Contains(r.GetDiff()+r.GetMessage(), "tok-s3cret") {
			t.Errorf("secret in result of %s", r.GetKey())
		}
	}
	rep, err = eng.Run(ctx, st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Count(hivev1.Outcome_OUTCOME_CHANGED) + rep.Count(hivev1.Outcome_OUTCOME_FAILED); n != 0 {
		t.Fatalf("second run not a no-op: %s", results(rep))
	}
	t.Logf("second run: %s in %s", results(rep), rep.Duration)
}

// checkDrift edits the config file behind hive's back, runs again and
// expects exactly the file to change and the service to be notified.
func checkDrift(t *testing.T, eng *converge.Engine, st *hivev1.NodeState, root, service string) {
	t.Helper()
	must(t, os.WriteFile(filepath.Join(root, "etc/hive-web/web.conf"), []byte("edited by hand\n"), 0o644))
	rep, err := eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "file:/etc/hive-web/web.conf=CHANGED file:/etc/systemd/system/hive-web.service=OK package:hive-web=OK repo:local=OK service:hive-web.service=" + service
	if got := results(rep); got != want {
		t.Fatalf("drift run:\n got %s\nwant %s", got, want)
	}
	if len(rep.Notifications) != 1 || rep.Notifications[0].To != "service:hive-web.service" {
		t.Errorf("notifications %+v", rep.Notifications)
	}
	for _, r := range rep.GetResults() {
		if r.GetKey() == "file:/etc/hive-web/web.conf" && (!r.GetDrift() || strings.Contains(r.GetDiff(), "edited by hand") || // renders a secret: no diff
			!strings.Contains(r.GetDiff(), "renders secrets") || strings.Contains(r.GetDiff(), "tok-s3cret")) {
			t.Errorf("drift result: %v", r)
		}
	}
	checkFiles(t, root)
}

func checkFiles(t *testing.T, root string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc/hive-web/web.conf"))
	if err != nil || string(b) != "node=web-1 tier=web\ntoken=tok-s3cret\n" {
		t.Errorf("web.conf %q %v", b, err)
	}
}

// TestDebianRoot converges a debootstrap root (with systemd) from a site
// file: a signed APT repository served over HTTP, a package from it
// (installed with apt-get inside the root), a templated config file with
// a secret, a unit file and a service, managed through the real systemd
// booted in that root (servicetest.BootSystemd). The second run changes
// nothing; a hand edit of the config file is put back and restarts the
// service.
func TestDebianRoot(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "chroot", "dpkg-deb", "apt-ftparchive", "gpg")
	root := debroot.CopyWith(t, "systemd", "dbus")
	must(t, os.Remove(filepath.Join(root, "etc/apt/sources.list")))
	repoDir := t.TempDir()
	deb := convergetest.BuildDeb(t, t.TempDir(), convergetest.Deb{Name: "hive-web", Version: "1.0-1",
		Files: map[string]string{"/usr/bin/hive-web": "#!/bin/sh\nexec sleep infinity\n"}})
	key := convergetest.NewGPGKey(t)
	convergetest.AptRepo(t, repoDir, key, deb)
	url := serve(t, repoDir)
	keyYAML := "        key: |\n" + indent(key.Public, "          ")
	st := nodeState(t, fmt.Sprintf(siteTmpl, "apt", url, keyYAML), map[string][]byte{"api-token": []byte("tok-s3cret")})
	sd := servicetest.BootSystemd(t, root)
	cfg := providers.DefaultConfig()
	cfg.Package.LockTimeout = 30 * time.Second
	cfg.Service = service.Config{Connect: sd.Connect, RootSystemd: true}
	eng := engine(t, root, cfg, nil)
	checkRuns(t, eng, st, "file:/etc/hive-web/web.conf=CHANGED file:/etc/systemd/system/hive-web.service=CHANGED "+
		"package:hive-web=CHANGED repo:local=CHANGED service:hive-web.service=CHANGED")
	pid := mainPID(t, sd)
	if pid == 0 {
		t.Fatal("hive-web is not running")
	}
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/hive-web.service")); err != nil {
		t.Errorf("not enabled: %v", err)
	}
	checkDrift(t, eng, st, root, "CHANGED")
	if np := mainPID(t, sd); np == pid || np == 0 {
		t.Errorf("not restarted after the config changed: main pid %d → %d", pid, np)
	}
	out, err := exec.Command("chroot", root, "dpkg-query", "-W", "-f", "${db:Status-Status} ${Version}", "hive-web").Output()
	if err != nil || string(out) != "installed 1.0-1" {
		t.Errorf("dpkg-query: %q %v", out, err)
	}
	checkFiles(t, root)
}

func mainPID(t *testing.T, sd *servicetest.Booted) uint32 {
	t.Helper()
	c, err := sd.RawConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.GetServicePropertyContext(context.Background(), "hive-web.service", "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := p.Value.Value().(uint32)
	return v
}

// TestRPMRoot converges an empty RPM root (dnf --installroot) from a site
// file: a yum repository (createrepo_c) served over HTTP, a package, a
// config file, a unit file and a service that stays planned (the root has
// no systemd).
func TestRPMRoot(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "rpm", "dnf", "createrepo_c")
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n"), 0o644))
	repoDir := t.TempDir()
	convergetest.BuildRPM(t, repoDir, convergetest.RPM{Name: "hive-web", Version: "1.0", Release: "1",
		Files: map[string]string{"/usr/bin/hive-web": "#!/bin/sh\nexec sleep infinity\n"}})
	convergetest.YumRepo(t, repoDir)
	url := serve(t, repoDir)
	// The test packages are unsigned: the repo is declared gpgcheck: false.
	st := nodeState(t, fmt.Sprintf(siteTmpl, "yum", url, "        gpgcheck: false"), map[string][]byte{"api-token": []byte("tok-s3cret")})
	cfg := providers.DefaultConfig()
	cfg.Package.DnfArgs = convergetest.DnfConfig(t, root)
	// No systemd in this root: services are plan-only, as under the
	// agent's --root sandbox.
	eng := engine(t, root, cfg, map[string]bool{converge.KindService: true})
	checkRuns(t, eng, st, "file:/etc/hive-web/web.conf=CHANGED file:/etc/systemd/system/hive-web.service=CHANGED "+
		"package:hive-web=CHANGED repo:local=CHANGED service:hive-web.service=PLANNED")
	checkDrift(t, eng, st, root, "PLANNED")
	out, err := exec.Command("rpm", "--root", root, "-q", "hive-web").Output()
	if err != nil || strings.TrimSpace(string(out)) != "hive-web-1.0-1.noarch" {
		t.Errorf("rpm -q: %q %v", out, err)
	}
	checkFiles(t, root)
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
