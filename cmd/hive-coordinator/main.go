// Command hive-coordinator runs one server of the coordinator cluster (see
// package coordinator). Flags may also come from a YAML file given with
// --config whose keys are the flag names (flags on the command line win):
//
//	name: c1
//	data-dir: /var/lib/hive-coordinator
//	join: [10.0.0.2:7402, 10.0.0.3:7402]
//	bootstrap-expect: 3
//	tls-ca: /etc/hive/ca.pem
//
// `hive-coordinator keyring generate|rotate|remove|list` manage the secret
// keyring file; `hive-coordinator recover` rewrites a stopped survivor's
// raft configuration for disaster recovery (docs/operations.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hivefleet/hive/coordinator"
	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/internal/memtrim"
	"github.com/hivefleet/hive/version"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "recover" {
		if err := recoverCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "hive-coordinator recover:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "keyring" {
		if err := keyringCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "hive-coordinator keyring:", err)
			os.Exit(1)
		}
		return
	}
	gcDefaults()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "hive-coordinator:", err)
		os.Exit(1)
	}
}

// defaultGOGC is the coordinator's garbage-collection target when the
// environment sets no GOGC: the heap may grow to 1.5 times the live heap
// between collections instead of Go's default 2 times. Most of a
// coordinator's memory is per connection (gRPC's transport, TLS) and per
// node, live for as long as the agents stay connected, so the collector's
// headroom was the largest item left to cut; measured in
// docs/performance.md (coordinator RSS per 1,000 nodes). GOGC in the
// environment (e.g. GOGC=100 in the systemd unit) overrides it, and
// GOMEMLIMIT works as usual.
const defaultGOGC = 50

// gcDefaults applies defaultGOGC unless GOGC is set.
func gcDefaults() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(defaultGOGC)
	}
}

// errNoGossipKey is returned, before anything starts, when gossip would run
// unencrypted outside --dev.
var errNoGossipKey = errors.New(`no gossip key: outside --dev, gossip is encrypted with one key shared by every coordinator and agent.
  make it once:       hivectl tls gossip-key create --dir /etc/hive   (writes /etc/hive/gossip.key, mode 0600)
  copy it to every server and pass it:
                      --gossip-key-file /etc/hive/gossip.key   (or "gossip-key-file: /etc/hive/gossip.key" in the --config file)
  (only --dev runs without a key)`)

// run starts a coordinator from command-line arguments and serves until
// ctx ends. ready, when not nil, receives the server once it is ready.
func run(ctx context.Context, args []string, logOut io.Writer, ready chan<- *coordinator.Server) error {
	fs := pflag.NewFlagSet("hive-coordinator", pflag.ContinueOnError)
	def := coordinator.DefaultConfig()
	host, _ := os.Hostname()
	var (
		configFile  = fs.String("config", "", "YAML file with the same keys as the flags")
		name        = fs.String("name", host, "server name (raft id, gossip name)")
		dataDir     = fs.String("data-dir", "", "directory for the raft log, snapshots and keyring (--dev: a temporary directory)")
		grpcAddr    = fs.String("grpc-addr", def.GRPCAddr, "gRPC listen address")
		raftAddr    = fs.String("raft-addr", def.RaftAddr, "raft listen address")
		gossipAddr  = fs.String("gossip-addr", def.GossipAddr, "gossip listen address (never 7946: Docker swarm's)")
		httpAddr    = fs.String("http-addr", def.HTTPAddr, "listen address of /metrics, /healthz and the dashboard /ui/ (empty: off)")
		pprofOn     = fs.Bool("pprof", false, "also serve Go's runtime profiles under /debug/pprof/ on --http-addr (unauthenticated, like /metrics: for profiling, not for production)")
		advertise   = fs.String("advertise", "", "IP to advertise when listening on 0.0.0.0")
		join        = fs.StringArray("join", nil, "gossip address of a member to join (repeatable, retried); the leader adds this server to raft as a non-voter once it has checked this server's coordinator certificate (its name and --ip covering the advertised address), and promotes it once caught up")
		expect      = fs.Int("bootstrap-expect", 0, "bootstrap raft once this many coordinators found each other through gossip and proved their coordinator certificates")
		tlsCA       = fs.String("tls-ca", "", "CA certificate (PEM)")
		tlsCert     = fs.String("tls-cert", "", "this coordinator's certificate (PEM)")
		tlsKey      = fs.String("tls-key", "", "this coordinator's key (PEM)")
		tlsCAKey    = fs.String("tls-ca-key", "", "CA key, to sign agent certificates for bootstrap tokens (optional)")
		certLife    = fs.Duration("agent-cert-lifetime", def.AgentCertLifetime, "lifetime of the agent certificates this coordinator signs (bootstrap and renewal; agents renew at 2/3 of it)")
		keyringFile = fs.String("keyring", "", "secret keyring file (default DATA-DIR/keyring.json)")
		gossipKey   = fs.String("gossip-key-file", "", "file with the base64 gossip encryption key (the same on every member)")
		gossipProf  = fs.String("gossip-profile", string(gossip.ProfileLAN), "gossip timing: lan, wan or local (tests)")
		dev         = fs.Bool("dev", false, "one server, plaintext allowed, everything allowed, agents' own labels trusted (no certificates), ready at once: loopback trials only")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		showVersion = fs.Bool("version", false, "print the version and exit")
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
	fromFile := map[string]bool{}
	if *configFile != "" {
		if err := applyConfigFile(fs, *configFile, fromFile); err != nil {
			return err
		}
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: lv}))

	if *gossipKey == "" && !*dev {
		return errNoGossipKey
	}

	cfg := def
	if *dev {
		cfg = coordinator.DevConfig()
		cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = def.GRPCAddr, "127.0.0.1:0", def.HTTPAddr
		if !fs.Changed("name") && !fromFile["name"] {
			*name = "dev"
		}
	}
	cfg.Name = *name
	cfg.DataDir = *dataDir
	if fs.Changed("grpc-addr") || !*dev {
		cfg.GRPCAddr = *grpcAddr
	}
	if fs.Changed("raft-addr") || !*dev {
		cfg.RaftAddr = *raftAddr
	}
	cfg.GossipAddr = *gossipAddr
	cfg.HTTPAddr = *httpAddr
	cfg.Pprof = *pprofOn
	cfg.AdvertiseAddr = *advertise
	cfg.Join = *join
	if !*dev {
		cfg.BootstrapExpect = *expect
	}
	cfg.TLSCA, cfg.TLSCert, cfg.TLSKey, cfg.TLSCAKey = *tlsCA, *tlsCert, *tlsKey, *tlsCAKey
	cfg.AgentCertLifetime = *certLife
	cfg.KeyringFile = *keyringFile
	cfg.Logger = log
	if *dev && cfg.DataDir == "" {
		tmp, err := os.MkdirTemp("", "hive-coordinator-dev-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		cfg.DataDir = tmp
	}
	if !*dev && cfg.BootstrapExpect > 1 && len(cfg.Join) == 0 {
		log.Warn("--bootstrap-expect without --join: waiting for other coordinators to join this one")
	}
	if !*dev && cfg.BootstrapExpect == 0 && len(cfg.Join) == 0 {
		log.Warn("neither --bootstrap-expect nor --join: this server waits until a cluster's leader adds it (AddPeer)")
	}
	cfg.GossipProfile = *gossipProf
	if *gossipKey != "" {
		data, err := os.ReadFile(*gossipKey)
		if err != nil {
			return fmt.Errorf("--gossip-key-file: %w", err)
		}
		if cfg.GossipKey, err = gossip.ParseKey(data); err != nil {
			return fmt.Errorf("--gossip-key-file %s: %w", *gossipKey, err)
		}
	}

	start := time.Now()
	srv, err := coordinator.New(cfg)
	if err != nil {
		return err
	}
	go notifySystemd(ctx, srv, log)
	// Return a push's or a reconnect storm's memory to the kernel once the
	// coordinator is quiet again, instead of keeping the burst's heap for
	// minutes (package memtrim; docs/performance.md, coordinator RSS).
	go memtrim.Run(ctx, memtrim.DefaultInterval, func(before, after memtrim.Sample) {
		log.Debug("returned memory after a burst", "heap_before", before.Objects+before.Free, "heap_after", after.Objects+after.Free, "live", after.Live)
	})
	go func() {
		select {
		case <-srv.Ready():
			if ready != nil {
				ready <- srv
			}
			log.Info("coordinator ready", "grpc", srv.GRPCAddr(), "http", srv.HTTPAddr(), "data_dir", cfg.DataDir, "startup", time.Since(start).Round(time.Millisecond))
		case <-ctx.Done():
		}
	}()
	return srv.Run(ctx)
}

// notifySystemd tells systemd (Type=notify) when the server is ready,
// pings the watchdog at half its interval while the server is healthy, and
// says STOPPING on shutdown. Without NOTIFY_SOCKET it does nothing.
func notifySystemd(ctx context.Context, srv *coordinator.Server, log *slog.Logger) {
	select {
	case <-srv.Ready():
	case <-ctx.Done():
		return
	}
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY", "err", err)
	} else if !ok {
		return // not under systemd
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	var tick <-chan time.Time
	if err == nil && interval > 0 {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
			return
		case <-tick:
			if err := srv.Healthy(); err != nil {
				log.Error("not pinging the systemd watchdog", "err", err)
				continue
			}
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}

// applyConfigFile sets every flag the YAML file names and the command line
// did not set.
func applyConfigFile(fs *pflag.FlagSet, path string, fromFile map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	m := map[string]any{}
	flatten("", raw, m)
	// Keys of the first packaged coordinator.yaml: node (the name) and
	// bootstrap (true: this server bootstraps alone, the others join it).
	if v, ok := m["node"]; ok {
		if _, dup := m["name"]; !dup {
			m["name"] = v
		}
		delete(m, "node")
	}
	if v, ok := m["bootstrap"]; ok {
		if b, _ := v.(bool); b {
			if _, dup := m["bootstrap-expect"]; !dup {
				m["bootstrap-expect"] = 1
			}
		}
		delete(m, "bootstrap")
	}
	for k, v := range m {
		f := fs.Lookup(k)
		if f == nil || k == "config" {
			return fmt.Errorf("config %s: unknown key %q", path, k)
		}
		if f.Changed {
			continue
		}
		var vals []string
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				vals = append(vals, fmt.Sprint(e))
			}
		case bool:
			vals = []string{strconv.FormatBool(x)}
		case nil:
			continue
		case string:
			if x == "" && k == "name" {
				continue // empty: keep the default (the host name)
			}
			vals = []string{x}
		default:
			vals = []string{fmt.Sprint(x)}
		}
		for _, s := range vals {
			if err := fs.Set(k, s); err != nil {
				return fmt.Errorf("config %s: key %s: %w", path, k, err)
			}
		}
		fromFile[k] = true
	}
	return nil
}

// flatten turns nested maps into flag names ("tls: {ca: x}" → "tls-ca")
// and accepts underscores for dashes ("data_dir" → "data-dir").
func flatten(prefix string, in map[string]any, out map[string]any) {
	for k, v := range in {
		name := strings.ReplaceAll(k, "_", "-")
		if prefix != "" {
			name = prefix + "-" + name
		}
		if sub, ok := v.(map[string]any); ok {
			flatten(name, sub, out)
			continue
		}
		out[name] = v
	}
}

// recoverCmd rewrites a stopped server's raft configuration to itself
// alone (disaster recovery from a single survivor).
func recoverCmd(args []string) error {
	fs := pflag.NewFlagSet("hive-coordinator recover", pflag.ContinueOnError)
	host, _ := os.Hostname()
	name := fs.String("name", host, "this server's name (raft id)")
	dataDir := fs.String("data-dir", "", "the stopped server's data directory")
	raftAddr := fs.String("raft-addr", "", "this server's raft address as other servers reach it (host:port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := coordinator.Recover(*dataDir, *name, *raftAddr, log); err != nil {
		return err
	}
	fmt.Printf("%s is now a one-server cluster; start it, then let new servers --join it\n", *name)
	return nil
}

func keyringCmd(args []string) error {
	usage := "usage: hive-coordinator keyring generate FILE | rotate FILE | remove FILE KEY-ID | list FILE"
	if len(args) < 2 {
		return errors.New(usage)
	}
	file := args[1]
	switch args[0] {
	case "generate":
		if _, err := os.Stat(file); err == nil {
			return fmt.Errorf("%s exists; refusing to overwrite a keyring", file)
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return err
		}
		k, err := keyring.New()
		if err != nil {
			return err
		}
		if err := k.Save(file); err != nil {
			return err
		}
		fmt.Printf("wrote %s (primary key %s); copy it to every coordinator\n", file, k.Primary())
	case "rotate":
		k, err := keyring.Load(file)
		if err != nil {
			return err
		}
		id, err := k.Rotate()
		if err != nil {
			return err
		}
		if err := k.Save(file); err != nil {
			return err
		}
		fmt.Printf("new primary key %s in %s; copy the file to every coordinator and restart them, then set the secrets again\n", id, file)
	case "remove":
		if len(args) != 3 {
			return errors.New(usage)
		}
		k, err := keyring.Load(file)
		if err != nil {
			return err
		}
		if err := k.Remove(args[2]); err != nil {
			return err
		}
		if err := k.Save(file); err != nil {
			return err
		}
		fmt.Printf("removed key %s from %s\n", args[2], file)
	case "list":
		k, err := keyring.Load(file)
		if err != nil {
			return err
		}
		for _, id := range k.IDs() {
			mark := ""
			if id == k.Primary() {
				mark = " (primary)"
			}
			fmt.Println(id + mark)
		}
	default:
		return errors.New(usage)
	}
	return nil
}
