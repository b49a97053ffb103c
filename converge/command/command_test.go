package command

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func cmd(name string, c *hivev1.GuardedCommand, notify ...string) *hivev1.Resource {
	c.Name = name
	if c.TimeoutSeconds == 0 {
		c.TimeoutSeconds = 20
	}
	return &hivev1.Resource{Key: "command:" + name, Notify: notify, Kind: &hivev1.Resource_Command{Command: c}}
}

type harness struct {
	t    *testing.T
	root string
	e    *converge.Engine
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	testenv.RequireTool(t, "timeout", "sh")
	root := t.TempDir()
	reg, err := converge.NewRegistry(New())
	if err != nil {
		t.Fatal(err)
	}
	e, err := converge.New(converge.Config{Root: root, Runner: converge.ExecRunner{}, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}, reg)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, root: root, e: e}
}

func (h *harness) run(dry bool, secrets map[string][]byte, want string, rs ...*hivev1.Resource) map[string]*hivev1.ResourceResult {
	h.t.Helper()
	rep, err := h.e.Run(context.Background(), &hivev1.NodeState{Resources: rs, Secrets: secrets}, converge.RunOptions{DryRun: dry})
	if err != nil {
		h.t.Fatal(err)
	}
	var got []string
	out := map[string]*hivev1.ResourceResult{}
	for _, r := range rep.GetResults() {
		got = append(got, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
		out[r.GetKey()] = r
		h.t.Logf("  %s %s: %s", r.GetOutcome(), r.GetKey(), r.GetMessage())
	}
	if g := strings.Join(got, " "); g != want {
		h.t.Fatalf("outcomes\n got %s\nwant %s", g, want)
	}
	return out
}

// TestGuardsAndNotify runs real shell commands: creates, unless and
// onlyif guards, and an on_notify command run only when the command that
// notifies it ran (planned in a dry run when it would).
func TestGuardsAndNotify(t *testing.T) {
	h := newHarness(t)
	marker := filepath.Join(h.root, "made")
	log := filepath.Join(h.root, "log")
	rs := []*hivev1.Resource{
		cmd("make", &hivev1.GuardedCommand{Shell: "echo make >> " + log + "; touch " + marker, Creates: "/made"}, "command:after"),
		cmd("after", &hivev1.GuardedCommand{Argv: []string{"/bin/sh", "-c", "echo after >> " + log}, OnNotify: true}),
		cmd("unless", &hivev1.GuardedCommand{Shell: "echo unless >> " + log, Unless: "test -e " + marker}),
		cmd("onlyif", &hivev1.GuardedCommand{Shell: "echo onlyif >> " + log, Onlyif: "test -e " + marker + ".nope"}),
	}
	res := h.run(true, nil, "command:make=PLANNED command:after=PLANNED command:unless=PLANNED command:onlyif=OK", rs...)
	if m := res["command:after"].GetMessage(); !strings.Contains(m, "(notified by command:make)") {
		t.Errorf("dry-run plan of the notified command: %q", m)
	}
	if _, err := os.Stat(log); !os.IsNotExist(err) {
		t.Fatal("dry run ran a command")
	}
	// unless has no edge to make: it may plan before make runs, sees no
	// marker, and runs too.
	h.run(false, nil, "command:make=CHANGED command:after=CHANGED command:unless=CHANGED command:onlyif=OK", rs...)
	b, _ := os.ReadFile(log)
	if got := strings.Fields(string(b)); strings.Join(got, " ") != "make unless after" && strings.Join(got, " ") != "unless make after" {
		t.Fatalf("ran: %q", got)
	}
	res = h.run(false, nil, "command:make=OK command:after=OK command:unless=OK command:onlyif=OK", rs...)
	for k, want := range map[string]string{"command:make": "/made exists", "command:after": "runs only when notified", "command:unless": "unless guard passed", "command:onlyif": "onlyif guard failed"} {
		if got := res[k].GetMessage(); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

// TestTimeoutOutputSecrets: a command that outlives its timeout is killed
// with its children and fails saying so; output is bounded and secrets
// masked; a non-zero exit fails with the exit status and the output's last
// line; a secret without a value fails before anything runs.
func TestTimeoutOutputSecrets(t *testing.T) {
	h := newHarness(t)
	secrets := map[string][]byte{"db_password": []byte("s3cr3t-Value")}
	start := time.Now()
	res := h.run(false, secrets, "command:slow=FAILED command:loud=CHANGED command:bad=FAILED command:nosecret=FAILED",
		cmd("slow", &hivev1.GuardedCommand{Shell: "sleep 60 & sleep 60; wait", TimeoutSeconds: 1, OnNotify: false, Creates: "/never"}),
		cmd("loud", &hivev1.GuardedCommand{Shell: `head -c 10000 /dev/zero | tr '\0' x; echo; echo "pw=$HIVE_SECRET_DB_PASSWORD"; echo "$GREETING"`, Creates: "/never", Secrets: []string{"db_password"}, Environment: []string{"GREETING=hello"}}),
		cmd("bad", &hivev1.GuardedCommand{Shell: "echo working; echo 'disk full' >&2; exit 3", Creates: "/never"}),
		cmd("nosecret", &hivev1.GuardedCommand{Shell: "true", Creates: "/never", Secrets: []string{"absent"}}),
	)
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("run took %s: the timed-out command's children were not killed", d)
	}
	if m := res["command:slow"].GetMessage(); !strings.Contains(m, "sleep 60 & sleep 60; wait: timed out after 1s (killed;") {
		t.Errorf("timeout message %q", m)
	}
	loud := res["command:loud"]
	if d := loud.GetDiff(); len(d) > MaxOutput+40 || !strings.Contains(d, "bytes cut]") || !strings.Contains(d, "pw=<secret:db_password>\nhello\n") || strings.Contains(d, "s3cr3t") {
		t.Errorf("output (%d bytes) not bounded or not masked: …%q", len(d), d[max(0, len(d)-80):])
	}
	if m := loud.GetMessage(); !strings.Contains(m, "exit status 0 after") {
		t.Errorf("success message %q", m)
	}
	if m := res["command:bad"].GetMessage(); !strings.Contains(m, "command failed: echo working; echo 'disk full' >&2; exit 3: exit status 3 after") || !strings.HasSuffix(m, ": disk full") {
		t.Errorf("failure message %q", m)
	}
	if m := res["command:nosecret"].GetMessage(); m != "secret has no value: absent (set it with hivectl secret set)" {
		t.Errorf("missing secret message %q", m)
	}
}

func TestTailFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out")
	os.WriteFile(p, []byte("short"), 0o600)
	if b, cut := tailFile(p, MaxOutput); string(b) != "short" || cut != 0 {
		t.Errorf("tailFile(short) = %q, %d", b, cut)
	}
	os.WriteFile(p, []byte(strings.Repeat("a", MaxOutput)+"END"), 0o600)
	if b, cut := tailFile(p, MaxOutput); len(b) != MaxOutput || cut != 3 || !strings.HasSuffix(string(b), "END") {
		t.Errorf("tailFile(long) = %d bytes, cut %d", len(b), cut)
	}
}
