package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
)

// Environment variables read for the connection flags (a flag wins).
const (
	envAddr   = "HIVE_ADDR"   // comma-separated host[:port] list
	envCACert = "HIVE_CACERT" // CA certificate file
	envCert   = "HIVE_CERT"   // client certificate file
	envKey    = "HIVE_KEY"    // client key file
	envDev    = "HIVE_DEV"    // "1" or "true": plaintext, like --dev
)

// rpcTimeout bounds each unary call.
const rpcTimeout = 30 * time.Second

// connFlags are the global connection flags shared by every command that
// talks to a coordinator.
type connFlags struct {
	addrs    []string
	ca       string
	cert     string
	key      string
	insecure bool
	// getenv is os.Getenv; tests replace it.
	getenv func(string) string
	// warn receives warnings (the command's stderr).
	warn io.Writer
}

// addConnectionFlags registers --addr, --ca, --cert, --key and --dev (alias
// --insecure) as persistent flags of root.
func addConnectionFlags(root *cobra.Command) *connFlags {
	cf := &connFlags{getenv: os.Getenv}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&cf.addrs, "addr", nil,
		"coordinator gRPC address host[:port] (port 7400 by default); repeat or separate with commas, the first that answers is used (env "+envAddr+"; default "+client.DefaultAddr+")")
	pf.StringVar(&cf.ca, "ca", "", "CA certificate that signed the coordinators' certificates (env "+envCACert+")")
	pf.StringVar(&cf.cert, "cert", "", "client certificate, usually an admin one (env "+envCert+")")
	pf.StringVar(&cf.key, "key", "", "client certificate's private key (env "+envKey+")")
	pf.BoolVar(&cf.insecure, "dev", false, "talk plaintext to a coordinator started with --dev (env "+envDev+"=1)")
	pf.BoolVar(&cf.insecure, "insecure", false, "same as --dev")
	return cf
}

// config builds the client configuration from flags, then environment.
func (cf *connFlags) config() (client.Config, error) {
	cfg := client.DefaultConfig()
	getenv := cf.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	addrs := cf.addrs
	if len(addrs) == 0 {
		if env := getenv(envAddr); env != "" {
			addrs = strings.Split(env, ",")
		}
	}
	if len(addrs) > 0 {
		cfg.Addrs = nil
		for _, a := range addrs {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Addrs = append(cfg.Addrs, a)
			}
		}
	}
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return getenv(env)
	}
	cfg.CA = pick(cf.ca, envCACert)
	cfg.Cert = pick(cf.cert, envCert)
	cfg.Key = pick(cf.key, envKey)
	cfg.Insecure = cf.insecure
	if !cfg.Insecure {
		switch strings.ToLower(getenv(envDev)) {
		case "1", "true", "yes":
			cfg.Insecure = true
		}
	}
	if err := cfg.Validate(); err != nil {
		if errors.Is(err, client.ErrNoTLSFiles) {
			return cfg, errors.New("no TLS files given: use --ca, --cert and --key (or " + envCACert + ", " + envCert + ", " + envKey +
				"), or --dev for a coordinator started with --dev; make certificates with 'hivectl tls'")
		}
		return cfg, err
	}
	return cfg, nil
}

// dial connects to the first coordinator that answers.
func (cf *connFlags) dial(ctx context.Context) (*client.Conn, error) {
	cfg, err := cf.config()
	if err != nil {
		return nil, err
	}
	cfg.Failover = true
	if cf.warn != nil {
		warn := cf.warn
		cfg.OnFailover = func(from, to string, err error) {
			fmt.Fprintf(warn, "hivectl: coordinator %s failed (%s): moved on to %s\n", esc(from), esc(err.Error()), esc(to))
		}
	}
	conn, err := client.Dial(ctx, cfg)
	if err != nil {
		return nil, dialError(err, cfg.Insecure)
	}
	if !conn.Serving && cf.warn != nil {
		fmt.Fprintf(cf.warn, "hivectl: warning: coordinator %s is not serving yet (starting, or its cluster has no leader yet): answers may be incomplete and writes will fail\n", esc(conn.Addr))
	}
	return conn, nil
}

// dialError adds a hint to a failed dial when the cause is recognisable.
func dialError(err error, insecure bool) error {
	var de *client.DialError
	if !errors.As(err, &de) {
		return err
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return fmt.Errorf("%w\n(the coordinator speaks plaintext: if it runs with --dev, use --dev)", err)
	case insecure && (strings.Contains(msg, "error reading server preface") || strings.Contains(msg, "connection reset")):
		return fmt.Errorf("%w\n(the coordinator may expect TLS: drop --dev and give --ca, --cert and --key)", err)
	case strings.Contains(msg, "unknown authority"):
		return fmt.Errorf("%w\n(the coordinator's certificate is not signed by the CA given with --ca/%s)", err, envCACert)
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate"):
		return fmt.Errorf("%w\n(the coordinator refused the client certificate: give one its CA signed, with --cert/--key)", err)
	}
	return err
}

// withConn dials, runs f with a per-call timeout context, and closes.
func (cf *connFlags) withConn(cmd *cobra.Command, f func(ctx context.Context, c *client.Conn) error) error {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	cf.warn = cmd.ErrOrStderr()
	conn, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return f(ctx, conn)
}

// callCtx returns a context bounded by rpcTimeout.
func callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, rpcTimeout)
}
