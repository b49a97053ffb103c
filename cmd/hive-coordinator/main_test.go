package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	"github.com/spf13/pflag"
)

// TestMain runs the real main (its exit code included) when the test binary
// is re-executed with HIVE_COORDINATOR_MAIN=1: see runMain.
func TestMain(m *testing.M) {
	if os.Getenv("HIVE_COORDINATOR_MAIN") == "1" {
		os.Args = append([]string{"hive-coordinator"}, strings.Fields(os.Getenv("HIVE_COORDINATOR_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs hive-coordinator's main in a child process with args and
// returns its exit code and stderr.
func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HIVE_COORDINATOR_MAIN=1", "HIVE_COORDINATOR_ARGS="+strings.Join(args, " "), "NOTIFY_SOCKET=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("run hive-coordinator: %v\n%s", err, stderr.String())
	return 0, ""
}

// gossipKeyFile writes a fresh gossip key the way hivectl tls gossip-key
// create does and returns its path.
func gossipKeyFile(t testing.TB) string {
	t.Helper()
	k, err := gossip.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(p, []byte(k+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGossipKeyRequiredOutsideDev: without --gossip-key-file (and without
// --dev) the coordinator exits 1 before creating anything, saying how to make
// and pass a key; with one (and certificates) it starts and becomes ready.
func TestGossipKeyRequiredOutsideDev(t *testing.T) {
	p := pkitest.New(t)
	f := p.Issue(pki.KindCoordinator, "c1")
	dataDir := filepath.Join(t.TempDir(), "data")
	base := []string{"--name", "c1", "--data-dir", dataDir, "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
		"--gossip-addr", "127.0.0.1:0", "--http-addr", "", "--bootstrap-expect", "1", "--gossip-profile", "local",
		"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}

	code, stderr := runMain(t, base...)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"hive-coordinator: no gossip key", "hivectl tls gossip-key create --dir /etc/hive", "--gossip-key-file /etc/hive/gossip.key", "--dev"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("refused start touched the data directory: %v", err)
	}

	// A malformed key is refused with the file named.
	bad := filepath.Join(t.TempDir(), "gossip.key")
	os.WriteFile(bad, []byte("not base64!\n"), 0o600)
	code, stderr = runMain(t, append(base, "--gossip-key-file", bad)...)
	if code != 1 || !strings.Contains(stderr, "--gossip-key-file "+bad) {
		t.Fatalf("bad key: exit %d\n%s", code, stderr)
	}

	// With a key it starts, becomes ready and stops cleanly.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *coordinator.Server, 1)
	errc := make(chan error, 1)
	var logs syncBuffer
	go func() { errc <- run(ctx, append(base, "--gossip-key-file", gossipKeyFile(t)), &logs, ready) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("run with a key ended: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("not ready with a key\n%s", logs.String())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	if strings.Contains(logs.String(), "not encrypted") {
		t.Errorf("warned about encryption with a key:\n%s", logs.String())
	}
}

func startDev(t testing.TB, extra ...string) (*coordinator.Server, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *coordinator.Server, 1)
	errc := make(chan error, 1)
	var logs syncBuffer
	args := append([]string{"--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--gossip-profile", "local", "--log-level", "warn"}, extra...)
	go func() { errc <- run(ctx, args, &logs, ready) }()
	select {
	case s := <-ready:
		return s, func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	case err := <-errc:
		cancel()
		t.Fatalf("run ended: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("dev server not ready")
	}
	cancel()
	return nil, nil
}

func TestDevStartsAndStops(t *testing.T) {
	start := time.Now()
	s, stop := startDev(t)
	t.Logf("ready in %v at %s", time.Since(start), s.GRPCAddr())
	if !s.IsLeader() {
		t.Fatal("dev server is not its own leader")
	}
	stop()
}

// BenchmarkDevStartup reports the time from start to ready for --dev (the
// target is under one second).
func BenchmarkDevStartup(b *testing.B) {
	for i := 0; i < b.N; i++ {
		start := time.Now()
		_, stop := startDev(b)
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-to-ready")
		stop()
	}
}

func TestNoCertificatesOutsideDev(t *testing.T) {
	err := run(context.Background(), []string{"--name", "c1", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--http-addr", "", "--gossip-key-file", gossipKeyFile(t)}, os.Stderr, nil)
	if err == nil || !strings.Contains(err.Error(), "hivectl tls ca create") || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("err = %v", err)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("name: from-file\ndata-dir: /var/x\njoin: [a:7402, b:7402]\nbootstrap-expect: 3\ndev: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	name := fs.String("name", "", "")
	dataDir := fs.String("data-dir", "", "")
	join := fs.StringArray("join", nil, "")
	expect := fs.Int("bootstrap-expect", 0, "")
	dev := fs.Bool("dev", false, "")
	if err := fs.Parse([]string{"--name", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	from := map[string]bool{}
	if err := applyConfigFile(fs, path, from); err != nil {
		t.Fatal(err)
	}
	if *name != "from-flag" || *dataDir != "/var/x" || strings.Join(*join, ",") != "a:7402,b:7402" || *expect != 3 || !*dev {
		t.Fatalf("name %q dir %q join %v expect %d dev %v", *name, *dataDir, *join, *expect, *dev)
	}
	// Underscores and nested maps are accepted: tls: {ca: x} is --tls-ca.
	tlsCA := fs.String("tls-ca", "", "")
	if err := os.WriteFile(path, []byte("data_dir: /var/y\ntls:\n  ca: /etc/ca.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path, from); err != nil {
		t.Fatal(err)
	}
	if *tlsCA != "/etc/ca.pem" {
		t.Fatalf("tls-ca = %q", *tlsCA)
	}
	if err := os.WriteFile(path, []byte("nmae: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path, from); err == nil || !strings.Contains(err.Error(), `unknown key "nmae"`) {
		t.Fatalf("typo: %v", err)
	}
}

// TestSystemdNotify: under systemd (NOTIFY_SOCKET set) the coordinator
// says READY=1 once ready, pings WATCHDOG=1, and STOPPING=1 on shutdown.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	_, stop := startDev(t)
	got := map[string]bool{}
	buf := make([]byte, 256)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for !got["READY=1"] || !got["WATCHDOG=1"] {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v (got %v)", err, got)
		}
		got[string(buf[:n])] = true
	}
	stop()
	for !got["STOPPING=1"] {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read notify socket: %v (got %v)", err, got)
		}
		got[string(buf[:n])] = true
	}
}

// TestPackagedConfig: the coordinator.yaml the packages install parses, and
// its keys land on the flags.
func TestPackagedConfig(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	name := fs.String("name", "host", "")
	dataDir := fs.String("data-dir", "", "")
	for _, f := range []string{"grpc-addr", "raft-addr", "gossip-addr", "http-addr", "tls-ca", "tls-cert", "tls-key", "gossip-key-file"} {
		fs.String(f, "", "")
	}
	fs.StringArray("join", nil, "")
	expect := fs.Int("bootstrap-expect", 0, "")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, filepath.Join("..", "..", "deploy", "config", "coordinator.yaml"), map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if *name != "host" || *dataDir != "/var/lib/hive/coordinator" || *expect != 3 || fs.Lookup("tls-ca").Value.String() == "" || fs.Lookup("grpc-addr").Value.String() != ":7400" ||
		fs.Lookup("gossip-key-file").Value.String() != "/etc/hive/gossip.key" {
		t.Fatalf("name %q data %q expect %d tls-ca %q", *name, *dataDir, *expect, fs.Lookup("tls-ca").Value)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent loggers
// (raft, memberlist and slog write from their own goroutines, some of them
// still finishing after run returns).
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
