package netlabtests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/pki"
)

// In namespaces every host has its own address: the default ports are used.
const (
	grpcPort   = "7400"
	raftPort   = "7401"
	gossipPort = "7402"
	httpPort   = "7403"
)

// cluster is a hive site on a lab: coordinators, agents, and an "admin"
// host where hivectl runs. Everything uses mutual TLS with certificates made
// by `hivectl tls`.
type cluster struct {
	// agentFlags are extra hive-agent flags (clusterConfig.agentFlags).
	agentFlags []string

	t   testing.TB
	lab *netlab.Lab
	bin map[string]string
	dir string // data dirs, roots, site files
	pki string // ca.pem, NAME.pem, NAME-key.pem
	// gossipKey is the file of the gossip encryption key.
	gossipKey string
	admin     *netlab.Host
	coords    []*node
	agents    []*node
	interval  string // agents' drift-check interval
	// coordArgs are extra hive-coordinator arguments.
	coordArgs []string
	signer    bool             // coordinators sign bootstrap requests (--tls-ca-key)
	agentsCPU *netlab.CPUGroup // the agents' cpu group (nil: none)
	startRate int              // agents started per second (0: all at once)
	coordsCPU *netlab.CPUGroup // the coordinators' cpu group (nil: none)
}

// node is one coordinator or agent process on its own host.
type node struct {
	name   string
	host   *netlab.Host
	proc   *netlab.Proc
	data   string
	root   string // agents: the --root they converge under
	labels []string
}

type clusterConfig struct {
	// agentFlags are appended to every agent's command line.
	agentFlags []string

	coordinators int
	agents       int
	// labels of agent i (default tier=web).
	labels func(i int) []string
	// interval is the agents' drift-check interval (default 1s).
	interval time.Duration
	// coordinatorArgs are extra hive-coordinator arguments (PKI is
	// replaced by the directory of ca.pem and ca-key.pem).
	coordinatorArgs []string
	// signer starts the coordinators with --tls-ca-key (bootstrap tokens).
	signer bool
	// agentsCPU, when positive, runs all agents in one CPU cgroup
	// weighing as much as agentsCPU ordinary processes when the machine is
	// busy (netlab.Lab.CPUGroup): hundreds of agents on one machine stand
	// for a fleet of servers, each with its own CPU, and must not starve
	// the coordinators' raft heartbeats and gRPC, as they cannot in a real
	// fleet (nice 10 was not enough: 500 agents starting at once outweighed
	// three coordinators 18 to 1; SCHED_IDLE starved the agents whenever
	// anything else on the shared machine ran).
	agentsCPU int
	// startRate starts the agents at this many per second (0: all at
	// once), as a fleet is rolled out.
	startRate int
	// coordsCPU, when positive, runs the coordinators in one CPU cgroup
	// weighing as much as coordsCPU ordinary processes: in a real fleet
	// they have servers of their own, not a share of a machine also
	// running hundreds of agents and other people's builds.
	coordsCPU int
	// harnessCPU, when positive, moves the test process into a CPU cgroup
	// weighing as much as harnessCPU ordinary processes
	// (netlab.Lab.HarnessGroup): starting 500 agents "at once" must not
	// wait for the agents already running.
	harnessCPU int
	// agentsIdle puts the agents' group at SCHED_IDLE (netlab.CPUGroup.SetIdle).
	agentsIdle bool
}

// newCluster builds the binaries (once per run), creates the lab and the
// certificates, starts the coordinators, waits for a leader, then starts the
// agents (each with one join address).
func newCluster(t testing.TB, cfg clusterConfig) *cluster {
	t.Helper()
	lab := netlab.New(t) // skips (or fails under CI) without root and ip
	if cfg.harnessCPU > 0 {
		lab.HarnessGroup(cfg.harnessCPU * 1024)
	}
	c := &cluster{
		t:          t,
		lab:        lab,
		bin:        netlab.Build(t, "hive-coordinator", "hive-agent", "hivectl"),
		dir:        t.TempDir(),
		interval:   "1s",
		signer:     cfg.signer,
		agentFlags: cfg.agentFlags,
	}
	if cfg.interval > 0 {
		c.interval = cfg.interval.String()
	}
	c.pki = filepath.Join(c.dir, "pki")
	for _, a := range cfg.coordinatorArgs {
		c.coordArgs = append(c.coordArgs, strings.ReplaceAll(a, "PKI", c.pki))
	}
	if err := os.MkdirAll(c.pki, 0o700); err != nil {
		t.Fatal(err)
	}
	// One gossip encryption key for every member (32 random bytes, base64).
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	c.gossipKey = filepath.Join(c.pki, "gossip.key")
	if err := os.WriteFile(c.gossipKey, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.admin = lab.AddHost("admin")
	c.tls("ca", "create")
	c.tls("cert", "create", "--admin", "admin")

	for i := 1; i <= cfg.coordinators; i++ {
		c.coords = append(c.coords, &node{name: fmt.Sprintf("c%d", i), host: lab.AddHost(fmt.Sprintf("c%d", i))})
	}
	for _, n := range c.coords {
		n.data = filepath.Join(c.dir, n.name, "data")
		c.tls("cert", "create", "--coordinator", n.name, "--ip", n.host.Addr)
	}
	c.startRate = cfg.startRate
	if cfg.coordsCPU > 0 {
		c.coordsCPU = lab.CPUGroup("coordinators", cfg.coordsCPU*1024)
	}
	for _, n := range c.coords {
		c.startCoordinator(n)
	}
	c.waitLeader(60 * time.Second)

	if cfg.agentsCPU > 0 {
		c.agentsCPU = lab.CPUGroup("agents", cfg.agentsCPU*1024)
		if c.agentsCPU != nil && cfg.agentsIdle {
			if err := c.agentsCPU.SetIdle(); err != nil {
				t.Fatalf("agents cpu group: %v", err)
			}
		}
	}
	c.addAgents(cfg.agents, cfg.labels)
	return c
}

// addAgents adds agents a1..aN (labels(i), default tier=web; agent i joins
// coordinator (i-1) mod len), building hosts and certificates several at
// a time.
func (c *cluster) addAgents(n int, labels func(i int) []string) {
	c.t.Helper()
	if n == 0 {
		return
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("a%d", i+1)
	}
	hosts := c.lab.AddHosts(names...)
	nodes := make([]*node, n)
	for i := range nodes {
		l := []string{"tier=web"}
		if labels != nil {
			l = labels(i + 1)
		}
		nodes[i] = &node{name: names[i], host: hosts[i], labels: l}
	}
	c.agentCerts(nodes)
	for i, n := range nodes {
		if c.startRate > 0 && i > 0 {
			time.Sleep(time.Second / time.Duration(c.startRate))
		}
		c.startAgent(n, c.coords[i%len(c.coords)])
	}
}

// agentCerts issues agent certificates in the test process (what
// `hivectl tls cert create --agent NAME --label ...` does, with the same
// package): hundreds of hivectl processes would take minutes of CPU on a
// busy machine.
func (c *cluster) agentCerts(nodes []*node) {
	c.t.Helper()
	ca, err := pki.LoadCAFromDir(c.pki)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range nodes {
		labels, err := pki.ParseLabelArgs(n.labels)
		if err != nil {
			c.t.Fatal(err)
		}
		iss, err := ca.Issue(pki.CertRequest{Identity: pki.Identity{Kind: pki.KindAgent, Name: n.name}, Labels: labels})
		if err != nil {
			c.t.Fatalf("issue %s: %v", n.name, err)
		}
		if _, _, err := pki.WriteCert(c.pki, n.name, iss, false); err != nil {
			c.t.Fatal(err)
		}
	}
}

// tls runs `hivectl tls ARGS --dir PKI` (no network needed).
func (c *cluster) tls(args ...string) {
	c.t.Helper()
	args = append(append([]string{"tls"}, args...), "--dir", c.pki)
	out, err := exec.Command(c.bin["hivectl"], args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("hivectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (c *cluster) tlsFlags(name string) []string {
	return []string{
		"--tls-ca", filepath.Join(c.pki, "ca.pem"),
		"--tls-cert", filepath.Join(c.pki, name+".pem"),
		"--tls-key", filepath.Join(c.pki, name+"-key.pem"),
	}
}

func (c *cluster) startCoordinator(n *node) {
	c.t.Helper()
	args := []string{c.bin["hive-coordinator"],
		"--name", n.name,
		"--data-dir", n.data,
		"--grpc-addr", n.host.Addr + ":" + grpcPort,
		"--raft-addr", n.host.Addr + ":" + raftPort,
		"--gossip-addr", n.host.Addr + ":" + gossipPort,
		"--http-addr", n.host.Addr + ":" + httpPort,
		"--bootstrap-expect", fmt.Sprint(len(c.coords)),
		"--gossip-key-file", c.gossipKey,
	}
	for _, o := range c.coords {
		if o != n {
			args = append(args, "--join", o.host.Addr+":"+gossipPort)
		}
	}
	args = append(args, c.tlsFlags(n.name)...)
	args = append(args, c.coordArgs...)
	if c.signer {
		args = append(args, "--tls-ca-key", filepath.Join(c.pki, "ca-key.pem"))
	}
	n.proc = n.host.StartIn(c.coordsCPU, "hive-coordinator", args...)
}

// addAgent creates a host and starts an agent on it that knows one join
// address: coordinator via's gossip address.
func (c *cluster) addAgent(name string, labels []string, via *node) *node {
	c.t.Helper()
	n := &node{name: name, host: c.lab.AddHost(name), labels: labels}
	// The labels are bound in the certificate (trusted: they select the
	// agent's roles); the agent also reports them (facts).
	certArgs := []string{"cert", "create", "--agent", name}
	for _, l := range labels {
		certArgs = append(certArgs, "--label", l)
	}
	c.tls(certArgs...)
	c.startAgent(n, via)
	return n
}

// startAgent starts the agent of n (its host and certificate exist),
// joining coordinator via's gossip.
func (c *cluster) startAgent(n *node, via *node) {
	c.t.Helper()
	n.data = filepath.Join(c.dir, n.name, "data")
	n.root = filepath.Join(c.dir, n.name, "root")
	if err := os.MkdirAll(n.root, 0o755); err != nil {
		c.t.Fatal(err)
	}
	args := c.agentArgs(n, n.name, via)
	n.proc = n.host.StartIn(c.agentsCPU, "hive-agent", args...)
	c.agents = append(c.agents, n)
}

// agentArgs are hive-agent's arguments for n, with the certificate of
// certName (normally n's own).
func (c *cluster) agentArgs(n *node, certName string, via *node) []string {
	args := []string{c.bin["hive-agent"],
		"--name", n.name,
		"--data-dir", n.data,
		"--root", n.root,
		"--gossip-addr", n.host.Addr + ":" + gossipPort,
		"--join", via.host.Addr + ":" + gossipPort,
		"--interval", c.interval,
		"--gossip-key-file", c.gossipKey,
	}
	for _, l := range n.labels {
		args = append(args, "--label", l)
	}
	args = append(args, c.agentFlags...)
	return append(args, c.tlsFlags(certName)...)
}

// ctl runs hivectl on the admin host against every coordinator.
func (c *cluster) ctl(ctx context.Context, args ...string) ([]byte, error) {
	var addrs []string
	for _, n := range c.coords {
		addrs = append(addrs, n.host.Addr+":"+grpcPort)
	}
	return c.ctlVia(ctx, addrs, args...)
}

// member is one entry of `hivectl members -o json`.
type member struct {
	Name    string            `json:"name"`
	Kind    string            `json:"kind"`
	Address string            `json:"address"`
	Gossip  string            `json:"gossip"`
	Labels  map[string]string `json:"labels"`
	Raft    string            `json:"raft"`
}

// members decodes `hivectl members -o json`: a list, or an object holding
// it under "members".
func (c *cluster) members(ctx context.Context) ([]member, error) {
	out, err := c.ctl(ctx, "members", "-o", "json")
	if err != nil {
		return nil, err
	}
	var list []member
	if err := json.Unmarshal(out, &list); err == nil {
		return list, nil
	}
	var obj struct {
		Members []member `json:"members"`
	}
	if err := json.Unmarshal(out, &obj); err != nil {
		return nil, fmt.Errorf("decode members: %w: %s", err, out)
	}
	return obj.Members, nil
}

// waitLeader waits until hivectl sees every coordinator and one leader.
func (c *cluster) waitLeader(timeout time.Duration) {
	c.t.Helper()
	var last string
	ok := poll(timeout, func() bool {
		c.mustRun(c.coords...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := c.members(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		coords, leaders := 0, 0
		for _, m := range ms {
			if m.Kind == "coordinator" {
				coords++
				if m.Raft == "leader" {
					leaders++
				}
			}
		}
		last = fmt.Sprintf("%d coordinators, %d leaders: %+v", coords, leaders, ms)
		return coords == len(c.coords) && leaders == 1
	})
	if !ok {
		c.t.Fatalf("no raft leader among %d coordinators after %v: %s", len(c.coords), timeout, last)
	}
}

// nodeStatus is one node of `hivectl status -o json`.
type nodeStatus struct {
	Name              string            `json:"name"`
	Labels            map[string]string `json:"labels"`
	Roles             []string          `json:"roles"`
	Gossip            string            `json:"gossip"`
	AppliedGeneration uint64            `json:"applied_generation"`
	Phase             string            `json:"phase"`
	LastReport        *time.Time        `json:"last_report"`
	Resources         struct {
		Total   int `json:"total"`
		Changed int `json:"changed"`
		Failed  int `json:"failed"`
	} `json:"resources"`
	Errors []string `json:"errors"`
}

type siteStatus struct {
	Generation uint64       `json:"generation"`
	Nodes      []nodeStatus `json:"nodes"`
}

func (s *siteStatus) node(name string) *nodeStatus {
	for i := range s.Nodes {
		if s.Nodes[i].Name == name {
			return &s.Nodes[i]
		}
	}
	return nil
}

func (c *cluster) status(ctx context.Context) (*siteStatus, error) {
	out, err := c.ctl(ctx, "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var s siteStatus
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("decode status: %w: %s", err, out)
	}
	return &s, nil
}

// push pushes a site file; with wait, hivectl waits until every matched
// node converged. It returns the new generation.
func (c *cluster) push(site string, wait bool) uint64 {
	c.t.Helper()
	gen, err := c.pushE(site, wait)
	if err != nil {
		c.t.Fatal(err)
	}
	return gen
}

// pushE is push for any goroutine: it returns the error.
func (c *cluster) pushE(site string, wait bool) (uint64, error) {
	f, err := os.CreateTemp(c.dir, "site-*.yaml")
	if err != nil {
		return 0, err
	}
	if _, err := f.WriteString(site); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Close(); err != nil {
		return 0, err
	}
	args := []string{"push", f.Name(), "-o", "json", "-m", "netlab"}
	if wait {
		args = append(args, "--wait", "--timeout", "60s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := c.ctl(ctx, args...)
	if err != nil {
		return 0, fmt.Errorf("push: %w\n%s", err, out)
	}
	gen, err := pushGeneration(out)
	if err != nil {
		return 0, fmt.Errorf("push: %w", err)
	}
	return gen, nil
}

// pushGeneration reads {"generation": N, "sha256": "..."} from push -o json
// output (the last JSON object starting a line, after any progress lines).
func pushGeneration(out []byte) (uint64, error) {
	i := bytes.LastIndex(out, []byte("\n{"))
	if i >= 0 {
		i++
	} else if bytes.HasPrefix(out, []byte("{")) {
		i = 0
	} else {
		return 0, fmt.Errorf("no JSON in push output: %q", out)
	}
	var r struct {
		Generation uint64 `json:"generation"`
		SHA256     string `json:"sha256"`
	}
	if err := json.NewDecoder(bytes.NewReader(out[i:])).Decode(&r); err != nil || r.Generation == 0 || r.SHA256 == "" {
		return 0, fmt.Errorf("bad push output %q: %v", out, err)
	}
	return r.Generation, nil
}

// waitConverged waits until status shows every given agent converged on
// generation gen.
func (c *cluster) waitConverged(gen uint64, timeout time.Duration, agents ...*node) *siteStatus {
	c.t.Helper()
	var last *siteStatus
	var lastErr error
	ok := poll(timeout, func() bool {
		c.mustRun(agents...)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.status(ctx)
		if err != nil {
			lastErr = err
			return false
		}
		last, lastErr = s, nil
		for _, a := range agents {
			n := s.node(a.name)
			if n == nil || n.AppliedGeneration != gen || n.Phase != "converged" {
				return false
			}
		}
		return true
	})
	if !ok {
		c.t.Fatalf("agents %v not converged on generation %d after %v: last status %s (error %v)", names(agents), gen, timeout, dump(last), lastErr)
	}
	return last
}

// mustRun fails the test at once if one of the processes has exited (its
// log is dumped by the teardown), rather than waiting for a timeout.
func (c *cluster) mustRun(ns ...*node) {
	c.t.Helper()
	for _, n := range ns {
		if !n.proc.Running() {
			c.t.Fatalf("%s on %s exited unexpectedly: %v (its log follows below)", n.proc.Name, n.host, n.proc.Err())
		}
	}
}

func names(ns []*node) []string {
	var s []string
	for _, n := range ns {
		s = append(s, n.name)
	}
	return s
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// poll calls f every 100ms until it returns true or timeout passes.
func poll(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readFile reads a file under an agent's root ("" if it does not exist).
func (n *node) readFile(path string) string {
	b, err := os.ReadFile(filepath.Join(n.root, path))
	if err != nil {
		return ""
	}
	return string(b)
}

// hasVersion reports whether all n files under the agent's root hold
// version v.
func (a *node) hasVersion(v string, n int) bool {
	for i := 0; i < n; i++ {
		if a.readFile(filePath(i)) != fileContent(v, i) {
			return false
		}
	}
	return true
}

// waitFiles waits until the agent's files hold version v.
func (c *cluster) waitFiles(a *node, v string, n int, timeout time.Duration) {
	c.t.Helper()
	if !poll(timeout, func() bool { return a.hasVersion(v, n) }) {
		c.t.Fatalf("%s: files not at version %s after %v: %s holds %q", a.name, v, timeout, filePath(0), a.readFile(filePath(0)))
	}
}
