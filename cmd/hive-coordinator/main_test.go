package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator"
	"github.com/spf13/pflag"
)

func startDev(t testing.TB, extra ...string) (*coordinator.Server, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *coordinator.Server, 1)
	errc := make(chan error, 1)
	var logs bytes.Buffer
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
	err := run(context.Background(), []string{"--name", "c1", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0", "--http-addr", ""}, os.Stderr, nil)
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
	if err := os.WriteFile(path, []byte("nmae: typo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, path, from); err == nil || !strings.Contains(err.Error(), `unknown key "nmae"`) {
		t.Fatalf("typo: %v", err)
	}
}
