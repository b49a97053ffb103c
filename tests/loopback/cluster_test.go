// Package loopback holds benchmarks that run real hive-coordinator and
// hivectl processes with mutual TLS on 127.0.0.1 (no namespaces, no root):
// what one operator's command costs, and how long a push waits when the
// raft leader is killed.
package loopback

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/internal/netlab"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// coord is one hive-coordinator process.
type coord struct {
	name                       string
	grpc, raft, gossip, httpAd string
	data                       string
	args                       []string
	cmd                        *exec.Cmd
	log                        *bytes.Buffer
	exited                     chan struct{}
}

// lbCluster is three coordinators on loopback.
type lbCluster struct {
	t      testing.TB
	bin    map[string]string
	dir    string
	pki    string
	coords []*coord
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newLBCluster(t testing.TB, n int) *lbCluster {
	t.Helper()
	c := &lbCluster{t: t, bin: netlab.Build(t, "hive-coordinator", "hivectl"), dir: t.TempDir()}
	c.pki = filepath.Join(c.dir, "pki")
	c.hivectl("tls", "ca", "create", "--dir", c.pki)
	c.hivectl("tls", "cert", "create", "--admin", "admin", "--dir", c.pki)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(c.pki, "gossip.key")
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		co := &coord{name: fmt.Sprintf("c%d", i), grpc: freePort(t), raft: freePort(t), gossip: freePort(t), httpAd: freePort(t)}
		co.data = filepath.Join(c.dir, co.name)
		c.hivectl("tls", "cert", "create", "--coordinator", co.name, "--ip", "127.0.0.1", "--dir", c.pki)
		c.coords = append(c.coords, co)
	}
	for _, co := range c.coords {
		co.args = []string{"--name", co.name, "--data-dir", co.data,
			"--grpc-addr", co.grpc, "--raft-addr", co.raft, "--gossip-addr", co.gossip, "--http-addr", co.httpAd,
			"--bootstrap-expect", fmt.Sprint(n), "--gossip-key-file", keyFile, "--log-level", logLevel(),
			"--tls-ca", filepath.Join(c.pki, "ca.pem"),
			"--tls-cert", filepath.Join(c.pki, co.name+".pem"),
			"--tls-key", filepath.Join(c.pki, co.name+"-key.pem")}
		for _, o := range c.coords {
			if o != co {
				co.args = append(co.args, "--join", o.gossip)
			}
		}
		c.start(co)
	}
	t.Cleanup(func() {
		for _, co := range c.coords {
			c.stop(co)
		}
	})
	c.waitHealthy(60 * time.Second)
	return c
}

func (c *lbCluster) hivectl(args ...string) []byte {
	c.t.Helper()
	out, err := exec.Command(c.bin["hivectl"], args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("hivectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (c *lbCluster) start(co *coord) {
	c.t.Helper()
	co.log = &bytes.Buffer{}
	co.cmd = exec.Command(c.bin["hive-coordinator"], co.args...)
	co.cmd.Stdout, co.cmd.Stderr = co.log, co.log
	if err := co.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	co.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { _ = cmd.Wait(); close(ch) }(co.cmd, co.exited)
}

// kill sends SIGKILL and reaps the process.
func (c *lbCluster) kill(co *coord) {
	_ = co.cmd.Process.Signal(syscall.SIGKILL)
	<-co.exited
}

func (c *lbCluster) stop(co *coord) {
	select {
	case <-co.exited:
		return
	default:
	}
	_ = co.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-co.exited:
	case <-time.After(10 * time.Second):
		c.kill(co)
	}
}

var hc = &http.Client{Timeout: 2 * time.Second}

// healthz returns a coordinator's /healthz status and body.
func healthz(co *coord) (int, string) {
	resp, err := hc.Get("http://" + co.httpAd + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// waitHealthy waits until every coordinator answers /healthz 200 and one
// of them says it leads; it returns the leader.
func (c *lbCluster) waitHealthy(timeout time.Duration) *coord {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var leader *coord
		ok := true
		for _, co := range c.coords {
			code, body := healthz(co)
			ok = ok && code == http.StatusOK
			if strings.Contains(body, "state=Leader") {
				leader = co
			}
		}
		if ok && leader != nil {
			return leader
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, co := range c.coords {
		code, body := healthz(co)
		c.t.Logf("%s: %d %s\n%s", co.name, code, body, co.log.String())
	}
	c.t.Fatalf("cluster not healthy within %v", timeout)
	return nil
}

// addrs lists the gRPC addresses, first first.
func (c *lbCluster) addrs(first *coord) []string {
	out := []string{first.grpc}
	for _, co := range c.coords {
		if co != first {
			out = append(out, co.grpc)
		}
	}
	return out
}

func (c *lbCluster) ctlArgs(addrs []string, args ...string) []string {
	for _, a := range addrs {
		args = append(args, "--addr", a)
	}
	return append(args, "--ca", filepath.Join(c.pki, "ca.pem"),
		"--cert", filepath.Join(c.pki, "admin.pem"), "--key", filepath.Join(c.pki, "admin-key.pem"))
}

// dial returns a client library connection with failover over addrs, as
// hivectl makes.
func (c *lbCluster) dial(addrs []string) *client.Conn {
	c.t.Helper()
	cfg := client.DefaultConfig()
	cfg.Addrs = addrs
	cfg.CA, cfg.Cert, cfg.Key = filepath.Join(c.pki, "ca.pem"), filepath.Join(c.pki, "admin.pem"), filepath.Join(c.pki, "admin-key.pem")
	cfg.Failover = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	return conn
}

// siteYAML is a small valid site whose one file names v.
func siteYAML(v string) string {
	return fmt.Sprintf("site: loopback\nselectors:\n  - match: {tier: web}\n    roles: [web]\nroles:\n  web:\n    files:\n      - path: /srv/loopback/v\n        mode: \"0644\"\n        content: %q\n", "version "+v+"\n")
}

// pushSite pushes the site of v as hivectl does: a consistent read of the
// current generation (the base), then the push based on it.
func pushSite(ctx context.Context, conn *client.Conn, s *hivev1.Site, based *time.Time) (uint64, error) {
	list, err := conn.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1, Consistent: true})
	if err != nil {
		return 0, err
	}
	*based = time.Now()
	resp, err := conn.Push(ctx, &hivev1.PushRequest{Site: s, BaseGeneration: list.GetCurrent()})
	if err != nil {
		return 0, err
	}
	return resp.GetGeneration(), nil
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p * float64(len(s)-1))
	return s[i]
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// procCPU is the CPU time of a running process (utime+stime).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

// procPeakRSS is VmHWM of a running process.
func procPeakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			var kb int64
			fmt.Sscan(strings.Fields(l)[1], &kb)
			return kb << 10
		}
	}
	return 0
}

func TestMain(m *testing.M) {
	code := m.Run()
	netlab.CleanupBuilds()
	os.Exit(code)
}

func logLevel() string {
	if os.Getenv("HIVE_BENCH_DEBUG") != "" {
		return "debug"
	}
	return "warn"
}
