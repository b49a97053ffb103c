package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
)

// TestMain runs the real main (its exit code included) when the test binary
// is re-executed with HIVE_AGENT_MAIN=1: see startMain.
func TestMain(m *testing.M) {
	if os.Getenv("HIVE_AGENT_MAIN") == "1" {
		os.Args = append([]string{"hive-agent"}, strings.Fields(os.Getenv("HIVE_AGENT_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe to read while a child writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startMain starts hive-agent's main in a child process with args (an
// empty --config, so no /etc/hive/agent.yaml of the machine is read).
func startMain(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(conf, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"--config", conf}, args...)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HIVE_AGENT_MAIN=1", "HIVE_AGENT_ARGS="+strings.Join(args, " "), "NOTIFY_SOCKET=")
	out := &syncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

// exitCode waits for cmd (at most 30s) and returns its exit code.
func exitCode(t *testing.T, cmd *exec.Cmd, out *syncBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err == nil {
			return 0
		}
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		t.Fatalf("wait: %v", err)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("hive-agent did not exit\n%s", out.String())
	}
	return 0
}

// runsThenStops asserts the agent is running (it logged its start and is
// still up a moment later) and exits 0 on SIGTERM.
func runsThenStops(t *testing.T, cmd *exec.Cmd, out *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "hive-agent starting") {
		if time.Now().After(deadline) {
			t.Fatalf("agent did not start\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent ended early: %v\n%s", err, out.String())
	}
	if code := exitCode(t, cmd, out); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, out.String())
	}
}

// TestGossipKeyRequiredOutsideDev: outside --dev an agent that gossips
// refuses to start without --gossip-key-file (exit 1, nothing created,
// the message says how to make and pass a key); with a key, or with
// --no-gossip, it starts.
func TestGossipKeyRequiredOutsideDev(t *testing.T) {
	p := pkitest.New(t)
	f := p.Issue(pki.KindAgent, "web-1")
	dataDir := filepath.Join(t.TempDir(), "data")
	base := []string{"--name", "web-1", "--data-dir", dataDir, "--gossip-addr", "127.0.0.1:0", "--gossip-profile", "local",
		"--coordinator", "127.0.0.1:1", "--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key, "--log-level", "debug"}

	cmd, out := startMain(t, base...)
	if code := exitCode(t, cmd, out); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, out.String())
	}
	for _, want := range []string{"hive-agent: no gossip key", "hivectl tls gossip-key create --dir /etc/hive", "--gossip-key-file /etc/hive/gossip.key", "--dev", "--no-gossip"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "hive-agent starting") {
		t.Errorf("agent started before refusing:\n%s", out.String())
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("refused start touched the data directory: %v", err)
	}

	key, err := gossip.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("with key", func(t *testing.T) {
		cmd, out := startMain(t, append(base, "--gossip-key-file", keyFile)...)
		runsThenStops(t, cmd, out)
	})
	t.Run("no gossip", func(t *testing.T) {
		cmd, out := startMain(t, append(base, "--no-gossip")...)
		runsThenStops(t, cmd, out)
	})
	t.Run("bad key", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "gossip.key")
		os.WriteFile(bad, []byte("c2hvcnQ=\n"), 0o600)
		cmd, out := startMain(t, append(base, "--gossip-key-file", bad)...)
		if code := exitCode(t, cmd, out); code != 1 || !strings.Contains(out.String(), "--gossip-key-file "+bad) {
			t.Fatalf("exit %d\n%s", code, out.String())
		}
	})
}

func flags() (*pflag.FlagSet, map[string]*string, *[]string, *[]string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := map[string]*string{}
	for _, n := range []string{"name", "data-dir", "tls-ca", "tls-cert", "tls-key", "interval", "root", "bootstrap-token-file", "gossip-key-file"} {
		s[n] = fs.String(n, "", "")
	}
	join := fs.StringArray("join", nil, "")
	label := fs.StringArray("label", nil, "")
	fs.Bool("dev", false, "")
	fs.String("config", "", "")
	return fs, s, join, label
}

func TestConfigFileKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	os.WriteFile(p, []byte(`name: web-1
data-dir: /var/lib/hive/agent
join: [10.0.0.1:7402, 10.0.0.2:7402]
labels: {tier: web}
tls-ca: /ca.pem
dev: true
interval: 1m
`), 0o644)
	fs, s, join, label := flags()
	if err := fs.Parse([]string{"--name", "cli-wins"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, p); err != nil {
		t.Fatal(err)
	}
	if *s["name"] != "cli-wins" || *s["data-dir"] != "/var/lib/hive/agent" || *s["tls-ca"] != "/ca.pem" || *s["interval"] != "1m" {
		t.Fatalf("values: name %q data-dir %q tls-ca %q interval %q", *s["name"], *s["data-dir"], *s["tls-ca"], *s["interval"])
	}
	if strings.Join(*join, ",") != "10.0.0.1:7402,10.0.0.2:7402" || strings.Join(*label, ",") != "tier=web" {
		t.Fatalf("join %v label %v", *join, *label)
	}
}

// The packaged /etc/hive/agent.yaml (deploy/config) is accepted as is.
func TestPackagedConfigFile(t *testing.T) {
	fs, s, _, _ := flags()
	if err := applyConfigFile(fs, filepath.Join("..", "..", "deploy", "config", "agent.yaml")); err != nil {
		t.Fatal(err)
	}
	if *s["name"] != "" || *s["data-dir"] != "/var/lib/hive/agent" || !strings.HasPrefix(*s["tls-cert"], "/etc/hive/tls/") ||
		*s["gossip-key-file"] != "/etc/hive/gossip.key" {
		t.Fatalf("name %q data-dir %q tls-cert %q gossip-key-file %q", *s["name"], *s["data-dir"], *s["tls-cert"], *s["gossip-key-file"])
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.yaml")
	os.WriteFile(p, []byte("nmae: x\n"), 0o644)
	fs, _, _, _ := flags()
	if err := applyConfigFile(fs, p); err == nil || !strings.Contains(err.Error(), `unknown key "nmae"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseLabels(t *testing.T) {
	got := map[string]string{}
	if err := parseLabels("f", []byte("# comment\n\ntier = web\nzone=eu-1\n"), got); err != nil {
		t.Fatal(err)
	}
	if got["tier"] != "web" || got["zone"] != "eu-1" || len(got) != 2 {
		t.Fatalf("labels = %v", got)
	}
	err := parseLabels("f", []byte("ok=1\nbroken line\n"), got)
	if err == nil || !strings.Contains(err.Error(), "f:2:") {
		t.Fatalf("err = %v, want f:2", err)
	}
}

// FuzzParseLabels: any input either parses into non-empty trimmed keys or
// fails with a file:line error; it never panics.
func FuzzParseLabels(f *testing.F) {
	f.Add([]byte("tier=web\n# c\nzone = eu\n"))
	f.Add([]byte("=x\n"))
	f.Add([]byte("a=b=c\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got := map[string]string{}
		if err := parseLabels("f", data, got); err != nil {
			if !strings.HasPrefix(err.Error(), "f:") && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		for k := range got {
			if k == "" || k != strings.TrimSpace(k) {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}
