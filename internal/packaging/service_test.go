package packaging

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

// binaries returns a directory holding hive-agent, hive-coordinator,
// hive-repo and hivectl built from this tree, once per test binary
// (shared with the netlab tests through netlab.Build).
func binaries(t *testing.T) string {
	t.Helper()
	testenv.RequireTool(t, "go")
	var names []string
	for _, s := range Packages {
		names = append(names, s.Binary)
	}
	return filepath.Dir(netlab.Build(t, names...)["hivectl"])
}

// unitDirectives reads the [Service] section of a packaged unit file.
func unitDirectives(t *testing.T, unit string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "deploy", "systemd", unit))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok && section == "[Service]" {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// notifySocket is the service manager's end of the sd_notify protocol: a
// unixgram socket collecting the datagrams a service sends.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	// Short path: unix socket names are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "hn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifySocket{path: p, msgs: make(chan string, 256)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			for _, l := range strings.Split(string(buf[:k]), "\n") {
				if l != "" {
					select {
					case n.msgs <- l:
					default:
					}
				}
			}
		}
	}()
	return n
}

// wait returns once a message equal to want arrives, or fails t.
func (n *notifySocket) wait(t *testing.T, want string, d time.Duration, logs *syncBuffer) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("notify socket closed before %s", want)
			}
			if m == want {
				return
			}
		case <-timer.C:
			t.Fatalf("no %s on NOTIFY_SOCKET within %v (Type=notify/WatchdogSec in the unit need it)\nservice log:\n%s", want, d, logs.String())
		}
	}
}

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

// startUnit starts the binary of a packaged unit the way systemd would:
// the unit's ExecStart command line (binary and --config path mapped to
// the test's), NOTIFY_SOCKET and WATCHDOG_USEC set. For Type=notify it
// checks the sd_notify protocol the unit relies on: READY=1, then
// WATCHDOG=1 pings when WatchdogSec is set; for Type=exec that the process
// stays up. Then ready() runs (the service is in use), and the service
// must exit cleanly on SIGTERM within the unit's stop timeout.
func startUnit(t *testing.T, unit, bin, config string, ready func()) {
	t.Helper()
	d := unitDirectives(t, unit)
	typ := strings.Join(d["Type"], ",")
	if typ != "notify" && typ != "exec" {
		t.Fatalf("%s: Type=%s, want notify or exec", unit, typ)
	}
	exec0 := d["ExecStart"]
	if len(exec0) != 1 {
		t.Fatalf("%s: ExecStart=%v", unit, exec0)
	}
	argv := strings.Fields(exec0[0])
	for i, a := range argv {
		switch {
		case i == 0:
			argv[i] = filepath.Join(bin, filepath.Base(a))
		case strings.HasPrefix(a, ConfigDir+"/"):
			argv[i] = config
		}
	}
	ns := newNotifySocket(t)
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", unit, logs.String())
		}
	})
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.path, "WATCHDOG_USEC=2000000")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	if typ == "notify" {
		ns.wait(t, "READY=1", 30*time.Second, logs)
		if len(d["WatchdogSec"]) > 0 {
			ns.wait(t, "WATCHDOG=1", 2*time.Second, logs)
			ns.wait(t, "WATCHDOG=1", 2*time.Second, logs)
		}
	} else {
		select {
		case <-exited:
			t.Fatalf("%s: exited at start: %v\n%s", unit, waitErr, logs.String())
		case <-time.After(2 * time.Second):
		}
	}
	if ready != nil {
		ready()
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("%s: exit after SIGTERM: %v\n%s", unit, waitErr, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still running 30s after SIGTERM\n%s", unit, logs.String())
	}
}

// TestRepoUnitRunsPackagedConfig starts hive-repo with the packaged unit's
// command line and the packaged /etc/hive/repo.yaml (paths moved into a
// temporary directory, the signing key and upload token made as the file's
// comments say), speaking the sd_notify protocol systemd uses.
func TestRepoUnitRunsPackagedConfig(t *testing.T) {
	testenv.SkipShort(t)
	bin := binaries(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "repo-signing.asc")
	run(t, filepath.Join(bin, "hive-repo"), "keygen", "--out", key)
	writeFile(t, filepath.Join(dir, "upload-token"), "secret-token\n")
	cfg := rewriteConfig(t, "repo.yaml", map[string]string{
		"addr: :7480":                                    "addr: 127.0.0.1:0",
		"/var/lib/hive/repo":                             filepath.Join(dir, "data"),
		"/etc/hive/repo-signing.asc":                     key,
		"upload-token-file: /etc/hive/repo-upload-token": "upload-token-file: " + filepath.Join(dir, "upload-token"),
	})
	startUnit(t, "hive-repo.service", bin, cfg, nil)
}

// rewriteConfig copies a packaged default configuration into a temporary
// file, replacing each old string (which must occur) by its new one.
func rewriteConfig(t *testing.T, name string, repl map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "config", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, new := range repl {
		if !strings.Contains(s, old) {
			t.Fatalf("packaged %s no longer contains %q", name, old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	p := filepath.Join(t.TempDir(), name)
	writeFile(t, p, s)
	return p
}

// pkiFiles makes a site CA, coordinator certificates and the gossip key
// (gossip.key) with the real hivectl, as docs/quickstart.md does, and
// returns the directory.
func pkiFiles(t *testing.T, bin string, coordinators ...string) string {
	t.Helper()
	dir := t.TempDir()
	hivectl := filepath.Join(bin, "hivectl")
	cmd := exec.Command(hivectl, "tls", "ca", "create", "--dir", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hivectl tls ca create: %v\n%s", err, out)
	}
	for _, c := range coordinators {
		run(t, hivectl, "tls", "cert", "create", "--coordinator", c, "--ip", "127.0.0.1", "--dir", dir)
	}
	run(t, hivectl, "tls", "gossip-key", "create", "--dir", dir)
	return dir
}

// TestCoordinatorUnitRunsPackagedConfig starts hive-coordinator with the
// packaged unit's command line and the packaged /etc/hive/coordinator.yaml
// (loopback addresses, a temporary data directory, one server, TLS files
// made by hivectl), and stops it as systemd would.
func TestCoordinatorUnitRunsPackagedConfig(t *testing.T) {
	testenv.SkipShort(t)
	bin := binaries(t)
	pki := pkiFiles(t, bin, "c1")
	dir := t.TempDir()
	cfg := rewriteConfig(t, "coordinator.yaml", map[string]string{
		"# name: c1":                                 "name: c1",
		"data-dir: /var/lib/hive/coordinator":        "data-dir: " + filepath.Join(dir, "data"),
		"grpc-addr: :7400":                           "grpc-addr: 127.0.0.1:0",
		"raft-addr: :7401":                           "raft-addr: 127.0.0.1:0",
		"gossip-addr: :7402":                         "gossip-addr: 127.0.0.1:0",
		"http-addr: :7403":                           "http-addr: 127.0.0.1:0",
		"bootstrap-expect: 3":                        "bootstrap-expect: 1",
		"tls-ca: /etc/hive/tls/ca.pem":               "tls-ca: " + filepath.Join(pki, "ca.pem"),
		"tls-cert: /etc/hive/tls/coordinator.pem":    "tls-cert: " + filepath.Join(pki, "c1.pem"),
		"tls-key: /etc/hive/tls/coordinator-key.pem": "tls-key: " + filepath.Join(pki, "c1-key.pem"),
		"gossip-key-file: /etc/hive/gossip.key":      "gossip-key-file: " + filepath.Join(pki, "gossip.key"),
	})
	startUnit(t, "hive-coordinator.service", bin, cfg, func() {
		// Served from the packaged data directory layout: raft on disk.
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Stat(filepath.Join(dir, "data", "raft.db")); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no raft.db in the data directory 30s after start")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}
