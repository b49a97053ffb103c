package site

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestErrorsGolden parses each testdata/errors/*.yaml and compares the
// error list with the .golden file beside it.
func TestErrorsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no error cases: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(f)
			_, err = Parse(name, data)
			if err == nil {
				t.Fatalf("%s parsed without error", f)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			for _, e := range list {
				if e.Line == 0 || e.Col == 0 {
					t.Errorf("error without a position: %v", e)
				}
			}
			compareGolden(t, strings.TrimSuffix(f, ".yaml")+".golden", err.Error()+"\n")
		})
	}
}

// TestValidGolden parses each testdata/valid/*.yaml and compares the model,
// defaults filled, with the .golden prototext beside it.
func TestValidGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.yaml")
	files = append(files, "../deploy/examples/site.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Parse(filepath.Base(f), data)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if err := Check(s); err != nil {
				t.Fatalf("Check of a parsed site: %v", err)
			}
			golden := "testdata/valid/" + strings.TrimSuffix(filepath.Base(f), ".yaml") + ".golden"
			compareGolden(t, golden, stableJSON(t, s))
		})
	}
}

// stableJSON renders a message as indented JSON with stable whitespace
// (protojson deliberately varies its spacing between runs).
func stableJSON(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out) + "\n"
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run go test ./site -update to create): %v", err)
	}
	if string(want) != got {
		t.Errorf("mismatch with %s (go test ./site -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestThreeMistakes(t *testing.T) {
	src := "roles:\n" + // 1
		"  web:\n" + // 2
		"    packges: [nginx]\n" + // 3: unknown key
		"    files:\n" + // 4
		"      - path: /etc/x\n" + // 5
		"        mode: \"0999\"\n" + // 6: bad mode
		"    firewall:\n" + // 7
		"      rules:\n" + // 8
		"        - sources: [10.0.0.0/40]\n" // 9: bad CIDR
	_, err := Parse("site.yaml", []byte(src))
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("want ErrorList, got %v", err)
	}
	want := []struct {
		line, col int
		path      string
	}{
		{3, 5, "roles.web.packges"},
		{6, 15, "roles.web.files[0].mode"},
		{9, 21, "roles.web.firewall.rules[0].sources[0]"},
	}
	if len(list) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(list), len(want), err)
	}
	for i, w := range want {
		e := list[i]
		if e.File != "site.yaml" || e.Line != w.line || e.Col != w.col || e.Path != w.path {
			t.Errorf("error %d = %s:%d:%d %s, want site.yaml:%d:%d %s", i, e.File, e.Line, e.Col, e.Path, w.line, w.col, w.path)
		}
	}
}

func TestDefaults(t *testing.T) {
	s, err := Parse("d.yaml", []byte(`
roles:
  r:
    repos: [{name: hive, type: apt, url: "http://r/apt/hive", gpgcheck: false}]
    packages: [curl]
    files:
      - path: /etc/f
      - path: /srv/d
        state: directory
    services: [nginx, {name: x.timer, state: stopped}]
    firewall:
      rules: [{ports: [22]}]
    drbd: [{name: r0, minor: 1, disk: /dev/vdb, port: 7789, peers: r}]
    swarm: {role: manager}
`))
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[string]*hivev1.Resource{}
	for _, r := range s.Roles[0].Resources {
		byKey[r.Key] = r
	}
	if r := byKey["repo:hive"].GetRepo(); r.Suite != "stable" || len(r.Components) != 1 || r.Components[0] != "main" {
		t.Errorf("apt repo defaults: %v", r)
	}
	if p := byKey["package:curl"].GetPackage(); p.State != hivev1.PackageState_PACKAGE_STATE_PRESENT {
		t.Errorf("package state default: %v", p.State)
	}
	if f := byKey["file:/etc/f"].GetFile(); f.Mode != 0o644 || f.Owner != "root" || f.Group != "root" || f.State != hivev1.FileState_FILE_STATE_FILE {
		t.Errorf("file defaults: %v", f)
	}
	if f := byKey["file:/srv/d"].GetFile(); f.Mode != 0o755 {
		t.Errorf("directory mode default: %o", f.Mode)
	}
	if sv := byKey["service:nginx.service"].GetService(); sv == nil || !sv.GetEnabled() || sv.State != hivev1.ServiceState_SERVICE_STATE_RUNNING {
		t.Errorf("service defaults: %v", sv)
	}
	if sv := byKey["service:x.timer"].GetService(); sv == nil || sv.GetEnabled() {
		t.Errorf("stopped service should default to disabled: %v", sv)
	}
	fw := byKey["firewall:filter"].GetFirewall()
	if fw.ConfirmSeconds != 30 || fw.Rules[0].Chain != "input" || fw.Rules[0].Protocol != "tcp" || fw.Rules[0].Action != hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT || fw.Rules[0].Family != hivev1.IPFamily_IP_FAMILY_BOTH {
		t.Errorf("firewall defaults: %v", fw)
	}
	if d := byKey["drbd:r0"].GetDrbd(); d.Protocol != "C" || d.MetaDisk != "internal" {
		t.Errorf("drbd defaults: %v", d)
	}
}

// TestHashIgnoresLayout checks that comments, key order, list order of
// resources and spelled-out defaults do not change a generation's hash,
// while a real change does.
func TestHashIgnoresLayout(t *testing.T) {
	a := `
roles:
  web:
    packages: [nginx, curl]
    files:
      - {path: /etc/a, content: x}
  db:
    packages: [postgresql]
`
	b := `# the same site, written differently
roles:
  db:
    packages:
      - name: postgresql
        state: present
  web:
    files:
      - content: x
        mode: "0644"
        path: /etc/a
    packages: [curl, nginx]
`
	c := strings.Replace(a, "content: x", "content: y", 1)
	ha, hb, hc := mustHash(t, a), mustHash(t, b), mustHash(t, c)
	if ha != hb {
		t.Errorf("equivalent sites hash differently: %s vs %s", ha, hb)
	}
	if ha == hc {
		t.Errorf("a content change did not change the hash")
	}
}

func mustHash(t *testing.T, src string) string {
	t.Helper()
	s, err := Parse("x.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return Hash(s)
}

func TestCheckAPISite(t *testing.T) {
	data, err := os.ReadFile("../deploy/examples/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse("site.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	// Tamper with the model the way a buggy or hostile client could.
	bad := proto.Clone(s).(*hivev1.Site)
	for _, r := range bad.Roles {
		for _, res := range r.Resources {
			if f := res.GetFile(); f != nil && f.Path == "/etc/motd" {
				f.Path = "/etc/../etc/shadow"
			}
		}
	}
	bad.Selectors = append(bad.Selectors, &hivev1.Selector{Roles: []string{"ghost"}})
	err = Check(bad)
	if err == nil {
		t.Fatal("Check accepted a tampered site")
	}
	for _, want := range []string{`unknown role "ghost"`, "must not contain . or ..", "does not match the resource"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error lacks %q:\n%v", want, err)
		}
	}
	if Hash(s) == Hash(bad) {
		t.Error("tampered site has the same hash")
	}
}

func TestRenderTemplate(t *testing.T) {
	facts := &hivev1.NodeFacts{
		Name:   "db-1",
		Labels: map[string]string{"tier": "db"},
		Roles:  []string{"base", "db"},
		Peers: map[string]*hivev1.PeerList{"db": {Peers: []*hivev1.Peer{
			{Name: "db-1", Address: "10.0.0.1"}, {Name: "db-2", Address: "10.0.0.2"}}}},
	}
	out, err := RenderTemplate(context.Background(), `{{ .Name }} {{ .Labels.tier }} {{ join .Roles "," }} {{ range .Peers.db }}{{ .Address }} {{ end }}{{ if hasRole "db" }}{{ secret "pw" }}{{ end }}`,
		facts, map[string][]byte{"pw": []byte("s3cret")}, TemplateLimits{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "db-1 db base,db 10.0.0.1 10.0.0.2 s3cret"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
	_, err = RenderTemplate(context.Background(), `{{ secret "other" }}`, facts, map[string][]byte{"pw": []byte("s3cret")}, TemplateLimits{})
	if err == nil || !strings.Contains(err.Error(), `"other"`) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("missing secret error = %v", err)
	}
}

func TestSuggest(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"packges", "packages"}, {"fiels", "files"}, {"servce", "services"}, {"xyz", ""}, {"rol", "roles"},
	} {
		if got := suggest(c.in, []string{"packages", "files", "services", "roles", "repos"}); got != c.want {
			t.Errorf("suggest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestAliasBomb checks that aliases cannot make a small file expensive:
// 300 roles sharing one 1,000-file role body would be 300,000 resources.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("roles:\n  r0: &body\n    files:\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "      - {path: /f%d}\n", i)
	}
	for i := 1; i < 300; i++ {
		fmt.Fprintf(&b, "  r%d: *body\n", i)
	}
	_, err := Parse("bomb.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "alias expansions") {
		t.Fatalf("want an alias-expansion error, got %.300v", err)
	}
}

// TestCheckAPIConfirm: a site from the API gets the parser's confirm
// rules: only kinds that can roll back, at most an hour, and the
// firewall's window in its own message.
func TestCheckAPIConfirm(t *testing.T) {
	s, err := Parse("site.yaml", []byte(`site: t
selectors:
  - roles: [web]
roles:
  web:
    packages: [nginx]
    files:
      - path: /etc/a
        content: a
        confirm: 30s
    firewall:
      confirm: 20s
      rules: []
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, res := range s.Roles[0].Resources {
		switch {
		case res.GetFile() != nil && res.ConfirmSeconds != 30:
			t.Errorf("file confirm_seconds %d, want 30", res.ConfirmSeconds)
		case res.GetFirewall() != nil && (res.ConfirmSeconds != 0 || res.GetFirewall().ConfirmSeconds != 20):
			t.Errorf("firewall confirm %d/%d, want 0/20", res.ConfirmSeconds, res.GetFirewall().ConfirmSeconds)
		}
	}
	if err := Check(s); err != nil {
		t.Fatalf("Check: %v", err)
	}
	bad := proto.Clone(s).(*hivev1.Site)
	for _, res := range bad.Roles[0].Resources {
		switch {
		case res.GetPackage() != nil:
			res.ConfirmSeconds = 30
		case res.GetFile() != nil:
			res.ConfirmSeconds = 7200
		case res.GetFirewall() != nil:
			res.ConfirmSeconds = 30
		}
	}
	err = Check(bad)
	for _, want := range []string{"confirm is not supported on package", "confirm window 7200s is longer than 1h0m0s", "confirm is not supported on firewall"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check error lacks %q:\n%v", want, err)
		}
	}
}
