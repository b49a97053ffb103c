package kmod

import (
	"context"
	"errors"
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

func res(name string, opts ...string) *hivev1.Resource {
	return &hivev1.Resource{Key: "kernel_module:" + name, Kind: &hivev1.Resource_KernelModule{KernelModule: &hivev1.KernelModule{Name: name, Options: opts}}}
}

// fakeKernel is a /sys/module that the recorded modprobe fills.
type fakeKernel struct {
	sys string
	rec *convergetest.Recorder
}

func newFakeKernel(t *testing.T) *fakeKernel {
	k := &fakeKernel{sys: t.TempDir()}
	k.rec = &convergetest.Recorder{Reply: func(c converge.Cmd) (converge.Output, error) {
		if c.Name != "modprobe" {
			return converge.Output{ExitCode: 1}, errors.New("unexpected command")
		}
		if c.Args[0] == "-r" {
			name := c.Args[2]
			if name == "busy" {
				return converge.Output{ExitCode: 1, Stderr: []byte("modprobe: FATAL: Module busy is in use.\n")}, &converge.ExitError{Cmd: c.String(), Code: 1}
			}
			return converge.Output{}, os.RemoveAll(filepath.Join(k.sys, name))
		}
		name := c.Args[1]
		if name == "nosuch" {
			msg := "modprobe: FATAL: Module nosuch not found in directory /lib/modules/6.1.0\n"
			return converge.Output{ExitCode: 1, Stderr: []byte(msg)}, &converge.ExitError{Cmd: c.String(), Code: 1, Stderr: msg}
		}
		return converge.Output{}, os.MkdirAll(filepath.Join(k.sys, strings.ReplaceAll(name, "-", "_")), 0o755)
	}}
	return k
}

func engine(t *testing.T, root string, p *Provider, r converge.Runner) *converge.Engine {
	t.Helper()
	reg, err := converge.NewRegistry(p)
	if err != nil {
		t.Fatal(err)
	}
	e, err := converge.New(converge.Config{Root: root, Runner: r, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}, reg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func outcomes(rep *converge.Report) string {
	var b []string
	for _, r := range rep.GetResults() {
		b = append(b, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	}
	return strings.Join(b, " ")
}

func run(t *testing.T, e *converge.Engine, dry bool, want string, rs ...*hivev1.Resource) *converge.Report {
	t.Helper()
	rep, err := e.Run(context.Background(), &hivev1.NodeState{Resources: rs}, converge.RunOptions{DryRun: dry})
	if err != nil {
		t.Fatal(err)
	}
	if got := outcomes(rep); got != want {
		for _, r := range rep.GetResults() {
			t.Logf("%s: %s", r.GetKey(), r.GetMessage())
		}
		t.Fatalf("outcomes\n got %s\nwant %s", got, want)
	}
	return rep
}

func read(t *testing.T, root, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, p))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

// TestTimeline converges modules in a root with a recorded modprobe (this
// kernel has no loadable modules, see TestRealModprobe): dry run, load
// and boot files, no-op, drift, options changed on a loaded module, a
// module that does not exist (fails, writes nothing), pruning.
func TestTimeline(t *testing.T) {
	root := t.TempDir()
	k := newFakeKernel(t)
	e := engine(t, root, New(Config{SysModule: k.sys}), k.rec)
	desired := []*hivev1.Resource{res("br_netfilter"), res("dummy", "numdummies=2")}

	fp := convergetest.Tree(t, root)
	run(t, e, true, "kernel_module:br_netfilter=PLANNED kernel_module:dummy=PLANNED", desired...)
	if convergetest.Tree(t, root) != fp || len(k.rec.Lines()) != 0 {
		t.Fatalf("dry run changed something: %v", k.rec.Lines())
	}
	run(t, e, false, "kernel_module:br_netfilter=CHANGED kernel_module:dummy=CHANGED", desired...)
	if got := strings.Join(k.rec.Lines(), "\n"); got != "modprobe -- br_netfilter\nmodprobe -- dummy numdummies=2" {
		t.Fatalf("commands:\n%s", got)
	}
	if got := read(t, root, LoadFile("dummy")); got != "# Managed by hive (kernel_module:dummy)\ndummy\n" {
		t.Errorf("load file %q", got)
	}
	if got := read(t, root, OptionsFile("dummy")); got != "# Managed by hive (kernel_module:dummy)\noptions dummy numdummies=2\n" {
		t.Errorf("options file %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, OptionsFile("br_netfilter"))); !os.IsNotExist(err) {
		t.Errorf("options file for a module without options: %v", err)
	}
	run(t, e, false, "kernel_module:br_netfilter=OK kernel_module:dummy=OK", desired...)

	// Drift: unloaded behind hive's back, boot file deleted.
	os.RemoveAll(filepath.Join(k.sys, "dummy"))
	os.Remove(filepath.Join(root, LoadFile("br_netfilter")))
	run(t, e, false, "kernel_module:br_netfilter=CHANGED kernel_module:dummy=CHANGED", desired...)
	run(t, e, false, "kernel_module:br_netfilter=OK kernel_module:dummy=OK", desired...)

	// New options on a loaded module: written, not reloaded, said so.
	n := len(k.rec.Lines())
	rep := run(t, e, false, "kernel_module:br_netfilter=OK kernel_module:dummy=CHANGED", res("br_netfilter"), res("dummy", "numdummies=4"))
	if msg := rep.GetResults()[1].GetMessage(); !strings.Contains(msg, "next load") {
		t.Errorf("message %q does not say when options apply", msg)
	}
	if len(k.rec.Lines()) != n {
		t.Errorf("loaded module reloaded: %v", k.rec.Lines()[n:])
	}

	// A module that does not exist: precise failure, no file.
	fp = convergetest.Tree(t, root)
	rep = run(t, e, false, "kernel_module:br_netfilter=OK kernel_module:dummy=OK kernel_module:nosuch=FAILED", res("br_netfilter"), res("dummy", "numdummies=4"), res("nosuch"))
	if msg := rep.GetResults()[2].GetMessage(); !strings.Contains(msg, "modprobe failed: load nosuch: modprobe: FATAL: Module nosuch not found") {
		t.Errorf("message %q", msg)
	}
	if convergetest.Tree(t, root) != fp {
		t.Errorf("failed load changed the root")
	}

	// Pruning: files go, the module is unloaded; one in use stays loaded.
	os.MkdirAll(filepath.Join(k.sys, "busy"), 0o755)
	os.WriteFile(filepath.Join(root, LoadFile("busy")), []byte("busy\n"), 0o644)
	rep = run(t, e, false, "kernel_module:br_netfilter=OK kernel_module:busy=CHANGED kernel_module:dummy=CHANGED", res("br_netfilter"))
	if msg := rep.GetResults()[1].GetMessage(); !strings.Contains(msg, "still loaded until reboot (modprobe -r: modprobe: FATAL: Module busy is in use.)") {
		t.Errorf("busy prune message %q", msg)
	}
	for _, f := range []string{LoadFile("dummy"), OptionsFile("dummy"), LoadFile("busy")} {
		if _, err := os.Stat(filepath.Join(root, f)); !os.IsNotExist(err) {
			t.Errorf("%s not pruned", f)
		}
	}
	if _, err := os.Stat(filepath.Join(k.sys, "dummy")); !os.IsNotExist(err) {
		t.Errorf("dummy not unloaded")
	}
	run(t, e, false, "kernel_module:br_netfilter=OK", res("br_netfilter"))
}

// TestRealModprobe drives the real modprobe: a module that does not exist
// fails with modprobe's own message and leaves no file. When this kernel
// can load "dummy", it is loaded for real (and unloaded afterwards).
func TestRealModprobe(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTool(t, "modprobe")
	root := t.TempDir()
	e := engine(t, root, New(Config{SysModule: "/sys/module"}), converge.ExecRunner{})
	rep := run(t, e, false, "kernel_module:hive_no_such_module=FAILED", res("hive_no_such_module"))
	msg := rep.GetResults()[0].GetMessage()
	t.Logf("real modprobe: %s", msg)
	if !strings.Contains(msg, "modprobe failed: load hive_no_such_module:") || !strings.Contains(msg, "hive_no_such_module") {
		t.Errorf("message %q", msg)
	}
	if _, err := os.Stat(filepath.Join(root, LoadFile("hive_no_such_module"))); !os.IsNotExist(err) {
		t.Errorf("boot file written for a module that failed to load")
	}
	if _, err := os.Stat("/sys/module/dummy"); err == nil {
		t.Skip("dummy already loaded on this host: not touching it")
	}
	if err := exec.Command("modprobe", "-n", "dummy").Run(); err != nil {
		t.Skipf("this kernel cannot load modules (modprobe -n dummy: %v); loading is covered by TestTimeline's recorded modprobe", err)
	}
	run(t, e, false, "kernel_module:dummy=CHANGED", res("dummy"))
	if _, err := os.Stat("/sys/module/dummy"); err != nil {
		t.Errorf("dummy not loaded: %v", err)
	}
	run(t, e, false, "kernel_module:dummy=CHANGED") // prune unloads
	if _, err := os.Stat("/sys/module/dummy"); err == nil {
		t.Errorf("dummy still loaded after pruning")
	}
}
