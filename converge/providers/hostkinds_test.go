package providers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/providers"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
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
	site := func(content string) string {
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
		rep, err := eng.Run(context.Background(), nodeState(t, site(content), secrets), converge.RunOptions{DryRun: dry})
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
