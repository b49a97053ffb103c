package drbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The tests below run the real drbdadm, drbdmeta, blkid and dd on loop
// devices, inside a network namespace that holds the node's address (drbdadm
// adjust checks it). Only the kernel interface, drbdsetup, is replaced by a
// script that records its arguments, because this machine has no drbd
// kernel module (see TestKernelModule).

var (
	runID = fmt.Sprintf("%dx%04x", os.Getpid(), rand.IntN(0x10000))
	seq   atomic.Int32
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopDevice attaches a sparse file of size MiB; fill writes its first
// bytes ("" leaves it zero).
func loopDevice(t *testing.T, mib int, fill func(dev string)) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.Truncate(createFile(t, img), int64(mib)<<20); err != nil {
		t.Fatal(err)
	}
	dev := run(t, "losetup", "-f", "--show", img)
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	if fill != nil {
		fill(dev)
	}
	return dev
}

func createFile(t *testing.T, p string) string {
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

// lab is a namespace holding the node's address, a fake drbdsetup and a
// sandbox root.
type lab struct {
	ns, root, fake, log string
	env                 *converge.Env
}

func newLab(t *testing.T, self, addr string) *lab {
	t.Helper()
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "drbdadm", "drbdmeta", "losetup", "blkid", "dd", "mkfs.ext4")
	l := &lab{ns: fmt.Sprintf("hdrbd-%s-%d", runID, seq.Add(1)), root: t.TempDir()}
	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.ns).Run() })
	run(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.ns, "addr", "add", addr+"/32", "dev", "lo")
	dir := t.TempDir()
	l.log = filepath.Join(dir, "drbdsetup.log")
	l.fake = filepath.Join(dir, "drbdsetup")
	script := "#!/bin/sh\necho \"$*\" >> " + l.log + "\ncase \"$1\" in\nstatus) echo \"$2: No such resource\" >&2; exit 10;;\nesac\nexit 0\n"
	if err := os.WriteFile(l.fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	l.env = &converge.Env{Root: l.root, Runner: l, Facts: &hivev1.NodeFacts{Name: self}, Logger: testLogger(t)}
	return l
}

// Run implements converge.Runner: every command runs in the namespace;
// drbdadm is pointed at the fake drbdsetup, drbdsetup replaced by it.
func (l *lab) Run(ctx context.Context, c converge.Cmd) (converge.Output, error) {
	switch c.Name {
	case "drbdadm":
		c.Args = append([]string{"-s", l.fake}, c.Args...)
	case "drbdsetup":
		c.Name = l.fake
	}
	c.Args = append([]string{"netns", "exec", l.ns, c.Name}, c.Args...)
	c.Name = "ip"
	return converge.ExecRunner{}.Run(ctx, c)
}

func (l *lab) kernelLog(t *testing.T) string {
	b, _ := os.ReadFile(l.log)
	os.Remove(l.log)
	return string(b)
}

func newProvider(t *testing.T) *Provider {
	p, err := New(DefaultConfig(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func res(d *hivev1.Drbd) converge.Item {
	return converge.Item{Key: "drbd:" + d.Name, Resource: &hivev1.Resource{Key: "drbd:" + d.Name, Kind: &hivev1.Resource_Drbd{Drbd: d}}}
}

func plan(t *testing.T, p *Provider, env *converge.Env, ds ...*hivev1.Drbd) []*converge.Change {
	t.Helper()
	b := &converge.Batch{}
	for _, d := range ds {
		b.Items = append(b.Items, res(d))
	}
	chs, err := p.Plan(context.Background(), env, b)
	if err != nil {
		t.Fatal(err)
	}
	return chs
}

func TestProviderTimeline(t *testing.T) {
	l := newLab(t, "store-a", "10.78.0.1")
	p := newProvider(t)
	dev := loopDevice(t, 16, nil)
	d := &hivev1.Drbd{Name: "r0", Minor: 0, Disk: dev, Port: 7789, PeerRole: "storage", Peers: peers("store-a", "store-b"), Options: map[string]string{"net/verify-alg": "sha256"}}
	file := filepath.Join(l.root, "etc/drbd.d/r0.res")

	// Plan: nothing written, everything planned.
	chs := plan(t, p, l.env, d)
	ch := chs[0]
	if ch.Err != nil || !ch.Needed {
		t.Fatalf("plan: needed=%v err=%v", ch.Needed, ch.Err)
	}
	for _, w := range []string{"create /etc/drbd.d/r0.res", "drbdadm create-md r0 (" + dev + " has no drbd metadata and no data)", "new-peer r0 1 --_name=store-b --verify-alg=sha256 --protocol=C", "attach 0 " + dev} {
		if !strings.Contains(ch.Diff, w) {
			t.Errorf("plan lacks %q:\n%s", w, ch.Diff)
		}
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("plan wrote the file: %v", err)
	}
	if out, _ := exec.Command("blkid", "-p", "-o", "export", dev).Output(); len(out) > 0 {
		t.Errorf("plan wrote metadata: %s", out)
	}
	l.kernelLog(t)

	// Apply: metadata, file, adjust.
	if err := p.Apply(context.Background(), l.env, chs); err != nil || ch.Err != nil {
		t.Fatalf("apply: %v %v", err, ch.Err)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := Check(d, "store-a")
	if string(got) != s.Render() {
		t.Errorf("file:\n%s", got)
	}
	if out := run(t, "blkid", "-p", "-o", "export", dev); !strings.Contains(out, "TYPE=drbd") {
		t.Errorf("no drbd metadata after apply: %s", out)
	}
	kl := l.kernelLog(t)
	for _, w := range []string{"new-resource r0 0", "new-path r0 1 ipv4:10.78.0.1:7789 ipv4:10.78.0.2:7789", "attach 0 " + dev + " " + dev + " internal", "connect r0 1"} {
		if !strings.Contains(kl, w) {
			t.Errorf("kernel calls lack %q:\n%s", w, kl)
		}
	}

	// Again: the file and metadata stay (the fake kernel keeps no state, so
	// adjust still has steps; with the real module they would be none).
	ch = plan(t, p, l.env, d)[0]
	if ch.Err != nil || strings.Contains(ch.Diff, "create") || strings.Contains(ch.Diff, "rewrite") {
		t.Errorf("second plan: %v\n%s", ch.Err, ch.Diff)
	}

	// A peer address changes: the file is rewritten.
	d.Peers[1].Address = "10.78.0.9"
	ch = plan(t, p, l.env, d)[0]
	if ch.Err != nil || !strings.Contains(ch.Diff, "rewrite /etc/drbd.d/r0.res") || !strings.Contains(ch.Diff, "ipv4:10.78.0.9:7789") {
		t.Errorf("changed peer: %v\n%s", ch.Err, ch.Diff)
	}
	d.Peers[1].Address = "10.78.0.2"

	// Port and minor clash with the existing file.
	clash := &hivev1.Drbd{Name: "r1", Minor: 0, Disk: loopDevice(t, 8, nil), Port: 7789, PeerRole: "storage", Peers: peers("store-a", "store-b")}
	ch = plan(t, p, l.env, clash)[0]
	if !errors.Is(ch.Err, ErrClash) || !strings.Contains(ch.Err.Error(), "port 7789 also used by file /etc/drbd.d/r0.res; minor 0 also used by file /etc/drbd.d/r0.res") {
		t.Errorf("clash: %v", ch.Err)
	}
	// ... and within one run.
	clash.Minor = 1
	chs = plan(t, p, l.env, d, clash)
	if chs[0].Err == nil || !errors.Is(chs[1].Err, ErrClash) || !strings.Contains(chs[1].Err.Error(), "port 7789 also used by resource r0") {
		t.Errorf("clash in batch: %v / %v", chs[0].Err, chs[1].Err)
	}

	// Removal: down through drbdadm, file gone. The engine's prune
	// environment carries no node facts: the node name comes from the file.
	pruneEnv := &converge.Env{Root: l.root, Runner: l, Logger: l.env.Logger}
	rm, err := p.Prune(context.Background(), pruneEnv, nil)
	if err != nil || len(rm) != 1 || rm[0].Key != "drbd:r0" {
		t.Fatalf("remove plan: %v %v", rm, err)
	}
	if err := p.Apply(context.Background(), pruneEnv, rm); err != nil || rm[0].Err != nil {
		t.Fatalf("remove: %v %v", err, rm[0].Err)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file still there: %v", err)
	}
	if kl := l.kernelLog(t); !strings.Contains(kl, "down r0") {
		t.Errorf("no down: %s", kl)
	}
	if rm, _ := p.Prune(context.Background(), l.env, nil); len(rm) != 0 {
		t.Errorf("second removal plans %d", len(rm))
	}
}

func TestNeverOverData(t *testing.T) {
	l := newLab(t, "store-a", "10.78.0.1")
	p := newProvider(t)
	for _, tt := range []struct {
		name string
		fill func(dev string)
		want string
	}{
		{"filesystem", func(dev string) { run(t, "mkfs.ext4", "-q", dev) }, "has TYPE=ext4 USAGE=filesystem; refusing create-md"},
		{"raw bytes", func(dev string) {
			f, err := os.OpenFile(dev, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte("precious"), 4096); err != nil {
				t.Fatal(err)
			}
		}, "non-zero bytes in its first 64 KiB"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dev := loopDevice(t, 16, tt.fill)
			before := run(t, "sha256sum", dev)
			d := &hivev1.Drbd{Name: "r0", Disk: dev, Port: 7789, PeerRole: "storage", Peers: peers("store-a", "store-b")}
			ch := plan(t, p, l.env, d)[0]
			if !errors.Is(ch.Err, ErrHasData) || !strings.Contains(ch.Err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrHasData with %q", ch.Err, tt.want)
			}
			if after := run(t, "sha256sum", dev); after != before {
				t.Error("disk changed")
			}
			if _, err := os.Stat(filepath.Join(l.root, "etc/drbd.d/r0.res")); !errors.Is(err, os.ErrNotExist) {
				t.Error("file written")
			}
		})
	}
}

func TestNotMemberFails(t *testing.T) {
	l := newLab(t, "store-c", "10.78.0.3")
	p := newProvider(t)
	d := &hivev1.Drbd{Name: "r0", Disk: "/dev/vdb", Port: 7789, PeerRole: "storage", Peers: peers("store-a", "store-b")}
	ch := plan(t, p, l.env, d)[0]
	if !errors.Is(ch.Err, ErrNotMember) || !strings.Contains(ch.Err.Error(), `this node "store-c" is not among the peers [store-a store-b]`) {
		t.Errorf("err = %v", ch.Err)
	}
	// Once the coordinator lists it, it plans.
	d.Peers = peers("store-a", "store-b", "store-c")
	d.Disk = loopDevice(t, 8, nil)
	if ch := plan(t, p, l.env, d)[0]; ch.Err != nil || !ch.Needed {
		t.Errorf("after joining: %v", ch.Err)
	}
}

// kernelModule reports whether the drbd kernel module is usable, and why
// not.
func kernelModule() (bool, string) {
	if _, err := os.Stat("/proc/drbd"); err == nil {
		return true, ""
	}
	if path, err := exec.LookPath("modprobe"); err == nil {
		if out, err := exec.Command(path, "drbd").CombinedOutput(); err == nil {
			return true, ""
		} else {
			return false, fmt.Sprintf("modprobe drbd: %v: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if _, err := os.Stat("/lib/modules"); err != nil {
		return false, "no /proc/drbd, no modprobe and no /lib/modules: the kernel cannot load modules"
	}
	return false, "no /proc/drbd and no modprobe"
}

// TestApplyWithoutKernelModule runs the real drbdsetup: where the module is
// missing, Apply fails precisely and leaves no file behind.
func TestApplyWithoutKernelModule(t *testing.T) {
	if ok, _ := kernelModule(); ok {
		t.Skip("the drbd kernel module is available here")
	}
	l := newLab(t, "store-a", "10.78.0.1")
	real := &converge.Env{Root: l.root, Runner: nsOnly{l.ns}, Facts: l.env.Facts, Logger: l.env.Logger}
	p := newProvider(t)
	d := &hivev1.Drbd{Name: "r0", Disk: loopDevice(t, 16, nil), Port: 7789, PeerRole: "storage", Peers: peers("store-a", "store-b")}
	chs := plan(t, p, real, d)
	if chs[0].Err != nil || !chs[0].Needed {
		t.Fatalf("plan: %v", chs[0].Err)
	}
	if err := p.Apply(context.Background(), real, chs); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(chs[0].Err, ErrNoKernel) {
		t.Errorf("err = %v, want ErrNoKernel", chs[0].Err)
	}
	t.Logf("apply without module: %v", chs[0].Err)
	if _, err := os.Stat(filepath.Join(l.root, "etc/drbd.d/r0.res")); !errors.Is(err, os.ErrNotExist) {
		t.Error("file left behind after a failed adjust")
	}
}

type nsOnly struct{ ns string }

func (r nsOnly) Run(ctx context.Context, c converge.Cmd) (converge.Output, error) {
	c.Args = append([]string{"netns", "exec", r.ns, c.Name}, c.Args...)
	c.Name = "ip"
	return converge.ExecRunner{}.Run(ctx, c)
}

// TestKernelModule records whether a real replication test can run here.
// This machine's kernel has no module support (no modprobe, no
// /lib/modules, no /proc/drbd), so the two-namespace replication test on
// loop devices cannot run; the test says so instead of passing silently.
func TestKernelModule(t *testing.T) {
	ok, why := kernelModule()
	if !ok {
		t.Skipf("drbd kernel module not loadable, real replication not tested: %s", why)
	}
	t.Log("drbd kernel module available; replication test not implemented for a single shared kernel (resource names are kernel-global)")
}
