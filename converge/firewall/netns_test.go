package firewall

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/testenv"
)

// runID makes the names of this test binary's namespaces unique.
var (
	runID = fmt.Sprintf("%dx%04x", os.Getpid(), rand.IntN(0x10000))
	nsSeq atomic.Int32
)

// netns is a network namespace created for one test.
type netns struct {
	t    *testing.T
	name string
}

// newNetnsB is newNetns for benchmarks.
func newNetnsB(b *testing.B) *netns {
	b.Helper()
	testenv.RequireNetns(b)
	testenv.RequireTool(b, "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore")
	name := fmt.Sprintf("hfw-%s-%d", runID, nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	return &netns{name: name}
}

// newNetns creates a namespace "hfw-<run>-<n>" with lo up, deleted in
// t.Cleanup. It requires root, ip and the iptables tools.
func newNetns(t *testing.T) *netns {
	t.Helper()
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore")
	n := &netns{t: t, name: fmt.Sprintf("hfw-%s-%d", runID, nsSeq.Add(1))}
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	n.ip("link", "set", "lo", "up")
	return n
}

// ip runs an ip command inside the namespace.
func (n *netns) ip(args ...string) string {
	n.t.Helper()
	return run(n.t, "ip", append([]string{"-n", n.name}, args...)...)
}

// exec runs a command inside the namespace.
func (n *netns) exec(stdin string, name string, args ...string) string {
	n.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s %v in %s: %v\n%s", name, args, n.name, err, out)
	}
	return string(out)
}

// save returns iptables-save (or ip6tables-save) output without comments.
func (n *netns) save(f Family) string {
	n.t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(n.exec("", f.save()), "\n") {
		if !strings.HasPrefix(l, "#") && l != "" {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// runner returns a converge.Runner that runs every command inside the
// namespace through `ip netns exec`.
func (n *netns) runner() converge.Runner { return nsRunner{ns: n.name} }

type nsRunner struct{ ns string }

func (r nsRunner) Run(ctx context.Context, c converge.Cmd) (converge.Output, error) {
	c.Args = append([]string{"netns", "exec", r.ns, c.Name}, c.Args...)
	c.Name = "ip"
	return converge.ExecRunner{}.Run(ctx, c)
}

// do runs fn on an OS thread switched into the namespace, so sockets it
// creates (net.Listen, net.Dial) live there.
func (n *netns) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is not unlocked if switching back fails: it then dies
		// with the goroutine instead of serving others in the wrong netns.
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + n.name)
		if err != nil {
			errc <- err
			runtime.UnlockOSThread()
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.name, err)
			runtime.UnlockOSThread()
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// link connects two namespaces with a veth pair "veth0" in each, with the
// given IPv4 addresses (/24) and IPv6 addresses (/64).
func link(t *testing.T, a, b *netns, addrA, addrB, addr6A, addr6B string) {
	t.Helper()
	run(t, "ip", "link", "add", "veth0", "netns", a.name, "type", "veth", "peer", "name", "veth0", "netns", b.name)
	for _, x := range []struct {
		n      *netns
		v4, v6 string
	}{{a, addrA, addr6A}, {b, addrB, addr6B}} {
		x.n.ip("addr", "add", x.v4+"/24", "dev", "veth0")
		x.n.ip("-6", "addr", "add", x.v6+"/64", "dev", "veth0", "nodad")
		x.n.ip("link", "set", "veth0", "up")
	}
	// Wait for both ends to have carrier, so the first packets are not lost.
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range []*netns{a, b} {
		for !strings.Contains(n.ip("link", "show", "veth0"), "LOWER_UP") {
			if time.Now().After(deadline) {
				t.Fatalf("veth0 in %s has no carrier", n.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
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
