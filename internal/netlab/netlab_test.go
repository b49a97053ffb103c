package netlab_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/internal/testenv"
)

// The test binary doubles as the programs run inside the namespaces: with
// NETLAB_HELPER set it is a tiny TCP echo server or client instead of a
// test run (a namespace belongs to an OS thread, so real processes are
// used, as for the real binaries).
func TestMain(m *testing.M) {
	switch os.Getenv("NETLAB_HELPER") {
	case "":
		os.Exit(m.Run())
	case "serve":
		os.Exit(serve(os.Getenv("NETLAB_ADDR")))
	case "dial":
		os.Exit(dial(os.Getenv("NETLAB_ADDR")))
	default:
		fmt.Fprintln(os.Stderr, "unknown NETLAB_HELPER")
		os.Exit(2)
	}
}

// serve echoes one line back on every connection.
func serve(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("listening on", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "echo %s", line)
		}()
	}
}

// dial sends one line and prints the answer; it fails after one second.
func dial(addr string) int {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "ping\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Print(line)
	return 0
}

func startServer(t *testing.T, h *netlab.Host, name string) *netlab.Proc {
	t.Helper()
	p := h.StartEnv(name, []string{"NETLAB_HELPER=serve", "NETLAB_ADDR=" + h.Addr + ":9000"}, os.Args[0])
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Log(), "listening on") {
		if time.Now().After(deadline) || !p.Running() {
			t.Fatalf("echo server on %s did not start:\n%s", h.Name, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

// tcp dials to:9000 from inside from's namespace.
func tcp(from, to *netlab.Host) (string, error) {
	cmd := from.Command(context.Background(), os.Args[0])
	// atexit_sleep_ms: under -race the helper would sleep 1s before exiting.
	cmd.Env = append(os.Environ(), "NETLAB_HELPER=dial", "NETLAB_ADDR="+to.Addr+":9000", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustReach(t *testing.T, from, to *netlab.Host) {
	t.Helper()
	out, err := tcp(from, to)
	if err != nil || out != "echo ping" {
		t.Fatalf("%s -> %s: want \"echo ping\", got %q (%v)", from, to, out, err)
	}
}

func mustNotReach(t *testing.T, from, to *netlab.Host) {
	t.Helper()
	out, err := tcp(from, to)
	if err == nil {
		t.Fatalf("%s -> %s: reached, want no connectivity (got %q)", from, to, out)
	}
}

func nsList(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	return string(out)
}

func TestTwoHosts(t *testing.T) {
	lab := netlab.New(t)
	h1 := lab.AddHost("h1")
	h2 := lab.AddHost("h2")
	if h1.Addr == h2.Addr || !strings.HasPrefix(h1.Addr, "10.2") {
		t.Fatalf("addresses: %s %s", h1.Addr, h2.Addr)
	}
	if !strings.Contains(h1.NS, lab.ID()) || !strings.Contains(h2.NS, lab.ID()) {
		t.Fatalf("namespace names %s %s lack the run id %s", h1.NS, h2.NS, lab.ID())
	}
	// Each host has its own address on eth0 and nothing of the other's.
	out, err := h1.Run(context.Background(), "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(string(out), h1.Addr+"/32") || strings.Contains(string(out), h2.Addr) {
		t.Fatalf("h1 eth0: %s %v", out, err)
	}

	srv := startServer(t, h1, "echo")
	mustReach(t, h2, h1)

	// Link down: cut off, both ways, silently (a timeout, as with a pulled
	// cable, not an ICMP error); up again: back.
	h1.Cut()
	if out, err := tcp(h2, h1); err == nil || !strings.Contains(out, "i/o timeout") {
		t.Fatalf("h2 -> cut h1: want a timeout, got %q (%v)", out, err)
	}
	if out, err := tcp(h1, h2); err == nil || !strings.Contains(out, "i/o timeout") {
		t.Fatalf("cut h1 -> h2: want a timeout, got %q (%v)", out, err)
	}
	h1.Heal()
	mustReach(t, h2, h1)

	// kill -9 and restart.
	pid := srv.Pid()
	srv.Kill()
	if srv.Running() {
		t.Fatal("server still running after Kill")
	}
	if err := srv.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("exit status after kill -9: %v", err)
	}
	mustNotReach(t, h2, h1)
	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(srv.Log(), "listening on") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if srv.Pid() == pid {
		t.Fatal("restart kept the old pid")
	}
	mustReach(t, h2, h1)
	if n := strings.Count(srv.Log(), "---- netlab: start #"); n != 2 {
		t.Fatalf("log has %d starts, want 2:\n%s", n, srv.Log())
	}

	// SIGTERM stop.
	if err := srv.Stop(5 * time.Second); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Fatalf("stop: %v", err)
	}
}

func TestDrop(t *testing.T) {
	lab := netlab.New(t)
	h1, h2, h3 := lab.AddHost("h1"), lab.AddHost("h2"), lab.AddHost("h3")
	startServer(t, h1, "echo")
	mustReach(t, h2, h1)
	undo := h1.Drop(h2)
	mustNotReach(t, h2, h1)
	mustReach(t, h3, h1) // only the pair is cut
	undo()
	mustReach(t, h2, h1)
}

func TestNetem(t *testing.T) {
	lab := netlab.New(t)
	h1, h2 := lab.AddHost("h1"), lab.AddHost("h2")
	startServer(t, h1, "echo")
	err := h2.Netem("delay", "200ms")
	if errors.Is(err, netlab.ErrNetemUnavailable) {
		t.Skip("kernel has no sch_netem: Host.Netem returns ErrNetemUnavailable (checked)")
	}
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	mustReach(t, h2, h1)
	// connect + one request: at least two delayed packets from h2.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("round trips took %v with 200ms delay", d)
	}
	if err := h2.Netem(); err != nil {
		t.Fatal(err)
	}
}

// Two labs at once (as two parallel test runs would make) get different
// names and do not see each other; teardown removes every namespace.
func TestIsolationAndTeardown(t *testing.T) {
	testenv.SkipShort(t) // the checks after the subtest need it to have run
	testenv.RequireNetns(t)
	var names []string
	t.Run("labs", func(t *testing.T) {
		a, b := netlab.New(t), netlab.New(t)
		if a.ID() == b.ID() {
			t.Fatalf("same run id %s", a.ID())
		}
		a1, b1 := a.AddHost("x"), b.AddHost("x")
		a2 := a.AddHost("y")
		if a1.NS == b1.NS {
			t.Fatalf("same namespace %s", a1.NS)
		}
		startServer(t, a1, "echo")
		mustReach(t, a2, a1)
		// b1 is on another switch: even with a2's address it cannot reach a1.
		if out, err := b1.Run(context.Background(), "ip", "addr", "add", a2.Addr+"/32", "dev", "eth0"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		mustNotReach(t, b1, a1)
		names = []string{a1.NS, a2.NS, b1.NS}
		if l := nsList(t); !strings.Contains(l, a1.NS) {
			t.Fatalf("namespace %s missing from:\n%s", a1.NS, l)
		}
	})
	l := nsList(t)
	for _, n := range names {
		if strings.Contains(l, n) {
			t.Errorf("namespace %s left after teardown", n)
		}
	}
	// No test of this binary runs in parallel: nothing of this process's
	// runs may remain.
	if mine := fmt.Sprintf("%s%dx", netlab.Prefix, os.Getpid()); strings.Contains(l, mine) {
		t.Errorf("namespaces of this process left after teardown:\n%s", l)
	}
}

// failingTB is a test whose Failed reports true, recording what is logged.
type failingTB struct {
	*testing.T
	logs *[]string
}

func (f failingTB) Failed() bool { return true }
func (f failingTB) Logf(format string, args ...any) {
	*f.logs = append(*f.logs, fmt.Sprintf(format, args...))
}

// When a test fails, the teardown dumps each process's log.
func TestLogsDumpedOnFailure(t *testing.T) {
	testenv.SkipShort(t) // the checks after the subtest need it to have run
	testenv.RequireNetns(t)
	var logs []string
	t.Run("failing", func(t *testing.T) {
		lab := netlab.New(failingTB{T: t, logs: &logs})
		h := lab.AddHost("h1")
		startServer(t, h, "echo")
	})
	all := strings.Join(logs, "\n")
	if !strings.Contains(all, "==== log of h1/echo") || !strings.Contains(all, "listening on") {
		t.Fatalf("teardown of a failed test did not dump the process log; logged:\n%s", all)
	}
}

// A host is usable as soon as AddHost (or Heal) returns: its first packet
// gets through, also when many links change at once (the kernel then
// applies carrier changes late; a first ARP request used to be lost, giving
// a one-second stall or a failed connect around the 50th host).
func TestManyHostsReachableAtOnce(t *testing.T) {
	lab := netlab.New(t)
	h0 := lab.AddHost("h0")
	startServer(t, h0, "echo")
	for i := 1; i < 60; i++ {
		h := lab.AddHost(fmt.Sprintf("a%d", i))
		mustReach(t, h, h0) // one attempt, one second
	}
	// Routed, not bridged: h0 talked to 59 hosts and knows one neighbour,
	// the switch (the kernel's neighbour table is shared by all namespaces).
	out, err := h0.Run(context.Background(), "ip", "neigh", "show", "dev", "eth0")
	if n := strings.Count(strings.TrimSpace(string(out)), "\n") + 1; err != nil || n > 1 {
		t.Fatalf("h0 has %d neighbour entries, want 1 (the gateway): %s %v", n, out, err)
	}
	last := lab.Hosts()[59]
	for i := 0; i < 3; i++ {
		last.Cut()
		last.Heal()
		mustReach(t, last, h0)
	}
}
