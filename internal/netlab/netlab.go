// Package netlab runs real processes on separate network "hosts" for
// multi-host tests: one Linux network namespace per host, each with its own
// veth and IPv4 address, all connected to one "switch" namespace of the
// lab's own, so the machine's own interfaces, routes and firewall are never
// touched.
//
// The switch routes (each host is a /32 behind its own veth, with the
// switch's address 10.N.0.1 as its gateway) rather than bridges: on a
// bridge every host keeps an ARP entry for every host it talks to, and the
// kernel's neighbour table is shared by all namespaces (gc_thresh3, 1024 by
// default): 50 gossiping hosts (~2,600 entries) overflowed it, for every
// program on the machine. Routed, the whole lab needs two entries per host,
// and those are static: both ends of every veth get fixed MAC addresses and
// permanent neighbour entries for each other, which the kernel does not
// count against gc_thresh (since 4.19) and which need no ARP at all, so a
// lab of thousands of hosts neither overflows the table nor sends an ARP
// request.
//
// A Lab belongs to one test (New registers its teardown with t.Cleanup):
//
//	lab := netlab.New(t)          // switch namespace
//	h1 := lab.AddHost("c1")       // namespace, veth, 10.N.0.10
//	p := h1.Start("coord", bin, "--grpc-addr", h1.Addr+":7400")
//	h1.Cut(); h1.Heal()           // link down / up on the switch side
//	p.Kill()                      // kill -9
//	p.Restart()                   // same argv, same log file
//
// Invariants: every name a Lab creates in the kernel (namespaces) carries the
// run ID "<pid>x<random>", so parallel runs never clash; interface names are
// only unique inside their namespaces and need no ID. The private network
// 10.<n>.0.0/16 (n random in 200..249) exists only inside the lab's
// namespaces and is never routed to the machine; it holds MaxHosts hosts. Teardown (t.Cleanup, also after a failure or a panic)
// kills every process, dumps each process's log with t.Log when the test
// failed, and deletes the namespaces (which deletes the veths). Namespaces left behind by a test binary that was
// killed outright are swept by the next New (their run's pid is gone).
//
// Processes are started with "ip netns exec", which enters the namespace and
// execs the program, so the process id the harness holds is the program's
// own and kill -9 hits it directly. A namespace belongs to an OS thread, so
// the harness never switches namespaces inside the test process itself.
//
// Concurrency: methods of Lab, Host and Proc may be called from any
// goroutine. Nothing here blocks for long except Proc.Wait, Host.Run (bounded
// by its ctx) and teardown.
//
// Prerequisites: root and the ip tool (testenv.RequireNetns, which fails
// under CI=true); iptables for Host.Drop; the sch_netem kernel module for
// Host.Netem (ErrNetemUnavailable otherwise).
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/testenv"
)

// Prefix starts the name of every namespace a Lab creates.
const Prefix = "netlab-"

// ErrNetemUnavailable is returned by Host.Netem when the kernel has no netem
// queueing discipline (module sch_netem not available).
var ErrNetemUnavailable = errors.New("netem queueing discipline not available in this kernel")

// MaxHosts is how many hosts one lab holds (addresses 10.N.X.10 to
// 10.N.X.209 for X from 0 up).
const MaxHosts = 4000

// Lab is one test's network: a switch namespace routing between hosts.
type Lab struct {
	t      testing.TB
	id     string // run ID: "<pid>x<hex>"
	sw     string // switch namespace
	subnet string // "10.N": the lab's /16
	dir    string // logs

	mu      sync.Mutex
	hosts   []*Host
	byName  map[string]*Host
	closed  bool
	cgroups []string // CPUGroup directories, removed by close
	// harnessFrom is the cgroup.procs file the test process was moved out
	// of by HarnessGroup ("": not moved), where close puts it back.
	harnessFrom string
}

// New creates a lab for t: the switch namespace. It requires
// root and the ip tool (skipping locally, failing under CI=true), skips
// under -short, and registers the teardown with t.Cleanup.
func New(t testing.TB) *Lab {
	t.Helper()
	testenv.SkipShort(t)
	testenv.RequireNetns(t)
	sweepStale(t)

	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("netlab: random run id: %v", err)
	}
	id := fmt.Sprintf("%dx%s", os.Getpid(), hex.EncodeToString(b[:2]))
	l := &Lab{
		t:      t,
		id:     id,
		sw:     Prefix + id + "-sw",
		subnet: fmt.Sprintf("10.%d", 200+int(b[2])%50),
		dir:    t.TempDir(),
		byName: map[string]*Host{},
	}
	t.Cleanup(l.close)
	if err := ipc("netns", "add", l.sw); err != nil {
		t.Fatalf("netlab: %v", err)
	}
	for _, args := range [][]string{
		{"-n", l.sw, "link", "set", "lo", "up"},
		// /proc/sys/net shows the namespace of the process reading it.
		{"netns", "exec", l.sw, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
		// A cut host's /32 route disappears with its link: the blackhole
		// then drops its packets silently, as a pulled cable would,
		// instead of answering "no route to host".
		{"-n", l.sw, "route", "add", "blackhole", l.subnet + ".0.0/16"},
	} {
		if err := ipc(args...); err != nil {
			t.Fatalf("netlab: %v", err)
		}
	}
	t.Logf("netlab: run %s, switch namespace %s, network %s.0.0/16", l.id, l.sw, l.subnet)
	return l
}

// ID is the lab's run ID, part of every namespace name.
func (l *Lab) ID() string { return l.id }

// Dir is the lab's directory (process logs), removed after the test.
func (l *Lab) Dir() string { return l.dir }

// Hosts returns the hosts in the order they were added.
func (l *Lab) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Host returns the host named name, or nil.
func (l *Lab) Host(name string) *Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byName[name]
}

// AddHost creates a host: a namespace with loopback up and an eth0 holding
// the next free address of the lab's /16, connected by a veth to the
// switch, which is its gateway to every other host (and only to them).
// name must be short (letters, digits, '-'), unique in the lab.
func (l *Lab) AddHost(name string) *Host {
	l.t.Helper()
	h, err := l.addHost(name)
	if err != nil {
		l.t.Fatalf("netlab: add host %s: %v", name, err)
	}
	return h
}

// AddHosts creates hosts like AddHost, several at a time (the ip tool's
// work is mostly waiting on the kernel), and returns them in the order of
// names. A lab of hundreds of hosts is built in seconds.
func (l *Lab) AddHosts(names ...string) []*Host {
	l.t.Helper()
	hosts := make([]*Host, len(names))
	errs := make([]error, len(names))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(8, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				hosts[i], errs[i] = l.addHost(names[i])
			}
		}()
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			l.t.Fatalf("netlab: add host %s: %v", names[i], err)
		}
	}
	return hosts
}

// CPUGroup is a CPU cgroup for some of the lab's processes
// (Lab.CPUGroup, Host.StartIn).
type CPUGroup struct {
	dir string
}

// CPUGroup creates a CPU cgroup with the CPU weight of shares/1024
// ordinary processes when the machine is busy (cgroup v1 cpu.shares, or v2
// cpu.weight) and no limit when it is not; Host.StartIn starts processes
// in it (each life is moved in right after it starts). Hundreds of agents
// on one machine stand for a fleet of servers, each with its own CPU: in
// one group they cannot starve the coordinators they talk to, as they
// could not in a real fleet, nor the other programs on the machine. The
// group is removed at teardown. Without a usable cpu controller it returns
// nil and logs why (StartIn then starts processes as Start does).
func (l *Lab) CPUGroup(name string, shares int) *CPUGroup {
	l.t.Helper()
	cg := "netlab-" + l.id + "-" + name
	var dir, weightFile, weight string
	switch {
	case fileExists("/sys/fs/cgroup/cgroup.controllers"): // v2
		if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control"); err != nil || !strings.Contains(string(b), "cpu") {
			_ = os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+cpu"), 0o644)
		}
		dir, weightFile, weight = "/sys/fs/cgroup/"+cg, "cpu.weight", strconv.Itoa(max(1, min(10000, shares*100/1024)))
	case fileExists("/sys/fs/cgroup/cpu/cpu.shares"): // v1
		dir, weightFile, weight = "/sys/fs/cgroup/cpu/"+cg, "cpu.shares", strconv.Itoa(max(2, shares))
	default:
		l.t.Logf("netlab: no cpu cgroup controller: %s not confined", name)
		return nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		l.t.Logf("netlab: cpu group %s: %v: not confined", name, err)
		return nil
	}
	l.mu.Lock()
	l.cgroups = append(l.cgroups, dir)
	l.mu.Unlock()
	if err := os.WriteFile(filepath.Join(dir, weightFile), []byte(weight), 0o644); err != nil {
		l.t.Logf("netlab: cpu group %s: %v", name, err)
	}
	return &CPUGroup{dir: dir}
}

// HarnessGroup moves the test process itself into a CPU group weighing
// shares/1024 ordinary processes (see CPUGroup), until the teardown moves
// it back. Hundreds of agents in their own group still make a two-core
// machine busy; without this the harness, which starts every process
// (each runs in the harness's group from its fork until StartIn moves it),
// polls their files and runs hivectl, competed with them as one ordinary
// process: 500 agents killed and started "at once" took two minutes to
// start, which measured the harness, not the fleet. Without a usable cpu
// controller it does nothing.
func (l *Lab) HarnessGroup(shares int) {
	l.t.Helper()
	g := l.CPUGroup("harness", shares)
	if g == nil {
		return
	}
	from := filepath.Join(filepath.Dir(g.dir), ownCgroup(), "cgroup.procs")
	if err := g.add(os.Getpid()); err != nil {
		l.t.Logf("netlab: harness cpu group: %v: not moved", err)
		return
	}
	l.mu.Lock()
	l.harnessFrom = from
	l.mu.Unlock()
}

// ownCgroup is the test process's cgroup path in the cpu hierarchy (v1:
// the line naming the cpu controller; v2: the unified line), "/" if
// unknown.
func ownCgroup() string {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "/"
	}
	v2 := "/"
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "" {
			v2 = f[2]
		}
		for _, c := range strings.Split(f[1], ",") {
			if c == "cpu" {
				return f[2]
			}
		}
	}
	return v2
}

// SetIdle gives the group the SCHED_IDLE policy as a whole (cpu.idle):
// its processes run only when no other group or process wants the CPU.
// Used to check whether what hundreds of agents cost the machine is what
// delays the coordinators; not a default (anything else running on the
// machine then starves the agents).
func (g *CPUGroup) SetIdle() error {
	return os.WriteFile(filepath.Join(g.dir, "cpu.idle"), []byte("1"), 0o644)
}

// add moves pid into the group.
func (g *CPUGroup) add(pid int) error {
	return os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// SwitchRun runs argv inside the switch namespace (which forwards every
// packet between hosts: iptables counters there see the whole lab's
// traffic) and returns its standard output.
func (l *Lab) SwitchRun(ctx context.Context, argv ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.sw}, argv...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s on the switch: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (l *Lab) addHost(name string) (*Host, error) {
	if name == "" || len(name) > 40 || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return nil, fmt.Errorf("invalid host name %q (want 1-40 of a-z 0-9 -)", name)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("lab is torn down")
	}
	if l.byName[name] != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("host %s exists", name)
	}
	n := len(l.hosts)
	if n >= MaxHosts {
		l.mu.Unlock()
		return nil, fmt.Errorf("lab full (%d hosts)", MaxHosts)
	}
	h := &Host{
		Name:    name,
		NS:      Prefix + l.id + "-" + name,
		Addr:    fmt.Sprintf("%s.%d.%d", l.subnet, n/200, 10+n%200),
		lab:     l,
		port:    fmt.Sprintf("p%d", n),
		mac:     fmt.Sprintf("02:00:00:%02x:%02x:%02x", n>>16&0xff, n>>8&0xff, n&0xff),
		portMAC: fmt.Sprintf("02:01:00:%02x:%02x:%02x", n>>16&0xff, n>>8&0xff, n&0xff),
	}
	l.hosts = append(l.hosts, h)
	l.byName[name] = h
	l.mu.Unlock()

	// The switch-side end is created in the switch namespace and the host
	// end directly in the host's namespace: nothing appears in the machine's
	// own namespace, not even for a moment. One ip process per namespace
	// (-batch): a lab of a thousand hosts starts in seconds.
	if err := ipc("netns", "add", h.NS); err != nil {
		return nil, err
	}
	if err := ipBatch(l.sw,
		"link add "+h.port+" address "+h.portMAC+" type veth peer name eth0 address "+h.mac+" netns "+h.NS,
		"addr add "+l.gateway()+"/32 dev "+h.port,
		"link set "+h.port+" up",
		"route replace "+h.Addr+"/32 dev "+h.port,
		"neigh replace "+h.Addr+" lladdr "+h.mac+" dev "+h.port+" nud permanent",
	); err != nil {
		return nil, err
	}
	if err := ipBatch(h.NS,
		"link set lo up",
		"addr add "+h.Addr+"/32 dev eth0",
		"link set eth0 up",
		"route add "+l.subnet+".0.0/16 via "+l.gateway()+" dev eth0 onlink",
		"neigh replace "+l.gateway()+" lladdr "+h.portMAC+" dev eth0 nud permanent",
	); err != nil {
		return nil, err
	}
	if err := h.waitLink(true); err != nil {
		return nil, err
	}
	return h, nil
}

// gateway is the switch's address on every host's link.
func (l *Lab) gateway() string { return l.subnet + ".0.1" }

// waitLink waits until the host's link is up at both ends (up), or down at
// both (!up). The kernel
// applies carrier changes asynchronously (and rate-limits them when many
// links change at once), so without this wait the first packets of a new
// or healed host can be lost, a first ARP request among them: a second's
// delay, or a failed connect.
func (h *Host) waitLink(up bool) error {
	deadline := time.Now().Add(10 * time.Second)
	var sw, host []byte
	for {
		var err error
		sw, err = exec.Command("ip", "-n", h.lab.sw, "-o", "link", "show", "dev", h.port).Output()
		if err != nil {
			return fmt.Errorf("ip link show %s: %w", h.port, err)
		}
		host, err = exec.Command("ip", "-n", h.NS, "-o", "link", "show", "dev", "eth0").Output()
		if err != nil {
			return fmt.Errorf("ip link show eth0 in %s: %w", h.NS, err)
		}
		if up && bytes.Contains(sw, []byte(" state UP ")) && bytes.Contains(host, []byte(" state UP ")) {
			return nil
		}
		if !up && !bytes.Contains(host, []byte(" state UP ")) && !bytes.Contains(sw, []byte(" state UP ")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link of %s not %s after 10s:\nswitch side: %s\nhost side: %s", h.Name, map[bool]string{true: "up", false: "down"}[up], sw, host)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// close is the teardown: stop processes, dump logs if the test failed,
// delete namespaces. It reports problems with t.Errorf.
func (l *Lab) close() {
	l.mu.Lock()
	l.closed = true
	hosts := append([]*Host(nil), l.hosts...)
	l.mu.Unlock()

	// Signal every process first, then wait: a lab of hundreds of
	// processes stops in one go.
	for _, h := range hosts {
		for _, p := range h.Procs() {
			p.signalKill()
		}
	}
	for _, h := range hosts {
		for _, p := range h.Procs() {
			p.kill()
		}
	}
	if l.t.Failed() {
		for _, h := range hosts {
			for _, p := range h.Procs() {
				l.t.Logf("==== log of %s/%s (%s, %s) ====\n%s", h.Name, p.Name, h.Addr, p.exitString(), tail(p.Log(), 64<<10))
			}
		}
	}
	var wg sync.WaitGroup
	next := make(chan *Host)
	for range min(8, len(hosts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range next {
				if err := ipc("netns", "del", h.NS); err != nil && !strings.Contains(err.Error(), "No such file") {
					l.t.Errorf("netlab teardown: %v", err)
				}
			}
		}()
	}
	for _, h := range hosts {
		next <- h
	}
	close(next)
	wg.Wait()
	if err := ipc("netns", "del", l.sw); err != nil && !strings.Contains(err.Error(), "No such file") {
		l.t.Errorf("netlab teardown: %v", err)
	}
	l.mu.Lock()
	groups, from := l.cgroups, l.harnessFrom
	l.mu.Unlock()
	if from != "" {
		if err := os.WriteFile(from, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			l.t.Errorf("netlab teardown: harness cpu group: %v", err)
		}
	}
	for _, dir := range groups {
		// Empty once its processes are gone (the kernel may take a moment).
		var err error
		for range 50 {
			if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && !os.IsNotExist(err) {
			l.t.Errorf("netlab teardown: cpu group: %v", err)
		}
	}
}

// tail returns the last max bytes of s, starting at a line.
func tail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	s = s[len(s)-max:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "[... earlier output cut ...]\n" + s
}

// sweepStale deletes namespaces left by lab runs whose test process is
// gone (a binary killed by a timeout cannot run its cleanups).
func sweepStale(t testing.TB) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], Prefix) {
			continue
		}
		name := f[0]
		rest := strings.TrimPrefix(name, Prefix)
		pidStr, _, ok := strings.Cut(rest, "x")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // its run is alive
		}
		killNamespaceProcs(name)
		if err := ipc("netns", "del", name); err == nil {
			t.Logf("netlab: removed stale namespace %s", name)
		}
	}
}

// killNamespaceProcs kill -9s every process still inside namespace name.
func killNamespaceProcs(name string) {
	out, err := exec.Command("ip", "netns", "pids", name).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// ipBatch runs ip commands (one per line, without the leading "ip") in
// namespace ns with one ip process.
func ipBatch(ns string, cmds ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", "-n", ns, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip -n %s -batch (%s): %w: %s", ns, strings.Join(cmds, "; "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// ipc runs the ip tool with args.
func ipc(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Host is one network namespace with one address in the lab.
type Host struct {
	// Name is the host's name in the lab.
	Name string
	// NS is the namespace name (carries the lab's run ID).
	NS string
	// Addr is the host's IPv4 address.
	Addr string

	lab     *Lab
	port    string // the veth's name on the switch side
	mac     string // eth0's MAC address
	portMAC string // the switch side's MAC address

	mu    sync.Mutex
	procs []*Proc
}

// String returns "name(addr)".
func (h *Host) String() string { return h.Name + "(" + h.Addr + ")" }

// Command returns a command that runs argv inside the host's namespace.
func (h *Host) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, argv...)...)
}

// Run runs argv inside the host's namespace to completion and returns its
// standard output. A non-zero exit is an error that includes the standard
// error.
func (h *Host) Run(ctx context.Context, argv ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := h.Command(ctx, argv...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s on %s: %w: %s", strings.Join(argv, " "), h.Name, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Procs returns the processes started on h (running or not).
func (h *Host) Procs() []*Proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Proc(nil), h.procs...)
}

// Start starts a long-running process inside the host's namespace. Its
// standard output and error go to a log file (Proc.Log), dumped by the
// teardown when the test failed. name must be unique on the host. The
// process inherits the test's environment.
func (h *Host) Start(name string, argv ...string) *Proc {
	h.lab.t.Helper()
	return h.StartEnv(name, nil, argv...)
}

// StartIn is Start with the process in CPU group g (nil: none), every
// life of it.
func (h *Host) StartIn(g *CPUGroup, name string, argv ...string) *Proc {
	h.lab.t.Helper()
	return h.start(g, name, nil, argv)
}

// StartEnv is Start with extra environment entries ("K=V").
func (h *Host) StartEnv(name string, env []string, argv ...string) *Proc {
	h.lab.t.Helper()
	return h.start(nil, name, env, argv)
}

func (h *Host) start(g *CPUGroup, name string, env, argv []string) *Proc {
	h.lab.t.Helper()
	p := &Proc{
		group: g,
		Name:  name,
		host:  h,
		argv:  append([]string(nil), argv...),
		env:   append([]string(nil), env...),
		path:  filepath.Join(h.lab.dir, h.Name+"-"+name+".log"),
	}
	h.mu.Lock()
	for _, q := range h.procs {
		if q.Name == name {
			h.mu.Unlock()
			h.lab.t.Fatalf("netlab: process %s already exists on %s", name, h.Name)
		}
	}
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	if err := p.start(); err != nil {
		h.lab.t.Fatalf("netlab: %v", err)
	}
	return p
}

// Cut takes the host's link down on the switch side, like pulling its
// cable: the host keeps its address and routes, and no packet passes in
// either direction (silently: no ICMP error either) until Heal.
func (h *Host) Cut() {
	h.lab.t.Helper()
	if err := ipc("-n", h.lab.sw, "link", "set", h.port, "down"); err != nil {
		h.lab.t.Fatalf("netlab: cut %s: %v", h.Name, err)
	}
	if err := h.waitLink(false); err != nil {
		h.lab.t.Fatalf("netlab: cut %s: %v", h.Name, err)
	}
}

// Heal brings the host's link back up.
func (h *Host) Heal() {
	h.lab.t.Helper()
	// Taking the link down removed the host's route and the switch's
	// (permanent) neighbour entry: put them back.
	if err := ipBatch(h.lab.sw,
		"link set "+h.port+" up",
		"route replace "+h.Addr+"/32 dev "+h.port,
		"neigh replace "+h.Addr+" lladdr "+h.mac+" dev "+h.port+" nud permanent",
	); err != nil {
		h.lab.t.Fatalf("netlab: heal %s: %v", h.Name, err)
	}
	if err := h.waitLink(true); err != nil {
		h.lab.t.Fatalf("netlab: heal %s: %v", h.Name, err)
	}
}

// Drop makes the host silently drop every packet from and to peer, with
// iptables rules inside the host's own namespace (a one-pair partition; the
// rest of the network still reaches both). Undo removes the rules.
func (h *Host) Drop(peer *Host) (undo func()) {
	t := h.lab.t
	t.Helper()
	testenv.RequireTool(t, "iptables")
	rules := [][]string{
		{"INPUT", "-s", peer.Addr, "-j", "DROP"},
		{"OUTPUT", "-d", peer.Addr, "-j", "DROP"},
	}
	for _, r := range rules {
		if out, err := h.Run(context.Background(), append([]string{"iptables", "-w", "-I"}, r...)...); err != nil {
			t.Fatalf("netlab: drop %s->%s: %v %s", h.Name, peer.Name, err, out)
		}
	}
	return func() {
		t.Helper()
		for _, r := range rules {
			if out, err := h.Run(context.Background(), append([]string{"iptables", "-w", "-D"}, r...)...); err != nil {
				t.Errorf("netlab: undo drop %s->%s: %v %s", h.Name, peer.Name, err, out)
			}
		}
	}
}

// Netem sets a netem queueing discipline on the host's eth0 (for example
// "delay", "50ms", "10ms" or "loss", "5%"); with no arguments it removes
// it. It returns ErrNetemUnavailable when the kernel lacks netem.
func (h *Host) Netem(args ...string) error {
	if _, err := exec.LookPath("tc"); err != nil {
		return fmt.Errorf("netem: %w", err)
	}
	var argv []string
	if len(args) == 0 {
		argv = []string{"tc", "qdisc", "del", "dev", "eth0", "root"}
	} else {
		argv = append([]string{"tc", "qdisc", "replace", "dev", "eth0", "root", "netem"}, args...)
	}
	if _, err := h.Run(context.Background(), argv...); err != nil {
		if strings.Contains(err.Error(), "qdisc kind is unknown") {
			return ErrNetemUnavailable
		}
		return fmt.Errorf("netem on %s: %w", h.Name, err)
	}
	return nil
}

// Proc is a process started by Host.Start. It can be killed and restarted;
// all its lives write to the same log file.
type Proc struct {
	// Name is the process's name on its host.
	Name string

	host  *Host
	argv  []string
	env   []string
	path  string
	group *CPUGroup

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{} // closed when the current life ended
	err   error         // its exit status
	lives int
}

// Host returns the host the process runs on.
func (p *Proc) Host() *Host { return p.host }

// Argv returns the program and its arguments.
func (p *Proc) Argv() []string { return append([]string(nil), p.argv...) }

func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s/%s is still running", p.host.Name, p.Name)
		}
	}
	f, err := os.OpenFile(p.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	p.lives++
	fmt.Fprintf(f, "---- netlab: start #%d at %s on %s: %s\n", p.lives, time.Now().Format("15:04:05.000"), p.host, strings.Join(p.argv, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.host.NS}, p.argv...)...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Own process group (kill reaches any children); killed if the test
	// binary dies without running its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s on %s: %w", p.Name, p.host.Name, err)
	}
	if p.group != nil {
		if err := p.group.add(cmd.Process.Pid); err != nil {
			fmt.Fprintf(f, "---- netlab: cpu group: %v\n", err)
		}
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "---- netlab: exit #%d at %s: %v\n", p.lives, time.Now().Format("15:04:05.000"), exitText(err))
		f.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Restart starts the process again with the same arguments after it ended
// (Kill, Stop, or its own exit).
func (p *Proc) Restart() {
	p.host.lab.t.Helper()
	if err := p.start(); err != nil {
		p.host.lab.t.Fatalf("netlab: restart: %v", err)
	}
}

// Running reports whether the current life has not ended.
func (p *Proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Pid is the current life's process id.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// Done is closed when the current life ends.
func (p *Proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Err is the exit status of the last life that ended (nil while running or
// after a clean exit).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

func (p *Proc) exitString() string {
	if p.Running() {
		return "running"
	}
	return exitText(p.Err())
}

// Kill sends SIGKILL to the process (kill -9) and waits until it is gone.
func (p *Proc) Kill() {
	p.host.lab.t.Helper()
	p.kill()
}

// signalKill sends SIGKILL without waiting.
func (p *Proc) signalKill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
	default:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

func (p *Proc) kill() {
	p.signalKill()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Stop sends SIGTERM and waits up to timeout for the process to end, then
// kills it. It returns the exit status, or an error if it had to kill.
func (p *Proc) Stop(timeout time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	select {
	case <-done:
		return p.Err()
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return p.Err()
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s/%s did not stop within %v after SIGTERM: killed", p.host.Name, p.Name, timeout)
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Signal(sig)
}

// Wait waits for the current life to end or ctx to be done.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.Done():
		return p.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Log returns everything the process wrote so far, over all its lives.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// LogPath is the process's log file.
func (p *Proc) LogPath() string { return p.path }
