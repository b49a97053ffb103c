// Command hive-agent runs on every server of a hive site: it joins the
// gossip pool, watches its desired state from the coordinators, converges
// the machine to it and reports (see package agent). Flags may also come
// from a YAML file (--config, default /etc/hive/agent.yaml when it exists)
// whose keys are the flag names; flags on the command line win:
//
//	name: web-1
//	data-dir: /var/lib/hive/agent
//	join: [10.0.0.2:7402, 10.0.0.3:7402]
//	labels: {tier: web}
//	tls-ca: /etc/hive/tls/ca.crt
//
// The packaged file's spelling (node, state_dir, tls: {ca, cert, key})
// is accepted too. SIGHUP starts a convergence run at once; SIGTERM and
// SIGINT stop the agent cleanly.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/version"
)

// errNoGossipKey is returned, before anything starts, when gossip would run
// unencrypted outside --dev.
var errNoGossipKey = errors.New(`no gossip key: outside --dev, gossip is encrypted with one key shared by every coordinator and agent.
  make it once:       hivectl tls gossip-key create --dir /etc/hive   (writes /etc/hive/gossip.key, mode 0600)
  copy it to every server and pass it:
                      --gossip-key-file /etc/hive/gossip.key   (or "gossip-key-file: /etc/hive/gossip.key" in ` + DefaultConfigFile + `)
  (--dev runs without a key; --no-gossip runs without gossip)`)

// DefaultConfigFile is read when --config is not given and it exists.
const DefaultConfigFile = "/etc/hive/agent.yaml"

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		// An agent is a background daemon on every server, idle nearly
		// all the time, and its work (converging files, packages,
		// services) waits on the disk and on other programs, not on CPU.
		// One P keeps the idle cost down: each further P adds scheduler
		// wake-ups and spinning on every timer and packet (measured on
		// the netns harness: 0.082% → 0.064% of a core per idle agent,
		// 2 → 1; docs/performance.md). GOMAXPROCS in the environment
		// wins.
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		// The live heap is a few MB, so the default GOGC=100 collects
		// after every few MB allocated: while a pool of hundreds of
		// members forms (membership messages decoded by the thousand),
		// perf showed a third of the agents' CPU in the collector.
		// 200 halves the collections for a few MB more. GOGC in the
		// environment wins.
		debug.SetGCPercent(200)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hive-agent:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("hive-agent", pflag.ContinueOnError)
	def := agent.DefaultConfig()
	host, _ := os.Hostname()
	var (
		configFile   = fs.String("config", "", "YAML file with the same keys as the flags (default "+DefaultConfigFile+" if it exists)")
		name         = fs.String("name", host, "node name (the agent certificate's name)")
		dataDir      = fs.String("data-dir", def.DataDir, "offline cache and report queue")
		gossipAddr   = fs.String("gossip-addr", gossip.DefaultConfig().BindAddr, "gossip listen address (never 7946: Docker swarm's)")
		advertise    = fs.String("advertise-addr", "", "IP or IP:port other members reach this node's gossip at")
		join         = fs.StringArray("join", nil, "gossip address of a coordinator or agent to join (repeatable, retried with backoff)")
		coords       = fs.StringArray("coordinator", nil, "coordinator gRPC address to use besides those found through gossip (repeatable)")
		labels       = fs.StringArray("label", nil, "a label key=value this node reports about itself: a fact (templates: .Reported), never matched by selectors, which match the labels bound in its certificate (repeatable)")
		labelsFile   = fs.String("labels-file", "", "file of KEY=VALUE lines with more labels (# comments)")
		tlsCA        = fs.String("tls-ca", "", "CA certificate (PEM)")
		tlsCert      = fs.String("tls-cert", "", "this agent's certificate (PEM)")
		tlsKey       = fs.String("tls-key", "", "this agent's key (PEM)")
		bootstrapTok = fs.String("bootstrap-token-file", "", "single-use token to obtain this agent's certificate when --tls-cert/--tls-key do not exist yet")
		gossipKey    = fs.String("gossip-key-file", "", "file with the base64 gossip encryption key")
		gossipProf   = fs.String("gossip-profile", string(gossip.ProfileLAN), "gossip timing: lan, wan or local (tests)")
		gossipPool   = fs.Int("gossip-pool-size", 0, "members the gossip pool is sized for (lan timing: probe and gossip intervals grow past 64); 0: the size this agent saw last, remembered in --data-dir")
		joinSpread   = fs.Duration("gossip-join-spread", 0, "longest random delay before joining gossip, so a fleet starting at once does not join at once; 0: 30ms per member of the pool size, 1s to 60s")
		interval     = fs.Duration("interval", def.Interval, "drift-check period (jittered)")
		root         = fs.String("root", "", "converge under this sandbox root: files written below it, everything else only planned")
		dryRun       = fs.Bool("dry-run", false, "plan and report, change nothing")
		dockerHost   = fs.String("docker-host", "", "Docker Engine API endpoint for swarm resources (default unix:///var/run/docker.sock)")
		dockerReload = fs.String("docker-reload", "", "command (words split on spaces, no shell) that makes dockerd reload daemon.json after hive changed its registry settings (default: systemctl reload docker.service)")
		dev          = fs.Bool("dev", false, "plaintext gRPC and no gossip key, to pair with hive-coordinator --dev")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		showVersion  = fs.Bool("version", false, "print the version and exit")
		addresses    = fs.StringArray("address", nil, "address of this node given to the coordinators (default: the gossip address)")
		maxQueued    = fs.Int("max-queued-reports", def.MaxQueuedReports, "reports kept on disk while no coordinator is reachable")
		metricsAddr  = fs.String("metrics-addr", "", "serve Prometheus metrics on /metrics at this loopback HOST:PORT, e.g. 127.0.0.1:9464 (off when empty)")
		metricsAny   = fs.Bool("metrics-allow-remote", false, "allow --metrics-addr on a non-loopback address (the endpoint has no authentication)")
		rebootCmd    = fs.String("reboot-command", "", "run this (with /bin/sh -c) instead of `systemctl reboot` when the coordinators order a coordinated reboot; with it set, a restart of the agent counts as the node coming back")
		noGossip     = fs.Bool("no-gossip", false, "do not join gossip; use --coordinator addresses only")
		retryMin     = fs.Duration("retry-min", def.RetryMin, "first retry delay of a failed run")
		stopGrace    = fs.Duration("stop-grace", def.StopGrace, "on SIGTERM, or when a newer generation arrives, how long a run in progress may go on before it is cancelled")
		reconnectMax = fs.Duration("reconnect-max", def.ReconnectMax, "longest delay between coordinator reconnects")
		spread       = fs.Duration("reconnect-spread", def.ReconnectSpread, "after losing a healthy stream, reconnect after a random delay up to this")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	cf := *configFile
	if cf == "" {
		if _, err := os.Stat(DefaultConfigFile); err == nil {
			cf = DefaultConfigFile
		}
	}
	if cf != "" {
		if err := applyConfigFile(fs, cf); err != nil {
			return err
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))

	cfg := def
	cfg.Name = *name
	cfg.DataDir = *dataDir
	cfg.Coordinators = *coords
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey = *tlsCA, *tlsCert, *tlsKey
	cfg.BootstrapTokenFile = *bootstrapTok
	cfg.Dev = *dev
	cfg.Interval = *interval
	cfg.Root = *root
	cfg.DryRun = *dryRun
	cfg.DockerHost = *dockerHost
	cfg.DockerReload = strings.Fields(*dockerReload)
	cfg.Addresses = *addresses
	cfg.MaxQueuedReports = *maxQueued
	cfg.MetricsAddr, cfg.MetricsAllowRemote = *metricsAddr, *metricsAny
	if *rebootCmd != "" {
		cfg.RebootCommand = []string{"/bin/sh", "-c", *rebootCmd}
	}
	cfg.RetryMin = *retryMin
	cfg.StopGrace = *stopGrace
	cfg.ReconnectMax = *reconnectMax
	cfg.ReconnectSpread = *spread
	cfg.Logger = log
	lbl := map[string]string{}
	if *labelsFile != "" {
		data, err := os.ReadFile(*labelsFile)
		if err != nil {
			return fmt.Errorf("--labels-file: %w", err)
		}
		if err := parseLabels(*labelsFile, data, lbl); err != nil {
			return err
		}
	}
	for _, l := range *labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return fmt.Errorf("--label %q: want key=value", l)
		}
		lbl[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	cfg.Labels = lbl
	if *noGossip {
		cfg.Gossip = nil
	} else {
		g := gossip.DefaultConfig()
		g.BindAddr = *gossipAddr
		g.AdvertiseAddr = *advertise
		g.Join = *join
		g.Profile = gossip.Profile(*gossipProf)
		if *gossipPool < 0 {
			return fmt.Errorf("--gossip-pool-size %d: must not be negative", *gossipPool)
		}
		if *joinSpread < 0 {
			return fmt.Errorf("--gossip-join-spread %v: must not be negative", *joinSpread)
		}
		g.PoolSize = *gossipPool
		g.JoinSpread = *joinSpread
		switch {
		case *gossipKey != "":
			data, err := os.ReadFile(*gossipKey)
			if err != nil {
				return fmt.Errorf("--gossip-key-file: %w", err)
			}
			k, err := gossip.ParseKey(data)
			if err != nil {
				return fmt.Errorf("--gossip-key-file %s: %w", *gossipKey, err)
			}
			g.Key = k
		case !*dev:
			return errNoGossipKey
		}
		cfg.Gossip = &g
	}

	deps, err := agent.NewEngine(cfg, log)
	if err != nil {
		return err
	}
	a, err := agent.New(cfg, deps)
	if err != nil {
		if deps.Close != nil {
			deps.Close()
		}
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: converging now")
				a.Trigger(agent.TriggerSignal)
			}
		}
	}()
	log.Info("hive-agent starting", "name", cfg.Name, "version", version.Version, "data_dir", cfg.DataDir, "root", cfg.Root, "dry_run", cfg.DryRun, "dev", cfg.Dev)
	return a.Run(ctx)
}

// parseLabels reads KEY=VALUE lines (blank lines and # comments skipped).
func parseLabels(name string, data []byte, into map[string]string) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("%s:%d: want KEY=VALUE, got %q", name, n, line)
		}
		into[k] = strings.TrimSpace(v)
	}
	return sc.Err()
}

// aliases maps the packaged agent.yaml's spelling to flag names.
var aliases = map[string]string{
	"node": "name", "state_dir": "data-dir", "labels": "label",
}

// applyConfigFile sets every flag the YAML file names and the command line
// did not set.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	set := func(k string, v any) error {
		if a, ok := aliases[k]; ok {
			k = a
		}
		k = strings.ReplaceAll(k, "_", "-")
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config %s: unknown key %q", path, k)
		}
		if f.Changed {
			return nil
		}
		var vals []string
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				vals = append(vals, fmt.Sprint(e))
			}
		case map[string]any: // labels: {k: v}
			for lk, lv := range x {
				vals = append(vals, lk+"="+fmt.Sprint(lv))
			}
		case bool:
			vals = []string{strconv.FormatBool(x)}
		case nil:
			return nil
		default:
			vals = []string{fmt.Sprint(x)}
		}
		for _, s := range vals {
			if s == "" { // the packaged file's `node: ""`: keep the default
				continue
			}
			if err := fs.Set(k, s); err != nil {
				return fmt.Errorf("config %s: key %s: %w", path, k, err)
			}
		}
		return nil
	}
	for k, v := range m {
		if k == "tls" {
			t, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("config %s: tls: want a map of ca, cert, key", path)
			}
			for tk, tv := range t {
				if err := set("tls-"+tk, tv); err != nil {
					return err
				}
			}
			continue
		}
		if err := set(k, v); err != nil {
			return err
		}
	}
	return nil
}
