package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/drbd"
	"github.com/hivefleet/hive/converge/mount"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The tests run the real pvcreate, vgcreate, vgs, drbdadm, drbdmeta,
// blkid, mkfs and dockerd on loop devices, inside a network namespace that
// holds the node's address (drbdadm checks it). Two kernel interfaces are
// replaced, because this machine's kernel has neither the drbd module nor
// device-mapper (no thin pool, no LV can be activated):
//   - drbdsetup, by a script as in converge/drbd's tests, which also stands
//     in for /dev/drbdN: attach exposes the LV minus 1 MiB (the internal
//     metadata) as a loop device, and status reports the states the first
//     format reads;
//   - the LV commands (lvcreate, lvextend, lvremove, lvs), by fakeLVM below:
//     a thin LV is a sparse file behind a loop device at DevDir/VG/NAME.
//     pvcreate, vgcreate and vgs are the real lvm2 (they need no
//     device-mapper).

var (
	runID = fmt.Sprintf("%dx%04x", os.Getpid(), rand.IntN(0x10000))
	seq   atomic.Int32
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func loopDevice(t *testing.T, mib int) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, int64(mib)<<20); err != nil {
		t.Fatal(err)
	}
	dev := run(t, "losetup", "-f", "--show", img)
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// lab is one node: a namespace with its address, the fake kernel (dir),
// the fake LVM, a root.
type lab struct {
	ns, root, dir, fake, log string
	lvm                      *fakeLVM
	env                      *converge.Env
}

const drbdsetupScript = `#!/bin/sh
D=%[1]s
echo "$*" >> $D/drbdsetup.log
case "$1" in
new-resource) touch $D/up-$2; [ -f $D/state-$2 ] || echo "Secondary Inconsistent" > $D/state-$2;;
attach)
	if [ ! -e $D/drbd$2 ]; then
		sz=$(blockdev --getsize64 "$3")
		dev=$(losetup -f --show --sizelimit $((sz - 1048576)) "$3")
		ln -s $dev $D/drbd$2
	fi;;
primary) echo "Primary UpToDate" > $D/state-$2;;
status)
	if [ ! -f $D/up-$2 ]; then echo "$2: No such resource" >&2; exit 10; fi
	read role ds < $D/state-$2
	conn=Connected; [ -f $D/conn ] && conn=$(cat $D/conn)
	pds=Inconsistent; [ "$ds" = UpToDate ] && pds=UpToDate
	echo "[{\"name\":\"$2\",\"role\":\"$role\",\"devices\":[{\"volume\":0,\"disk-state\":\"$ds\"}],\"connections\":[{\"name\":\"store-b\",\"connection-state\":\"$conn\",\"peer-role\":\"Secondary\",\"peer_devices\":[{\"volume\":0,\"peer-disk-state\":\"$pds\"}]}]}]";;
esac
exit 0
`

func newLab(t *testing.T, self string, addrs ...string) *lab {
	t.Helper()
	testenv.RequireNetns(t)
	testenv.RequireTool(t, "drbdadm", "drbdmeta", "losetup", "blkid", "mkfs.ext4", "pvcreate", "vgcreate", "vgs", "blockdev")
	l := &lab{ns: fmt.Sprintf("hvol-%s-%d", runID, seq.Add(1)), root: t.TempDir(), dir: t.TempDir()}
	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", l.ns).Run() })
	run(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	for _, a := range addrs {
		run(t, "ip", "-n", l.ns, "addr", "add", a+"/32", "dev", "lo")
	}
	l.log = filepath.Join(l.dir, "drbdsetup.log")
	l.fake = filepath.Join(l.dir, "drbdsetup")
	if err := os.WriteFile(l.fake, []byte(fmt.Sprintf(drbdsetupScript, l.dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	l.lvm = &fakeLVM{t: t, dev: filepath.Join(l.dir, "dev"), data: t.TempDir(), pools: map[string]bool{}}
	// Cleanups run last first: the fake /dev/drbdN loops before the LVs'.
	t.Cleanup(l.lvm.cleanup)
	t.Cleanup(func() { _ = exec.Command(l.fake, "down", "all").Run() })
	l.env = &converge.Env{Root: l.root, Runner: l, Facts: &hivev1.NodeFacts{Name: self}, Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))}
	return l
}

// Run implements converge.Runner.
func (l *lab) Run(ctx context.Context, c converge.Cmd) (converge.Output, error) {
	switch c.Name {
	case "lvcreate", "lvextend", "lvremove", "lvs":
		return l.lvm.run(c)
	case "drbdadm":
		c.Args = append([]string{"-s", l.fake}, c.Args...)
	case "drbdsetup":
		c.Name = l.fake
	}
	c.Args = append([]string{"netns", "exec", l.ns, c.Name}, c.Args...)
	c.Name = "ip"
	return converge.ExecRunner{}.Run(ctx, c)
}

func (l *lab) kernelLog() string {
	b, _ := os.ReadFile(l.log)
	return string(b)
}

func (l *lab) config() Config {
	cfg := DefaultConfig()
	cfg.DevDir = l.lvm.dev
	cfg.DrbdDevice = func(m uint32) string { return filepath.Join(l.dir, "drbd"+strconv.Itoa(int(m))) }
	cfg.DockerHost = ""
	return cfg
}

// fakeLVM emulates the LV commands the provider runs on thin pools.
type fakeLVM struct {
	t         *testing.T
	dev, data string
	mu        sync.Mutex
	pools     map[string]bool // "vg/pool"
	loops     []string
}

func (f *fakeLVM) cleanup() {
	for _, l := range f.loops {
		// First the fake /dev/drbdN loops stacked on this LV's loop.
		out, _ := exec.Command("losetup", "-n", "-O", "NAME", "-j", l).Output()
		for _, up := range strings.Fields(string(out)) {
			_ = exec.Command("losetup", "-d", up).Run()
		}
		_ = exec.Command("losetup", "-d", l).Run()
	}
}

func (f *fakeLVM) lvFile(vg, name string) string { return filepath.Join(f.data, vg+"-"+name+".img") }

func flag(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func (f *fakeLVM) run(c converge.Cmd) (converge.Output, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(format string, a ...any) (converge.Output, error) {
		msg := fmt.Sprintf(format, a...)
		return converge.Output{Stderr: []byte(msg)}, &converge.ExitError{Code: 5}
	}
	args := c.Args
	switch c.Name {
	case "lvs":
		vg := args[len(args)-1]
		var b strings.Builder
		for k := range f.pools {
			if v, p, _ := strings.Cut(k, "/"); v == vg {
				fmt.Fprintf(&b, "  %s,209715200,4194304\n", p)
			}
		}
		ents, _ := os.ReadDir(f.data)
		for _, e := range ents {
			if n, ok := strings.CutPrefix(e.Name(), vg+"-"); ok {
				fi, _ := e.Info()
				fmt.Fprintf(&b, "  %s,%d,4194304\n", strings.TrimSuffix(n, ".img"), fi.Size())
			}
		}
		return converge.Output{Stdout: []byte(b.String())}, nil
	case "lvcreate":
		vg := args[len(args)-1]
		switch flag(args, "--type") {
		case "thin-pool":
			f.pools[vg+"/"+flag(args, "-n")] = true
			return converge.Output{}, nil
		case "thin":
			if !f.pools[vg+"/"+flag(args, "--thinpool")] {
				return fail("thin pool %s/%s not found", vg, flag(args, "--thinpool"))
			}
			size, err := strconv.ParseUint(strings.TrimSuffix(flag(args, "-V"), "b"), 10, 64)
			if err != nil {
				return fail("bad size %q", flag(args, "-V"))
			}
			name := flag(args, "-n")
			img := f.lvFile(vg, name)
			if _, err := os.Stat(img); err == nil {
				return fail("LV %s/%s exists", vg, name)
			}
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				return fail("%v", err)
			}
			if err := os.Truncate(img, int64(size)); err != nil {
				return fail("%v", err)
			}
			out, err := exec.Command("losetup", "-f", "--show", img).Output()
			if err != nil {
				return fail("losetup: %v", err)
			}
			loop := strings.TrimSpace(string(out))
			f.loops = append(f.loops, loop)
			if err := os.MkdirAll(filepath.Join(f.dev, vg), 0o755); err != nil {
				return fail("%v", err)
			}
			return converge.Output{}, os.Symlink(loop, filepath.Join(f.dev, vg, name))
		}
	case "lvextend":
		vg, name, _ := strings.Cut(args[len(args)-1], "/")
		size, _ := strconv.ParseUint(strings.TrimSuffix(flag(args, "-L"), "b"), 10, 64)
		if err := os.Truncate(f.lvFile(vg, name), int64(size)); err != nil {
			return fail("%v", err)
		}
		loop, _ := os.Readlink(filepath.Join(f.dev, vg, name))
		if out, err := exec.Command("losetup", "-c", loop).CombinedOutput(); err != nil {
			return fail("losetup -c: %v %s", err, out)
		}
		return converge.Output{}, nil
	case "lvremove":
		vg, name, _ := strings.Cut(args[len(args)-1], "/")
		link := filepath.Join(f.dev, vg, name)
		loop, _ := os.Readlink(link)
		_ = exec.Command("losetup", "-d", loop).Run()
		os.Remove(link)
		return converge.Output{}, os.Remove(f.lvFile(vg, name))
	}
	return fail("fake lvm: %s %v not emulated", c.Name, args)
}

func newProvider(t *testing.T, cfg Config) *Provider {
	t.Helper()
	dp, err := drbd.New(drbd.DefaultConfig(), slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, dp, slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func item(v *hivev1.Volume) converge.Item {
	return converge.Item{Key: "volume:" + v.Name, Resource: &hivev1.Resource{Key: "volume:" + v.Name, Kind: &hivev1.Resource_Volume{Volume: v}}}
}

func plan(t *testing.T, p *Provider, env *converge.Env, v *hivev1.Volume) *converge.Change {
	t.Helper()
	chs, err := p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{item(v)}})
	if err != nil {
		t.Fatal(err)
	}
	return chs[0]
}

func converge1(t *testing.T, p *Provider, env *converge.Env, v *hivev1.Volume) *converge.Change {
	t.Helper()
	ch := plan(t, p, env, v)
	if ch.Err != nil {
		t.Fatalf("plan: %v", ch.Err)
	}
	if err := p.Apply(context.Background(), env, []*converge.Change{ch}); err != nil {
		t.Fatal(err)
	}
	return ch
}

func testVolume(name, vg, disk string) *hivev1.Volume {
	return &hivev1.Volume{
		Name: name, SizeBytes: 64 << 20, Fstype: "ext4", Protocol: "C", ReplicaRole: "storage",
		Pool:  &hivev1.VolumePool{Disk: disk, Vg: vg, ThinPool: "volumes"},
		Minor: 100, Port: 7900, InitialPrimary: "store-a",
		Peers:         []*hivev1.VolumePeer{{Name: "store-a", Address: "10.79.0.1", NodeId: 0}, {Name: "store-b", Address: "10.79.0.2", NodeId: 1}, {Name: "web-1", Address: "10.79.0.3", NodeId: 2}},
		DisklessPeers: []string{"web-1"},
	}
}

func blkidType(t *testing.T, dev string) string {
	out, _ := exec.Command("blkid", "-p", "-o", "export", dev).Output()
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "TYPE="); ok {
			return v
		}
	}
	return ""
}

// TestVolumeTimeline: from a blank disk to a formatted, published volume;
// second run, restart and a lost state file never format again; growing
// works, shrinking is refused; a removed volume is kept; absent removes it.
func TestVolumeTimeline(t *testing.T) {
	start := time.Now()
	l := newLab(t, "store-a", "10.79.0.1")
	vg := "hivet" + strings.ReplaceAll(runID, "x", "")
	disk := loopDevice(t, 256)
	t.Cleanup(func() {
		_ = exec.Command("vgremove", "-f", vg).Run()
		_ = exec.Command("pvremove", "-ff", "-y", disk).Run()
	})
	name := "hvt" + runID
	v := testVolume(name, vg, disk)
	cfg := l.config()
	docker := os.Getenv("CI") == "true"
	if _, err := os.Stat("/var/run/docker.sock"); err == nil {
		docker = true
	}
	if docker {
		testenv.RequireTool(t, "docker")
		cfg.DockerHost = "unix:///var/run/docker.sock"
		t.Cleanup(func() { _ = exec.Command("docker", "volume", "rm", name).Run() })
	}
	p := newProvider(t, cfg)
	lv := filepath.Join(cfg.DevDir, vg, name)
	dev := cfg.DrbdDevice(100)
	res := filepath.Join(l.root, "etc/drbd.d", name+".res")

	// Plan: everything planned, nothing touched.
	ch := plan(t, p, l.env, v)
	if ch.Err != nil || !ch.Needed {
		t.Fatalf("plan: %v", ch.Err)
	}
	for _, w := range []string{"pvcreate " + disk + ", vgcreate " + vg, "lvcreate thin pool " + vg + "/volumes", "lvcreate thin LV " + vg + "/" + name + " of 64M", "create-md on the new LV", "first format: drbdadm primary --force"} {
		if !strings.Contains(ch.Diff, w) {
			t.Errorf("plan lacks %q:\n%s", w, ch.Diff)
		}
	}
	if out, _ := exec.Command("vgs", vg).CombinedOutput(); !strings.Contains(string(out), "not found") {
		t.Fatalf("plan made the volume group: %s", out)
	}

	// Apply: pool, LV, resource, metadata, one format, docker volume.
	if err := p.Apply(context.Background(), l.env, []*converge.Change{ch}); err != nil || ch.Err != nil {
		t.Fatalf("apply: %v %v\n%s", err, ch.Err, l.kernelLog())
	}
	run(t, "vgs", vg)
	if got := blkidType(t, lv); got != "drbd" {
		t.Errorf("LV %s has %q, want drbd metadata", lv, got)
	}
	text, err := os.ReadFile(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"device minor 100;", "disk \"" + lv + "\";", "quorum majority;", "on-no-quorum io-error;", "address ipv4 10.79.0.1:7900;", "on \"web-1\" {\n        disk none;", "owner=volume"} {
		if !strings.Contains(string(text), w) {
			t.Errorf("resource file lacks %q:\n%s", w, text)
		}
	}
	if got := blkidType(t, dev); got != "ext4" {
		t.Errorf("%s has %q after the first run, want ext4", dev, got)
	}
	uuid := run(t, "blkid", "-p", "-s", "UUID", "-o", "value", dev)
	kl := l.kernelLog()
	if strings.Count(kl, "primary") != 1 || !strings.Contains(kl, "primary "+name+" --force") || !strings.Contains(kl, "secondary "+name) {
		t.Errorf("kernel calls: want one forced primary then secondary:\n%s", kl)
	}
	if docker {
		out := run(t, "docker", "volume", "inspect", "--format", "{{.Driver}} {{json .Options}} {{index .Labels \"hive.volume\"}}", name)
		want := fmt.Sprintf(`local {"device":"%s","type":"ext4"} %s`, dev, name)
		if out != want {
			t.Errorf("docker volume inspect: %s\nwant %s", out, want)
		}
	}

	// Second run, a restarted agent (new provider), and a lost state file:
	// never a second format.
	for i, pr := range []*Provider{p, newProvider(t, cfg), nil} {
		if pr == nil {
			os.Remove(filepath.Join(l.root, cfg.StateDir, name+".json"))
			pr = newProvider(t, cfg)
		}
		ch := converge1(t, pr, l.env, v)
		if ch.Err != nil || strings.Contains(ch.Diff, "create-md") || strings.Contains(ch.Diff, "lvcreate") {
			t.Errorf("run %d: %v\n%s", i+2, ch.Err, ch.Diff)
		}
	}
	if strings.Count(l.kernelLog(), "primary") != 1 {
		t.Errorf("a later run promoted again:\n%s", l.kernelLog())
	}
	if got := run(t, "blkid", "-p", "-s", "UUID", "-o", "value", dev); got != uuid {
		t.Errorf("filesystem replaced: UUID %s, was %s", got, uuid)
	}
	if ch := plan(t, p, l.env, v); ch.Err != nil || strings.Contains(ch.Diff, "first format") {
		t.Errorf("after the state file was rebuilt: %v\n%s", ch.Err, ch.Diff)
	}

	// Grow: lvextend to 96M, then drbdadm resize. (Growing the filesystem
	// needs the volume Primary and mounted on a device that grows with the
	// LV, which the fake kernel does not give: only the size readers are
	// tested, TestFilesystemSizes.)
	v.SizeBytes = 96 << 20
	ch = converge1(t, p, l.env, v)
	if ch.Err != nil || !strings.Contains(ch.Diff, "lvextend "+vg+"/"+name+" from 64M to 96M") {
		t.Errorf("grow: %v\n%s", ch.Err, ch.Diff)
	}
	if got := run(t, "blockdev", "--getsize64", lv); got != strconv.Itoa(96<<20) {
		t.Errorf("LV size after grow %s", got)
	}
	if !strings.Contains(l.kernelLog(), "resize 100") {
		t.Errorf("no drbd resize:\n%s", l.kernelLog())
	}

	// Shrink: refused, LV untouched.
	v.SizeBytes = 64 << 20
	if ch := plan(t, p, l.env, v); !errors.Is(ch.Err, ErrShrink) {
		t.Errorf("shrink: %v", ch.Err)
	}
	v.SizeBytes = 96 << 20

	// Removed from the state: kept and reported, nothing deleted.
	kept, err := p.Prune(context.Background(), l.env, nil)
	if err != nil || len(kept) != 1 || kept[0].Needed || !strings.Contains(kept[0].Summary, "kept: volume "+name) {
		t.Fatalf("prune: %v %+v", err, kept)
	}
	if _, err := os.Stat(res); err != nil {
		t.Errorf("resource file gone after prune: %v", err)
	}
	// ... nor by the drbd provider's prune.
	if rm, err := p.drbd.Prune(context.Background(), l.env, nil); err != nil || len(rm) != 0 {
		t.Errorf("drbd prune plans %v %v", rm, err)
	}

	// state: absent with confirmation: everything goes.
	v.Absent, v.Confirm = true, name
	ch = converge1(t, p, l.env, v)
	if ch.Err != nil || !strings.Contains(ch.Diff, "lvremove "+vg+"/"+name) {
		t.Fatalf("absent: %v\n%s", ch.Err, ch.Diff)
	}
	if _, err := os.Stat(res); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("resource file after absent: %v", err)
	}
	if _, err := os.Lstat(lv); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LV after absent: %v", err)
	}
	if docker {
		if out, err := exec.Command("docker", "volume", "inspect", name).CombinedOutput(); err == nil {
			t.Errorf("docker volume still there: %s", out)
		}
	}
	if ch := plan(t, p, l.env, v); ch.Err != nil || ch.Needed {
		t.Errorf("absent again: %v %s", ch.Err, ch.Diff)
	}
	if kept, _ := p.Prune(context.Background(), l.env, nil); len(kept) != 0 {
		t.Errorf("still kept after removal: %v", kept)
	}
	t.Logf("timeline took %v (docker: %v)", time.Since(start), docker)
}

// TestVolumeNeverOverData: a pool disk that holds a filesystem is never
// made a volume group.
func TestVolumeNeverOverData(t *testing.T) {
	l := newLab(t, "store-a", "10.79.0.1")
	disk := loopDevice(t, 64)
	run(t, "mkfs.ext4", "-q", disk)
	before := run(t, "sha256sum", disk)
	p := newProvider(t, l.config())
	ch := plan(t, p, l.env, testVolume("data", "hivenever"+strings.ReplaceAll(runID, "x", ""), disk))
	if !errors.Is(ch.Err, mount.ErrNotBlank) || !strings.Contains(ch.Err.Error(), "holds ext4") {
		t.Fatalf("err = %v", ch.Err)
	}
	if after := run(t, "sha256sum", disk); after != before {
		t.Error("disk changed")
	}
}

// TestVolumeOnlyInitialPrimaryFormats: another replica plans no format;
// and the initial primary waits while a peer is not connected.
func TestVolumeOnlyInitialPrimaryFormats(t *testing.T) {
	l := newLab(t, "store-b", "10.79.0.2")
	disk := loopDevice(t, 128)
	vg := "hiveb" + strings.ReplaceAll(runID, "x", "")
	t.Cleanup(func() {
		_ = exec.Command("vgremove", "-f", vg).Run()
		_ = exec.Command("pvremove", "-ff", "-y", disk).Run()
	})
	p := newProvider(t, l.config())
	v := testVolume("hvb"+runID, vg, disk)
	ch := converge1(t, p, l.env, v)
	if ch.Err != nil || strings.Contains(ch.Diff, "first format") {
		t.Fatalf("store-b: %v\n%s", ch.Err, ch.Diff)
	}
	if strings.Contains(l.kernelLog(), "primary") {
		t.Errorf("store-b promoted:\n%s", l.kernelLog())
	}
	if got := blkidType(t, l.config().DrbdDevice(100)); got != "" {
		t.Errorf("store-b formatted: %s", got)
	}

	// The same node as initial primary while its peer is not connected:
	// it waits (fails with ErrWaiting) and formats nothing.
	v.InitialPrimary = "store-b"
	if err := os.WriteFile(filepath.Join(l.dir, "conn"), []byte("Connecting"), 0o644); err != nil {
		t.Fatal(err)
	}
	ch = plan(t, p, l.env, v)
	if err := p.Apply(context.Background(), l.env, []*converge.Change{ch}); err != nil || !errors.Is(ch.Err, ErrWaiting) {
		t.Fatalf("want ErrWaiting, got %v %v", err, ch.Err)
	}
	if got := blkidType(t, l.config().DrbdDevice(100)); got != "" {
		t.Errorf("formatted while waiting: %s", got)
	}
	var st stateFile
	b, _ := os.ReadFile(filepath.Join(l.root, DefaultConfig().StateDir, v.Name+".json"))
	if err := json.Unmarshal(b, &st); err != nil || st.Formatted {
		t.Errorf("state file %s: %v", b, err)
	}
}

func TestFilesystemSizes(t *testing.T) {
	if n, err := ext4Size("Block count:              24576\nBlock size:               4096\n"); err != nil || n != 24576*4096 {
		t.Errorf("ext4 %d %v", n, err)
	}
	xfs := "meta-data=/dev/drbd100 isize=512 agcount=4, agsize=6144 blks\ndata     =                       bsize=4096   blocks=24576, imaxpct=25\nnaming   =version 2              bsize=4096   ascii-ci=0, ftype=1\n"
	if n, err := xfsSize(xfs); err != nil || n != 24576*4096 {
		t.Errorf("xfs %d %v", n, err)
	}
	if _, err := ext4Size("nothing"); err == nil {
		t.Error("ext4 without sizes accepted")
	}
}
