package mount

import (
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func res(path, dev, fstype string, mkfs bool, opts ...string) *hivev1.Resource {
	return &hivev1.Resource{Key: "mount:" + path, Kind: &hivev1.Resource_Mount{Mount: &hivev1.Mount{Path: path, Device: dev, Fstype: fstype, Mkfs: mkfs, Options: opts}}}
}

// loop attaches a sparse file of size MiB to a loop device, detached in
// t.Cleanup.
func loop(t *testing.T, mib int64) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, mib<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", f).CombinedOutput()
	if err != nil {
		testenv.Missing(t, "losetup --find: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func blkidType(t *testing.T, dev string) string {
	out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", dev).Output()
	return strings.TrimSpace(string(out))
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	tab, err := New(Config{}).mountTable()
	if err != nil {
		t.Fatal(err)
	}
	_, ok := tab[path]
	return ok
}

func outcomes(rep *converge.Report) string {
	var b []string
	for _, r := range rep.GetResults() {
		b = append(b, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	}
	return strings.Join(b, " ")
}

// TestLoopDevices converges mounts on loop devices with the real blkid,
// mkfs.ext4, mkfs.xfs, mount and umount: dry run, mkfs on blank devices,
// no-op, drift (unmounted behind hive's back: mounted again, data kept),
// refusals (non-zero device without a signature, another filesystem, an
// fstab entry hive did not write) that change nothing, and pruning
// (unmounted, entry gone, filesystem kept).
func TestLoopDevices(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "losetup", "blkid", "mkfs.ext4", "mkfs.xfs", "mount", "umount")
	root := t.TempDir()
	devExt, devXfs, devJunk := loop(t, 64), loop(t, 320), loop(t, 64)
	// Registered after the loop devices, so it runs before they detach.
	t.Cleanup(func() {
		for _, p := range []string{"/srv/data", "/srv/xfs", "/srv/bad"} {
			_ = exec.Command("umount", "-l", filepath.Join(root, p)).Run()
		}
	})
	junk := make([]byte, 4096)
	rand.Read(junk)
	if f, err := os.OpenFile(devJunk, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		f.WriteAt(junk, 512<<10)
		f.Close()
	}
	reg, err := converge.NewRegistry(New(Config{}))
	if err != nil {
		t.Fatal(err)
	}
	e, err := converge.New(converge.Config{Root: root, Runner: converge.ExecRunner{}, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}, reg)
	if err != nil {
		t.Fatal(err)
	}
	run := func(dry bool, want string, rs ...*hivev1.Resource) *converge.Report {
		t.Helper()
		rep, err := e.Run(context.Background(), &hivev1.NodeState{Resources: rs}, converge.RunOptions{DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.GetResults() {
			t.Logf("  %s %s: %s", r.GetOutcome(), r.GetKey(), r.GetMessage())
		}
		if got := outcomes(rep); got != want {
			t.Fatalf("outcomes\n got %s\nwant %s", got, want)
		}
		return rep
	}
	fstabPath := filepath.Join(root, Fstab)
	if err := os.MkdirAll(filepath.Dir(fstabPath), 0o755); err != nil {
		t.Fatal(err)
	}
	const foreign = "# written by the installer\n/dev/sdz9 /srv/other ext4 defaults 0 2\n"
	os.WriteFile(fstabPath, []byte(foreign), 0o644)
	desired := []*hivev1.Resource{
		res("/srv/data", devExt, "ext4", true, "noatime"),
		res("/srv/xfs", devXfs, "xfs", true),
	}

	fp := convergetest.Tree(t, root)
	run(true, "mount:/srv/data=PLANNED mount:/srv/xfs=PLANNED", desired...)
	if convergetest.Tree(t, root) != fp || blkidType(t, devExt) != "" {
		t.Fatal("dry run changed the machine")
	}
	run(false, "mount:/srv/data=CHANGED mount:/srv/xfs=CHANGED", desired...)
	if blkidType(t, devExt) != "ext4" || blkidType(t, devXfs) != "xfs" {
		t.Fatalf("filesystems: %q %q", blkidType(t, devExt), blkidType(t, devXfs))
	}
	if !isMounted(t, filepath.Join(root, "/srv/data")) || !isMounted(t, filepath.Join(root, "/srv/xfs")) {
		t.Fatal("not mounted")
	}
	b, _ := os.ReadFile(fstabPath)
	want := foreign + "# hive: mount:/srv/data\n" + devExt + " /srv/data ext4 noatime 0 0\n# hive: mount:/srv/xfs\n" + devXfs + " /srv/xfs xfs defaults 0 0\n"
	if string(b) != want {
		t.Fatalf("fstab:\n%s\nwant:\n%s", b, want)
	}
	run(false, "mount:/srv/data=OK mount:/srv/xfs=OK", desired...)

	// Drift: unmounted behind hive's back. Mounted again, never re-made.
	data := filepath.Join(root, "/srv/data/keep")
	os.WriteFile(data, []byte("precious"), 0o644)
	if out, err := exec.Command("umount", filepath.Join(root, "/srv/data")).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v %s", err, out)
	}
	run(false, "mount:/srv/data=CHANGED mount:/srv/xfs=OK", desired...)
	if b, err := os.ReadFile(data); string(b) != "precious" {
		t.Fatalf("data lost after remount: %q %v", b, err)
	}

	// Refusals: each fails alone, with why, and changes nothing.
	fp = convergetest.Tree(t, root)
	rep := run(false, "mount:/srv/bad=FAILED mount:/srv/nodev=FAILED mount:/srv/data=OK mount:/srv/other=FAILED mount:/srv/wrongfs=FAILED mount:/srv/xfs=OK",
		res("/srv/bad", devJunk, "ext4", true),
		res("/srv/nodev", "/dev/hive-no-such-disk", "ext4", true),
		desired[0],
		res("/srv/other", "/dev/sdz9", "ext4", false),
		res("/srv/wrongfs", devXfs, "ext4", true),
		desired[1])
	msgs := map[string]string{}
	for _, r := range rep.GetResults() {
		msgs[r.GetKey()] = r.GetMessage()
	}
	for k, sub := range map[string]string{
		"mount:/srv/bad":     "device is not blank: " + devJunk + " has no filesystem signature but its first MiB is not zero: refusing mkfs over data",
		"mount:/srv/other":   "conflict: /etc/fstab line 2 already mounts /srv/other and was not written by hive",
		"mount:/srv/wrongfs": "device is not blank: " + devXfs + " holds xfs, not ext4",
		"mount:/srv/nodev":   "device /dev/hive-no-such-disk does not exist",
	} {
		if !strings.Contains(msgs[k], sub) {
			t.Errorf("%s: message %q lacks %q", k, msgs[k], sub)
		}
	}
	if got := convergetest.Tree(t, root); got != fp || blkidType(t, devJunk) != "" {
		t.Fatalf("refusals changed the machine:\n%s", convergetest.FingerprintDiff(fp, got))
	}

	// Pruning: unmounted, entries gone, filesystems kept.
	run(false, "mount:/srv/xfs=OK mount:/srv/data=CHANGED", desired[1])
	if isMounted(t, filepath.Join(root, "/srv/data")) {
		t.Fatal("/srv/data still mounted after pruning")
	}
	run(false, "mount:/srv/xfs=CHANGED")
	b, _ = os.ReadFile(fstabPath)
	if string(b) != foreign {
		t.Fatalf("fstab after pruning:\n%s", b)
	}
	if blkidType(t, devExt) != "ext4" || blkidType(t, devXfs) != "xfs" {
		t.Fatal("pruning touched a filesystem")
	}
	run(false, "")
}
