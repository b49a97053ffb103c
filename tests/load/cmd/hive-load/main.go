// Command hive-load simulates N agents against real coordinators (see
// package load): every simulated agent has its own certificate, its own
// mutual-TLS connection, a WatchNodeState stream and sends real reports.
// It pushes and measures push → every watcher has the generation, then
// measures the reports absorbed with every stream open, and prints its own
// and the coordinators' CPU and memory.
//
// Against running coordinators (the CA key signs the simulated agents'
// certificates offline, as `hivectl tls cert create --agent` would):
//
//	hive-load --coordinator 10.0.0.1:7400 --coordinator 10.0.0.2:7400 \
//	    --ca pki/ca.pem --ca-key pki/ca-key.pem --agents 1000 \
//	    --metrics 10.0.0.1:7403 --metrics 10.0.0.2:7403
//
// Or let it start three coordinators on 127.0.0.1 first:
//
//	hive-load --start 3 --coordinator-bin bin/hive-coordinator --agents 10000
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/tests/load"
	"github.com/spf13/pflag"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hive-load:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("hive-load", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, `hive-load simulates agents against real coordinators: each simulated agent has
its own certificate (issued offline with the CA key), its own mutual-TLS
connection, a WatchNodeState stream, and sends real reports.

A run: issue the certificates; connect every agent (--connect-parallel at a
time) and wait for each one's first state; make --pushes pushes and time
push → every watcher has the generation (or, with --pushes 0 and --observe,
time the generations an operator pushes); make --plans plans and time each
from the Plan call to its answer, every simulated agent answering the dry run
its watch stream delivers with a plan report (ReportPlan) at once, as a real
agent does after its engine's plan; send --reports-per-agent reports
from every agent with all streams open; print latency percentiles, report
throughput, errors, its own CPU and RSS and the coordinators' (--pid,
--metrics, or those it started with --start).

Node names are PREFIX-00000...; the first --lb agents are tier=lb, the others
tier=web; each reports the address 10.x.y.z bound in its certificate. A node
may send 120 reports in a burst, then 1 per second (issue 11's rate limit;
plan answers count too): keep --reports-per-agent plus --plans below 120.

Exit status 1 if the run could not take place, 2 if it counted errors.

Flags:
`)
		fs.PrintDefaults()
	}
	var (
		addrs         = fs.StringArray("coordinator", nil, "gRPC address of a coordinator (repeatable); agent i connects to the (i mod n)th, pushes go to the last")
		caFile        = fs.String("ca", "", "site CA certificate (PEM), e.g. the ca.pem that hivectl tls ca create wrote")
		caKey         = fs.String("ca-key", "", "the CA's key (PEM): hive-load signs the agents' certificates with it, offline")
		adminCert     = fs.String("admin-cert", "", "admin certificate to push with (default: an admin certificate \"hive-load\" signed with --ca-key)")
		adminKey      = fs.String("admin-key", "", "the admin certificate's key")
		start         = fs.Int("start", 0, "start this many hive-coordinator processes on 127.0.0.1 (TLS, raft, gossip) in a temporary directory first, instead of --coordinator")
		bin           = fs.String("coordinator-bin", "", "hive-coordinator binary for --start (default: hive-coordinator beside hive-load, then $PATH)")
		coordEnv      = fs.StringArray("coordinator-env", nil, "with --start: KEY=VALUE in the coordinators' environment (repeatable; e.g. GOGC=50)")
		coordArgs     = fs.StringArray("coordinator-arg", nil, "with --start: an extra hive-coordinator argument (repeatable)")
		keep          = fs.Bool("keep", false, "with --start: keep the directory (PKI, data, logs) and print its path")
		agents        = fs.Int("agents", 1000, "simulated agents, each with its own certificate and connection")
		lb            = fs.Int("lb", 10, "agents labelled tier=lb (their addresses go into every web node's firewall rule)")
		prefix        = fs.String("prefix", "load", "node name prefix")
		parallel      = fs.Int("connect-parallel", 64, "agents connecting (TLS handshake, registration) at a time")
		pushes        = fs.Int("pushes", 5, "pushes to time once every agent watches")
		pushInterval  = fs.Duration("push-interval", time.Second, "pause between pushes")
		pushTimeout   = fs.Duration("push-timeout", time.Minute, "how long a push may take to reach every watcher before the missing ones count as errors")
		obs           = fs.Duration("observe", 0, "with --pushes 0: watch this long for generations pushed by an operator and time their spread")
		nplans        = fs.Int("plans", 0, "plans (as hivectl plan) to time after the pushes; every simulated agent answers its dry run with ReportPlan")
		planInterval  = fs.Duration("plan-interval", 500*time.Millisecond, "pause between plans")
		planTimeout   = fs.Duration("plan-timeout", 30*time.Second, "each plan's timeout for the agents' answers (PlanRequest.timeout)")
		perAgent      = fs.Int("reports-per-agent", 20, "reports each agent sends after the pushes (0: none)")
		reportMode    = fs.String("report-mode", "stream", "how each agent sends its reports: stream (one ReportStream, as agents do) or unary (a Report call each, as agents before the stream did)")
		inflight      = fs.Int("report-inflight", 1, "with --report-mode stream: reports each agent has in flight on its stream (the coordinator reads 8 ahead)")
		reportTimeout = fs.Duration("report-duration", time.Minute, "the report phase stops after this long at the latest")
		results       = fs.Int("results", 5, "resource results per report")
		pids          = fs.IntSlice("pid", nil, "process id of a coordinator on this machine whose RSS, peak RSS and CPU to report (repeatable)")
		metrics       = fs.StringArray("metrics", nil, "/metrics address (host:port) of another coordinator whose RSS, CPU, Go heap, stacks and goroutines to report (repeatable; --pid and --metrics each name different coordinators)")
		hold          = fs.Duration("hold", 0, "keep every agent connected this long after the figures are printed (to inspect or profile the coordinators)")
		quiet         = fs.Bool("quiet", false, "print only the figures, not the progress")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (all settings are flags; see --help)", fs.Arg(0))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	cfg := load.Config{
		Agents: *agents, LB: *lb, Prefix: *prefix, ConnectParallel: *parallel,
		Pushes: *pushes, PushInterval: *pushInterval, PushTimeout: *pushTimeout, Observe: *obs,
		Plans: *nplans, PlanInterval: *planInterval, PlanTimeout: *planTimeout,
		ReportsPerAgent: *perAgent, ReportDuration: *reportTimeout, Results: *results,
		ReportMode: *reportMode, ReportInflight: *inflight,
		Hold: *hold, Log: os.Stderr,
	}
	for _, p := range *pids {
		cfg.Coordinators = append(cfg.Coordinators, load.Target{PID: p})
	}
	for _, m := range *metrics {
		cfg.Coordinators = append(cfg.Coordinators, load.Target{Metrics: m})
	}
	if *quiet {
		cfg.Log = nil
	}
	if *start > 0 {
		if len(*addrs) > 0 || *caFile != "" || *caKey != "" {
			return errors.New("--start makes its own coordinators and CA: leave out --coordinator, --ca and --ca-key")
		}
		path, err := coordinatorBin(*bin)
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp("", "hive-load-")
		if err != nil {
			return err
		}
		if *keep {
			fmt.Fprintln(os.Stderr, "hive-load: cluster directory", dir)
		} else {
			defer os.RemoveAll(dir)
		}
		fmt.Fprintf(os.Stderr, "starting %d coordinators (%s) in %s\n", *start, path, dir)
		c, err := load.StartCluster(ctx, load.ClusterOptions{Bin: path, Dir: dir, N: *start, Env: *coordEnv, Args: *coordArgs})
		if err != nil {
			return err
		}
		defer c.Stop()
		cfg.Addrs, cfg.CA = c.Addrs, c.CA
		for i, p := range c.PIDs() {
			cfg.Coordinators = append(cfg.Coordinators, load.Target{PID: p, Metrics: c.HTTP[i]})
		}
		if *hold > 0 {
			fmt.Fprintf(os.Stderr, "coordinators: gRPC %s, /metrics %s\n", strings.Join(c.Addrs, " "), strings.Join(c.HTTP, " "))
		}
	} else {
		if len(*addrs) == 0 {
			return errors.New("no coordinator: give --coordinator ADDR (repeatable) or --start 3")
		}
		if *caFile == "" || *caKey == "" {
			return errors.New("--ca and --ca-key are required: hive-load issues every simulated agent its own certificate")
		}
		ca, err := pki.LoadCA(*caFile, *caKey)
		if err != nil {
			return err
		}
		cfg.Addrs, cfg.CA = *addrs, ca
	}
	if (*adminCert == "") != (*adminKey == "") {
		return errors.New("give both --admin-cert and --admin-key, or neither")
	}
	if *adminCert != "" {
		c, err := tls.LoadX509KeyPair(*adminCert, *adminKey)
		if err != nil {
			return fmt.Errorf("--admin-cert: %w", err)
		}
		cfg.Admin = &c
	}
	cfg.Held = func(r *load.Result) { r.Print(os.Stdout) }
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.Hold == 0 {
		res.Print(os.Stdout)
	}
	if res.Errors() > 0 {
		os.Exit(2)
	}
	return nil
}

func coordinatorBin(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "hive-coordinator")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("hive-coordinator")
	if err != nil {
		return "", errors.New("no hive-coordinator binary: give --coordinator-bin (go build -o bin/ ./cmd/hive-coordinator)")
	}
	return p, nil
}
