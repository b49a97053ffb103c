package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// demoNode is one process of the demo.
type demoNode struct {
	name   string
	kind   string // coordinator, agent or repo
	ip     string
	labels []string
	dir    string
	root   string // agents: sandbox root
	grpc   string // coordinators
	raft   string
	gossip string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

type demoOptions struct {
	site            string
	dir             string
	binDir          string
	keep            bool
	exitAfterStatus bool
	timeout         time.Duration
	interval        time.Duration
}

func newDemoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local site: three coordinators, three agents, a push, the status",
		Long: `demo runs a whole hive site on this machine, with no root and no Docker:
three coordinators (mutual TLS with certificates made on the fly, a gossip
key, raft bootstrapped through gossip) and three agents labelled tier=web
(web-1) and tier=db (db-1, db-2), all on loopback. Each agent converges under
its own sandbox root (--root): files are really written there, packages,
services, firewall, drbd and swarm are only planned, and the status shows
them as planned.

It pushes the site file with --wait (showing the progress), prints the
status, then keeps running until Ctrl-C and stops every process cleanly.
The binaries hive-coordinator and hive-agent are taken from the directory
of hivectl (bin/ after 'make build') or --bin-dir.`,
		Example: `  make demo
  bin/hivectl demo --site deploy/examples/site.yaml --keep`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDemo(ctx, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.site, "site", "deploy/examples/site.yaml", "site file to push")
	f.StringVar(&o.dir, "dir", "", "working directory (default: a new temporary directory, removed at exit)")
	f.StringVar(&o.binDir, "bin-dir", "", "directory holding hive-coordinator and hive-agent (default: hivectl's own)")
	f.BoolVar(&o.keep, "keep", false, "keep the working directory (logs, roots, data) at exit")
	f.BoolVar(&o.exitAfterStatus, "exit-after-status", false, "stop everything after printing the status (for tests)")
	f.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for the cluster and for convergence")
	f.DurationVar(&o.interval, "interval", 30*time.Second, "agents' drift-check interval")
	return cmd
}

// demoNet picks a random 127.X.Y.0/24 for the demo: every process gets
// its own loopback address with hive's standard ports (7400-7402, 7480),
// so nothing races for ephemeral ports and two demos do not collide.
func demoNet() string {
	return fmt.Sprintf("127.%d.%d.", 1+mrand.IntN(254), 1+mrand.IntN(254))
}

func runDemo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) (err error) {
	say := func(format string, args ...any) { fmt.Fprintf(stdout, "==> "+format+"\n", args...) }
	siteData, err := os.ReadFile(o.site)
	if err != nil {
		return fmt.Errorf("demo: read site file: %w", err)
	}
	bin := o.binDir
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("demo: find hivectl's directory: %w", err)
		}
		bin = filepath.Dir(exe)
	}
	for _, b := range []string{"hive-coordinator", "hive-agent", "hive-repo"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("demo: %s not found in %s (run 'make build' or give --bin-dir)", b, bin)
		}
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "hive-demo-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	}
	dir, _ = filepath.Abs(dir)
	say("working directory %s", dir)

	// Certificates and the gossip key.
	pkiDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		return err
	}
	if _, _, err := pki.WriteCA(pkiDir, ca, true); err != nil {
		return err
	}
	issue := func(kind pki.Kind, name string, labels map[string]string, ips ...net.IP) error {
		iss, err := ca.Issue(pki.CertRequest{Identity: pki.Identity{Kind: kind, Name: name}, IPs: ips, Labels: labels})
		if err != nil {
			return err
		}
		_, _, err = pki.WriteCert(pkiDir, name, iss, true)
		return err
	}
	key, err := gossip.NewKey()
	if err != nil {
		return err
	}
	keyFile := filepath.Join(pkiDir, "gossip.key")
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return err
	}

	lo := demoNet()
	var nodes []*demoNode
	for i := 1; i <= 3; i++ {
		ip := lo + strconv.Itoa(10+i)
		n := &demoNode{name: "c" + strconv.Itoa(i), kind: "coordinator", ip: ip,
			grpc: ip + ":7400", raft: ip + ":7401", gossip: ip + ":7402"}
		nodes = append(nodes, n)
	}
	coords := nodes[:3]
	for i, a := range []struct{ name, label string }{{"web-1", "tier=web"}, {"db-1", "tier=db"}, {"db-2", "tier=db"}} {
		ip := lo + strconv.Itoa(21+i)
		n := &demoNode{name: a.name, kind: "agent", labels: []string{a.label}, ip: ip, gossip: ip + ":7402"}
		nodes = append(nodes, n)
	}
	agents := nodes[3:]
	for _, n := range nodes {
		var err error
		if n.kind == "coordinator" {
			err = issue(pki.KindCoordinator, n.name, nil, net.ParseIP(n.ip))
		} else {
			// The agent's labels are bound in its certificate (trusted:
			// they select its roles), and its loopback alias is an IP SAN:
			// it reports that address but connects from 127.0.0.1.
			var labels map[string]string
			if labels, err = pki.ParseLabelArgs(n.labels); err == nil {
				err = issue(pki.KindAgent, n.name, labels, net.ParseIP(n.ip))
			}
		}
		if err != nil {
			return err
		}
		n.dir = filepath.Join(dir, n.name)
		n.log = filepath.Join(dir, "logs", n.name+".log")
		n.root = filepath.Join(n.dir, "root")
		if err := os.MkdirAll(n.root, 0o755); err != nil {
			return err
		}
	}
	if err := issue(pki.KindAdmin, "demo", nil); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	say("certificates and gossip key in %s", pkiDir)

	tlsArgs := func(name string) []string {
		c, k := pki.CertFiles(name)
		return []string{"--tls-ca", filepath.Join(pkiDir, pki.CAFile), "--tls-cert", filepath.Join(pkiDir, c), "--tls-key", filepath.Join(pkiDir, k)}
	}
	defer func() {
		stopDemo(nodes, stdout)
		if o.keep || o.dir != "" {
			say("kept %s (logs in %s)", dir, filepath.Join(dir, "logs"))
		}
	}()

	for _, n := range coords {
		args := []string{"--name", n.name, "--data-dir", filepath.Join(n.dir, "data"),
			"--grpc-addr", n.grpc, "--raft-addr", n.raft, "--gossip-addr", n.gossip, "--http-addr", "",
			"--bootstrap-expect", "3", "--gossip-key-file", keyFile, "--gossip-profile", "local"}
		for _, p := range coords {
			if p != n {
				args = append(args, "--join", p.gossip)
			}
		}
		if err := startDemoNode(n, filepath.Join(bin, "hive-coordinator"), append(args, tlsArgs(n.name)...)); err != nil {
			return err
		}
		say("coordinator %s: grpc %s, gossip %s (log %s)", n.name, n.grpc, n.gossip, n.log)
	}

	// The example site names its package repository by the placeholder
	// host repo.example.internal: serve it with a local hive-repo --dev
	// and push a copy of the site pointing there.
	sitePath := o.site
	if strings.Contains(string(siteData), demoRepoURL) {
		rn := &demoNode{name: "repo", kind: "repo", dir: filepath.Join(dir, "repo"), log: filepath.Join(dir, "logs", "repo.log")}
		addr := lo + "10:7480"
		if err := startDemoNode(rn, filepath.Join(bin, "hive-repo"), []string{"--dev", "--addr", addr, "--data-dir", rn.dir}); err != nil {
			return err
		}
		nodes = append(nodes, rn)
		if err := waitHTTP(ctx, "http://"+addr+"/keys/hive.asc", o.timeout); err != nil {
			return fmt.Errorf("demo: hive-repo: %w (log %s)", err, rn.log)
		}
		sitePath = filepath.Join(dir, filepath.Base(o.site))
		siteData = []byte(strings.ReplaceAll(string(siteData), demoRepoURL, "http://"+addr))
		if err := os.WriteFile(sitePath, siteData, 0o644); err != nil {
			return err
		}
		say("repository: hive-repo --dev on %s; pushing %s, a copy of %s pointing there", addr, sitePath, o.site)
	}

	var addrs []string
	for _, n := range coords {
		addrs = append(addrs, n.grpc)
	}
	adminCert, adminKey := pki.CertFiles("demo")
	ccfg := client.Config{Addrs: addrs, CA: filepath.Join(pkiDir, pki.CAFile), Cert: filepath.Join(pkiDir, adminCert), Key: filepath.Join(pkiDir, adminKey), AttemptTimeout: 2 * time.Second}
	say("waiting for the coordinators to elect a leader")
	deadline := time.Now().Add(o.timeout)
	var conn *client.Conn
	for {
		if err := exitedNode(nodes); err != nil {
			return err
		}
		c, err := client.Dial(ctx, ccfg)
		if err == nil && c.Serving {
			conn = c
			break
		}
		if c != nil {
			c.Close()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: no coordinator leader after %v (see %s)", o.timeout, filepath.Join(dir, "logs"))
		}
		time.Sleep(300 * time.Millisecond)
	}
	defer conn.Close()
	say("cluster ready (answered by %s)", conn.Addr)

	for _, n := range agents {
		args := []string{"--name", n.name, "--data-dir", filepath.Join(n.dir, "data"), "--root", n.root,
			"--gossip-addr", n.gossip, "--join", coords[0].gossip, "--gossip-key-file", keyFile, "--gossip-profile", "local",
			"--interval", o.interval.String()}
		for _, l := range n.labels {
			args = append(args, "--label", l)
		}
		if err := startDemoNode(n, filepath.Join(bin, "hive-agent"), append(args, tlsArgs(n.name)...)); err != nil {
			return err
		}
		say("agent %s (%s): root %s (log %s)", n.name, strings.Join(n.labels, ","), n.root, n.log)
	}

	// Secrets the site references get demo values.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	for _, name := range siteSecrets(siteData) {
		if _, err := conn.SetSecret(sctx, &hivev1.SetSecretRequest{Name: name, Value: []byte("demo-" + name)}); err != nil {
			cancel()
			return fmt.Errorf("demo: set secret %s: %w", name, err)
		}
		say("secret %s set to a demo value", name)
	}
	cancel()

	// Wait until the three agents registered, so that push --wait counts them.
	for {
		if err := exitedNode(nodes); err != nil {
			return err
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := conn.GetStatus(qctx, &hivev1.GetStatusRequest{})
		cancel()
		if err == nil && len(resp.GetNodes()) >= len(agents) {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: agents did not register within %v (see %s)", o.timeout, filepath.Join(dir, "logs"))
		}
		time.Sleep(300 * time.Millisecond)
	}

	// hivectl uses the first address that answers: put the raft leader
	// first, so the push and the status read its state directly.
	if pr, err := conn.ListPeers(ctx, &hivev1.ListPeersRequest{}); err == nil {
		for _, p := range pr.GetPeers() {
			for i, n := range coords {
				if p.GetLeader() && (p.GetAddress() == n.raft || p.GetId() == n.name) && i > 0 {
					addrs[0], addrs[i] = addrs[i], addrs[0]
				}
			}
		}
	}
	connArgs := []string{"--addr", strings.Join(addrs, ","), "--ca", ccfg.CA, "--cert", ccfg.Cert, "--key", ccfg.Key}
	say("hivectl push %s --wait", sitePath)
	pushCode := Main(append([]string{"push", sitePath, "--wait", "--timeout", o.timeout.String(), "-m", "hive demo"}, connArgs...), nil, stdout, stderr)
	say("hivectl status")
	statusCode := Main(append([]string{"status"}, connArgs...), nil, stdout, stderr)
	if pushCode != 0 || statusCode != 0 {
		err = fmt.Errorf("demo: push exited %d, status exited %d (logs in %s)", pushCode, statusCode, filepath.Join(dir, "logs"))
	}
	fmt.Fprintln(stdout)
	if o.exitAfterStatus {
		return err
	}
	for _, n := range agents {
		say("%s's files: find %s -type f", n.name, n.root)
	}
	say("try it: export HIVE_ADDR=%s HIVE_CACERT=%s HIVE_CERT=%s HIVE_KEY=%s", strings.Join(addrs, ","), ccfg.CA, ccfg.Cert, ccfg.Key)
	say("        then: %s status, members, history; edit a file under a root and watch it come back", os.Args[0])
	say("running; Ctrl-C stops everything")
	select {
	case <-ctx.Done():
	case <-waitAnyExit(nodes):
		if e := exitedNode(nodes); e != nil {
			return e
		}
	}
	fmt.Fprintln(stdout)
	return err
}

// demoRepoURL is the example site's placeholder repository server.
const demoRepoURL = "http://repo.example.internal:7480"

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer: %w", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// siteSecrets lists the names under the site file's top-level "secrets:".
func siteSecrets(data []byte) []string {
	var out []string
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "secrets:"):
			in = true
		case in && strings.HasPrefix(t, "- "):
			out = append(out, strings.Trim(strings.TrimSpace(strings.TrimPrefix(t, "- ")), `"'`))
		case in && t != "" && !strings.HasPrefix(t, "#"):
			in = false
		}
	}
	return out
}

func startDemoNode(n *demoNode, path string, args []string) error {
	lf, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	n.cmd = exec.Command(path, args...)
	n.cmd.Stdout, n.cmd.Stderr = lf, lf
	// The children die with the demo, even if it is killed.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("demo: start %s: %w", n.name, err)
	}
	n.exited = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		lf.Close()
		close(n.exited)
	}()
	return nil
}

// exitedNode returns an error naming a process that exited early.
func exitedNode(nodes []*demoNode) error {
	for _, n := range nodes {
		if n.exited == nil {
			continue
		}
		select {
		case <-n.exited:
			return fmt.Errorf("demo: %s %s exited: %v (log %s)", n.kind, n.name, n.cmd.ProcessState, n.log)
		default:
		}
	}
	return nil
}

func waitAnyExit(nodes []*demoNode) <-chan struct{} {
	ch := make(chan struct{})
	for _, n := range nodes {
		if n.exited == nil {
			continue
		}
		go func() {
			<-n.exited
			select {
			case ch <- struct{}{}:
			default:
			}
		}()
	}
	return ch
}

// stopDemo stops agents first, then coordinators: SIGTERM, then SIGKILL
// after 15 seconds.
func stopDemo(nodes []*demoNode, out io.Writer) {
	stop := func(kind string) {
		var running []*demoNode
		for _, n := range nodes {
			if n.kind == kind && n.cmd != nil && n.exited != nil {
				_ = n.cmd.Process.Signal(syscall.SIGTERM)
				running = append(running, n)
			}
		}
		for _, n := range running {
			select {
			case <-n.exited:
			case <-time.After(15 * time.Second):
				_ = n.cmd.Process.Kill()
				<-n.exited
				fmt.Fprintf(out, "==> %s did not stop in 15s: killed\n", n.name)
			}
		}
	}
	stop("agent")
	stop("coordinator")
	stop("repo")
	fmt.Fprintln(out, "==> stopped every agent and coordinator")
}
