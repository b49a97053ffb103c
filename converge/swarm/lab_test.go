package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"golang.org/x/sys/unix"

	"github.com/hivefleet/hive/internal/testenv"
)

// The swarm tests run real Docker engines (Debian's dockerd), one per
// network namespace, each with its own config file, data root, exec root,
// pid file and API socket under a temporary directory, plugged into one
// bridge that lives in a namespace of its own. The host's dockerd, its
// socket and its iptables are never touched (--iptables=false,
// --bridge=none, and the namespaces' own network stacks).

var runID = fmt.Sprintf("%dx%04x", os.Getpid(), rand.IntN(0x10000))

type lab struct {
	t      *testing.T
	sw     string // switch namespace
	nodes  []*node
	prefix string
}

type node struct {
	t    *testing.T
	name string
	ns   string
	addr string
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan struct{}
	// iptables lets the engine program the namespace's own iptables
	// (the ingress routing mesh needs it; the host's tables are not
	// the namespace's).
	iptables bool
}

func newLab(t *testing.T, names ...string) *lab {
	t.Helper()
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "dockerd", "containerd", "nsenter")
	testenv.SkipShort(t)
	l := &lab{t: t, prefix: "hsw-" + runID}
	l.sw = l.prefix + "-sw"
	run(t, "ip", "netns", "add", l.sw)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.sw).Run() })
	run(t, "ip", "-n", l.sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", l.sw, "link", "set", "br0", "up")
	for i, name := range names {
		n := &node{t: t, name: name, ns: l.prefix + "-" + name, addr: fmt.Sprintf("10.79.0.%d", 11+i)}
		run(t, "ip", "netns", "add", n.ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.ns).Run() })
		port := "p" + strconv.Itoa(i)
		run(t, "ip", "link", "add", "eth0", "netns", n.ns, "type", "veth", "peer", "name", port, "netns", l.sw)
		run(t, "ip", "-n", l.sw, "link", "set", port, "master", "br0", "up")
		run(t, "ip", "-n", n.ns, "addr", "add", n.addr+"/24", "dev", "eth0")
		run(t, "ip", "-n", n.ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
		// Short paths: unix sockets (containerd's too) live below dir.
		dir, err := os.MkdirTemp("/tmp", "hsw")
		if err != nil {
			t.Fatal(err)
		}
		n.dir = dir
		n.sock = filepath.Join(dir, "d.sock")
		if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			n.stop()
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(n.dir, "log")); err == nil {
					lines := strings.Split(string(b), "\n")
					if len(lines) > 40 {
						lines = lines[len(lines)-40:]
					}
					t.Logf("dockerd %s log tail:\n%s", n.name, strings.Join(lines, "\n"))
				}
			}
			// dockerd bind-mounts its sandboxes' network namespaces below
			// its exec root; a stopped engine may leave them mounted.
			unmountBelow(n.dir)
			for i := 0; i < 10; i++ {
				_ = os.RemoveAll(n.dir)
				if _, err := os.Stat(n.dir); err != nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
		l.nodes = append(l.nodes, n)
	}
	// Start the engines in parallel: each takes a couple of seconds.
	errs := make(chan error, len(l.nodes))
	for _, n := range l.nodes {
		go func() { errs <- n.start() }()
	}
	for range l.nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// start runs dockerd in the node's namespace. nsenter switches only the
// network namespace: `ip netns exec` would remount /sys and hide the
// cgroup mounts dockerd needs.
func (n *node) start() error {
	logf, err := os.OpenFile(filepath.Join(n.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	_ = os.Remove(n.sock)
	args := []string{"--net=/run/netns/" + n.ns, "dockerd",
		"--config-file", filepath.Join(n.dir, "daemon.json"),
		"--data-root", filepath.Join(n.dir, "data"),
		"--exec-root", filepath.Join(n.dir, "x"),
		"--pidfile", filepath.Join(n.dir, "pid"),
		"-H", "unix://" + n.sock,
		"--ip6tables=false", "--bridge=none",
		"--storage-driver=vfs"}
	if !n.iptables {
		args = append(args, "--iptables=false")
	}
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dockerd %s: %w", n.name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(n.done) }()
	cli, err := client.New(client.WithHost("unix://" + n.sock))
	if err != nil {
		return err
	}
	defer cli.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Ping(ctx, client.PingOptions{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("dockerd %s exited during start (see %s/log)", n.name, n.dir)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd %s not answering: %v", n.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop terminates dockerd (and so its containerd) and waits.
func (n *node) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
}

// dial connects from inside the node's namespace (a thread switched into
// it), like the agent running on that node would.
func (n *node) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.ns)
		if err != nil {
			ch <- res{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, err}
			return
		}
		c, derr := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			ch <- res{nil, fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{c, derr}
	}()
	r := <-ch
	return r.c, r.err
}

// unmountBelow detaches every mount below dir (deepest first).
func unmountBelow(dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = unix.Unmount(points[i], unix.MNT_DETACH)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}
