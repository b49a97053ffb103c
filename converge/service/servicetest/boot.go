package servicetest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/internal/testenv"
)

// Booted is a real systemd running as PID 1 of its own PID, mount, UTS,
// IPC and cgroup namespaces, chrooted into a root filesystem that has
// systemd installed (debroot.CopyWith(t, "systemd", "dbus")). Its cgroups
// live in a fresh sub-cgroup of the test's own cgroup in every hierarchy
// (what the cgroup namespace shows it as its root), so it never touches
// cgroups outside them; getty units are masked and it boots only to
// basic.target with units that could reach the host kernel masked and
// /proc/sys read-only, logging nowhere on the host.
type Booted struct {
	Root string
	// PID is systemd's process id on the host.
	PID     int
	cgroups []string
	cmd     *exec.Cmd
}

// BootSystemd boots systemd in root and stops it, removing its cgroups,
// when the test ends. It needs root, unshare and chroot.
func BootSystemd(t testing.TB, root string) *Booted {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "unshare", "chroot", "mount")
	if _, err := os.Stat(filepath.Join(root, "lib/systemd/systemd")); err != nil {
		t.Fatalf("no systemd in %s: %v", root, err)
	}
	// Nothing that could reach the host kernel or console runs: no
	// gettys, udev, sysctl, module loading, binfmt, time or swap units
	// (/proc/sys is read-only too).
	for _, u := range []string{"console-getty.service", "getty@.service", "serial-getty@.service", "getty.target",
		"systemd-udevd.service", "systemd-udev-trigger.service", "systemd-sysctl.service", "systemd-modules-load.service",
		"kmod-static-nodes.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount", "systemd-remount-fs.service",
		"systemd-hwdb-update.service", "systemd-timesyncd.service", "swap.target", "sys-kernel-debug.mount",
		"sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount", "dev-mqueue.mount",
		"systemd-random-seed.service", "systemd-pcrphase-sysinit.service"} {
		p := filepath.Join(root, "etc/systemd/system", u)
		os.Remove(p)
		if err := os.Symlink("/dev/null", p); err != nil {
			t.Fatal(err)
		}
	}
	var idb [6]byte
	rand.Read(idb[:]) //nolint:errcheck
	b := &Booted{Root: root}
	cgs, err := makeCgroups("hive-sd-" + hex.EncodeToString(idb[:]))
	b.cgroups = cgs
	t.Cleanup(b.stop)
	if err != nil {
		t.Fatalf("cgroups: %v", err)
	}
	script := `set -e
for cg in ` + strings.Join(cgs, " ") + `; do echo $$ > "$cg/cgroup.procs"; done
exec unshare --cgroup --pid --fork --mount --uts --ipc sh -c '
set -e
R="$0"
mount --make-rprivate /
mount -t proc proc "$R/proc"
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount --bind /dev/null "$R/proc/sysrq-trigger" 2>/dev/null || true
mount -t sysfs -o ro sysfs "$R/sys"
mount -t tmpfs tmpfs "$R/sys/fs/cgroup"
mkdir -p "$R/sys/fs/cgroup/systemd"
mount -t cgroup -o none,name=systemd cgroup "$R/sys/fs/cgroup/systemd"
mount --bind "$R/dev" "$R/dev"
mount --bind /dev/null "$R/dev/console"
mount -t tmpfs tmpfs "$R/tmp"
exec chroot "$R" env container=hive-test /lib/systemd/systemd --system --unit=basic.target --log-target=null --show-status=no
' "` + root + `"`
	b.cmd = exec.Command("sh", "-c", script)
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("boot systemd: %v", err)
	}
	// systemd is the child of unshare (which replaced sh).
	deadline := time.Now().Add(30 * time.Second)
	for b.PID == 0 {
		if time.Now().After(deadline) {
			t.Fatal("systemd did not start")
		}
		b.PID = childOf(b.cmd.Process.Pid)
		time.Sleep(50 * time.Millisecond)
	}
	sock := b.socket()
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd's private socket %s did not appear", sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Wait until the manager finished starting up.
	var last string
	for {
		if state, err := b.systemState(); err != nil {
			last = err.Error()
		} else if state == "running" || state == "degraded" {
			break
		} else {
			last = "state " + state
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd did not come up: %s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b
}

func (b *Booted) systemState() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.conn(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	p, err := c.SystemStateContext(ctx)
	if err != nil {
		return "", err
	}
	return strings.Trim(p.Value.String(), `"`), nil
}

// socket is the container's system bus, reached through systemd's root.
// (systemd's private socket refuses peers from outside its PID namespace;
// the bus daemon does not.)
func (b *Booted) socket() string {
	return fmt.Sprintf("/proc/%d/root/run/dbus/system_bus_socket", b.PID)
}

func (b *Booted) conn(ctx context.Context) (*sddbus.Conn, error) {
	return sddbus.NewConnection(func() (*godbus.Conn, error) {
		return godbus.Connect("unix:path="+b.socket(), godbus.WithContext(ctx))
	})
}

// Connect returns the provider's real Bus connected to this systemd, for
// service.Config.Connect.
func (b *Booted) Connect(ctx context.Context) (service.Bus, error) {
	c, err := b.conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd: %w", err)
	}
	return service.NewSystemdBus(c), nil
}

func (b *Booted) stop() {
	if b.PID == 0 && b.cmd != nil && b.cmd.Process != nil {
		b.PID = childOf(b.cmd.Process.Pid) // started after we gave up waiting
	}
	if b.PID != 0 {
		syscall.Kill(b.PID, syscall.SIGKILL) //nolint:errcheck // PID 1 of its namespace: takes everything in it along
	}
	if b.cmd != nil && b.cmd.Process != nil {
		b.cmd.Process.Kill() //nolint:errcheck
		b.cmd.Wait()         //nolint:errcheck
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, cg := range b.cgroups {
		for time.Now().Before(deadline) {
			if removeTree(cg) == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// removeTree removes a cgroup directory and the cgroups below it, deepest
// first.
func removeTree(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { //nolint:errcheck
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var last error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !os.IsNotExist(err) {
			last = err
		}
	}
	return last
}

// makeCgroups creates name below the process's own cgroup in every
// mounted hierarchy and returns their paths.
func makeCgroups(name string) ([]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrl := strings.TrimPrefix(parts[1], "name=")
		if ctrl == "" {
			ctrl = "unified"
		}
		base := filepath.Join("/sys/fs/cgroup", ctrl)
		if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
			if parts[1] == "" {
				base = "/sys/fs/cgroup" // pure cgroup v2
				if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
					continue
				}
			} else {
				continue
			}
		}
		parent := filepath.Join(base, parts[2])
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return out, err
		}
		out = append(out, dir)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return out, err
				}
			}
		}
	}
	return out, sc.Err()
}

func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// RawConn returns a go-systemd connection to this systemd, for checks the
// Bus interface does not offer.
func (b *Booted) RawConn(ctx context.Context) (*sddbus.Conn, error) { return b.conn(ctx) }
