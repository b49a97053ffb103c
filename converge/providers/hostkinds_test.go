package providers_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/command"
	"github.com/hivefleet/hive/converge/kmod"
	"github.com/hivefleet/hive/converge/mount"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/converge/sysctl"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// TestHostBaselineFromSiteFile converges a site file's host-baseline
// resources through the default providers in a root that is not the
// host's (so sysctls and modules get their files only, and the live
// kernel is left alone): a file that notifies a command, which runs once
// per change of the file, with the command's secret masked in its output;
// a second run is all OK.
func TestHostBaselineFromSiteFile(t *testing.T) {
	testenv.RequireTool(t, "timeout", "sh")
	root := t.TempDir()
	log := filepath.Join(root, "reindex.log")
	siteYAML := func(content string) string {
		return fmt.Sprintf(`site: t
secrets: [token]
selectors:
  - roles: [base]
roles:
  base:
    kernel_modules:
      - name: dummy
        options: [numdummies=1]
    sysctls:
      - key: net.ipv4.ip_forward
        value: 1
    files:
      - path: /etc/app.conf
        content: %q
        notify: [command:reindex]
    commands:
      - name: reindex
        shell: echo "reindex $HIVE_SECRET_TOKEN" >> %s; echo "used $HIVE_SECRET_TOKEN"
        on_notify: true
        timeout: 10s
        secrets: [token]
`, content, log)
	}
	secrets := map[string][]byte{"token": []byte("tok-123456")}
	eng := engine(t, root, providers.DefaultConfig(), nil)
	run := func(content string, dry bool, want string) map[string]*hivev1.ResourceResult {
		t.Helper()
		rep, err := eng.Run(context.Background(), nodeState(t, siteYAML(content), secrets), converge.RunOptions{DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*hivev1.ResourceResult{}
		var got []string
		for _, r := range rep.GetResults() {
			out[r.GetKey()] = r
			got = append(got, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
			t.Logf("  %s %s: %s", r.GetOutcome(), r.GetKey(), r.GetMessage())
		}
		if g := strings.Join(got, " "); g != want {
			t.Fatalf("outcomes\n got %s\nwant %s", g, want)
		}
		return out
	}
	const keys = "command:reindex=%s file:/etc/app.conf=%s kernel_module:dummy=%s sysctl:net.ipv4.ip_forward=%s"
	res := run("a=1\n", true, fmt.Sprintf(keys, "PLANNED", "PLANNED", "PLANNED", "PLANNED"))
	if m := res["command:reindex"].GetMessage(); !strings.Contains(m, "(notified by file:/etc/app.conf)") {
		t.Errorf("dry-run plan of the command: %q", m)
	}
	res = run("a=1\n", false, fmt.Sprintf(keys, "CHANGED", "CHANGED", "CHANGED", "CHANGED"))
	if d := res["command:reindex"].GetDiff(); d != "used <secret:token>\n" {
		t.Errorf("command output %q", d)
	}
	run("a=1\n", false, fmt.Sprintf(keys, "OK", "OK", "OK", "OK"))
	run("a=2\n", false, fmt.Sprintf(keys, "CHANGED", "CHANGED", "OK", "OK"))
	b, _ := os.ReadFile(log)
	if string(b) != "reindex tok-123456\nreindex tok-123456\n" {
		t.Errorf("command ran: %q", b)
	}
	for _, f := range []string{"/etc/sysctl.d/60-hive.conf", "/etc/modules-load.d/hive-dummy.conf", "/etc/modprobe.d/hive-dummy.conf"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestHostKindsParity: what the host-baseline providers refuse on every
// agent, hivectl validate refuses at the value's position and the
// coordinator's Check refuses when pushed over the API.
func TestHostKindsParity(t *testing.T) {
	validate := func(p converge.Validator) func(*hivev1.Resource) error { return p.Validate }
	sc := func(k, v string) *hivev1.Resource {
		return &hivev1.Resource{Key: "sysctl:" + k, Kind: &hivev1.Resource_Sysctl{Sysctl: &hivev1.Sysctl{Key: k, Value: v}}}
	}
	km := func(n string, o ...string) *hivev1.Resource {
		return &hivev1.Resource{Key: "kernel_module:" + n, Kind: &hivev1.Resource_KernelModule{KernelModule: &hivev1.KernelModule{Name: n, Options: o}}}
	}
	mt := func(m *hivev1.Mount) *hivev1.Resource {
		return &hivev1.Resource{Key: "mount:" + m.Path, Kind: &hivev1.Resource_Mount{Mount: m}}
	}
	cm := func(c *hivev1.GuardedCommand) *hivev1.Resource {
		c.TimeoutSeconds = 300
		return &hivev1.Resource{Key: "command:" + c.Name, Kind: &hivev1.Resource_Command{Command: c}}
	}
	for _, c := range []struct {
		name, yaml, at string
		res            *hivev1.Resource
		refuse         func(*hivev1.Resource) error
	}{
		{"sysctl key not dotted", "    sysctls: [{key: ip_forward, value: \"1\"}]\n", "key: ip_forward", sc("ip_forward", "1"), validate(sysctl.New(sysctl.Config{}))},
		{"sysctl value two lines", "    sysctls: [{key: a.b, value: \"1\\n2\"}]\n", "value:", sc("a.b", "1\n2"), validate(sysctl.New(sysctl.Config{}))},
		{"module option space", "    kernel_modules: [{name: dummy, options: [\"a b\"]}]\n", `"a b"`, km("dummy", "a b"), validate(kmod.New(kmod.Config{}))},
		{"module name space", "    kernel_modules: [\"du mmy\"]\n", `"du mmy"`, km("du mmy"), validate(kmod.New(kmod.Config{}))},
		{"mount option comma", "    mounts: [{path: /srv, device: /dev/vdb, fstype: ext4, options: [\"rw,noatime\"]}]\n", `"rw,noatime"`,
			mt(&hivev1.Mount{Path: "/srv", Device: "/dev/vdb", Fstype: "ext4", Options: []string{"rw,noatime"}}), validate(mount.New(mount.Config{}))},
		{"mount mkfs on a UUID", "    mounts: [{path: /srv, device: UUID=abc, fstype: ext4, mkfs: true}]\n", "mkfs:",
			mt(&hivev1.Mount{Path: "/srv", Device: "UUID=abc", Fstype: "ext4", Mkfs: true}), validate(mount.New(mount.Config{}))},
		{"command relative program", "    commands: [{name: x, argv: [true], creates: /x}]\n", "true]",
			cm(&hivev1.GuardedCommand{Name: "x", Argv: []string{"true"}, Creates: "/x"}), validate(command.New())},
		{"command shell and argv", "    commands: [{name: x, argv: [/bin/true], shell: \"true\", creates: /x}]\n", "shell:",
			cm(&hivev1.GuardedCommand{Name: "x", Argv: []string{"/bin/true"}, Shell: "true", Creates: "/x"}), validate(command.New())},
		{"command env name", "    commands: [{name: x, shell: \"true\", creates: /x, environment: {A-B: c}}]\n", "environment:",
			cm(&hivev1.GuardedCommand{Name: "x", Shell: "true", Creates: "/x", Environment: []string{"A-B=c"}}), validate(command.New())},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.refuse(c.res); err == nil {
				t.Fatalf("premise: the provider accepts %v", c.res)
			}
			text := "site: parity\nselectors:\n  - roles: [db]\nroles:\n  db:\n" + c.yaml
			_, err := site.Parse("site.yaml", []byte(text))
			var list site.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("validate accepts what the agent refuses:\n%s", text)
			}
			off := strings.Index(text, c.at)
			line := strings.Count(text[:off], "\n") + 1
			col := off - strings.LastIndex(text[:off], "\n")
			if list[0].Line != line || list[0].Col != col {
				t.Errorf("reported at %d:%d, want %d:%d (%q): %v", list[0].Line, list[0].Col, line, col, c.at, list)
			}
			s := &hivev1.Site{Name: "parity", Selectors: []*hivev1.Selector{{Roles: []string{"db"}}},
				Roles: []*hivev1.Role{{Name: "db", Resources: []*hivev1.Resource{c.res}}}}
			if err := site.Check(s); err == nil {
				t.Errorf("site.Check (push) accepts what the agent refuses: %v", c.res)
			}
		})
	}
}

// BenchmarkNoopHostBaseline is a no-op run of a host baseline in a root
// that is not the host's: 20 sysctls, 5 kernel modules, 5 commands
// guarded by creates and one by unless (a shell per run).
func BenchmarkNoopHostBaseline(b *testing.B) {
	root := b.TempDir()
	var y strings.Builder
	y.WriteString("site: bench\nselectors:\n  - roles: [base]\nroles:\n  base:\n    sysctls:\n")
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&y, "      - {key: net.ipv4.conf.eth%d.rp_filter, value: 1}\n", i)
	}
	y.WriteString("    kernel_modules: [m0, m1, m2, m3, m4]\n    commands:\n")
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&y, "      - {name: c%d, shell: \"touch %s/c%d\", creates: /c%d}\n", i, root, i, i)
	}
	y.WriteString("      - {name: u, shell: \"true\", unless: \"true\"}\n")
	s, err := site.Parse("bench.yaml", []byte(y.String()))
	if err != nil {
		b.Fatal(err)
	}
	st := &hivev1.NodeState{Node: "n", Generation: 1, Resources: s.GetRoles()[0].GetResources()}
	reg, err := providers.Default(providers.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	eng, err := converge.New(converge.Config{Root: root, Runner: converge.ExecRunner{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, reg)
	if err != nil {
		b.Fatal(err)
	}
	if rep, err := eng.Run(context.Background(), st, converge.RunOptions{}); err != nil || rep.Failed() {
		b.Fatalf("first run: %v %v", err, rep.GetResults())
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := eng.Run(context.Background(), st, converge.RunOptions{})
		if err != nil || rep.Count(hivev1.Outcome_OUTCOME_OK) != len(st.GetResources()) {
			b.Fatalf("no-op run: %v %v", err, rep.GetResults())
		}
	}
}
