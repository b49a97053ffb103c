package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
)

// Config configures an Agent. Only cmd/hive-agent reads flags and files to
// fill it.
type Config struct {
	// Name is the node name (the certificate's agent name outside Dev).
	Name string
	// DataDir holds the offline cache and the report queue.
	DataDir string
	// Labels the node reports about itself, sent with every watch: facts
	// (validated by the coordinator, shown, usable in templates), never
	// matched by selectors outside --dev; its trusted labels are bound in
	// its certificate.
	Labels map[string]string
	// Addresses are sent to the coordinators as the node's addresses (for
	// peers' facts). Empty: the gossip advertise address.
	Addresses []string

	// Gossip configures membership; nil runs without gossip (then
	// Coordinators must list the coordinators). Name, Meta and Logger are
	// filled in by the agent.
	Gossip *gossip.Config
	// Coordinators are static coordinator gRPC addresses, tried in
	// addition to those learned from gossip.
	Coordinators []string

	// TLS files (CA, certificate, key); all required unless Dev.
	TLSCA, TLSCert, TLSKey string
	// Dev talks plaintext gRPC to a coordinator started with --dev.
	Dev bool
	// BootstrapTokenFile holds a single-use token: when the certificate
	// or key file is missing, the agent creates a key and obtains its
	// certificate with the token before anything else (TLSCert and TLSKey
	// then default to DataDir/tls/agent.pem and agent-key.pem).
	BootstrapTokenFile string

	// Interval is the drift-check period (jittered ±10%).
	Interval time.Duration
	// Root converges under a sandbox root: files are written below it,
	// every other kind is only planned. Empty or "/": the host.
	Root string
	// DryRun plans and reports, changing nothing.
	DryRun bool
	// DockerHost is the Docker Engine API endpoint the swarm provider
	// talks to; empty means the local engine's default socket.
	DockerHost string
	// DockerReload is the command that makes dockerd reload daemon.json
	// (the swarm provider's registry settings); empty: systemctl reload
	// docker.service.
	DockerReload []string

	// RetryMin and RetryMax bound the backoff of failed runs.
	RetryMin, RetryMax time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between watch
	// attempts (exponential, jittered).
	ReconnectMin, ReconnectMax time.Duration
	// ReconnectSpread bounds the random delay before reconnecting after a
	// healthy stream was lost: the agents of a coordinator that stops
	// spread their reconnects over this window instead of arriving at the
	// other coordinators at once.
	ReconnectSpread time.Duration
	// RunTimeout bounds one convergence run.
	RunTimeout time.Duration
	// StopGrace is how long a run may go on after the agent is told to
	// stop before its context is cancelled.
	StopGrace time.Duration
	// MaxQueuedReports bounds the on-disk report queue (oldest dropped).
	MaxQueuedReports int
	// MetricsAddr, when set, serves Prometheus metrics on /metrics there
	// (metrics.go); it must be a loopback address unless
	// MetricsAllowRemote.
	MetricsAddr        string
	MetricsAllowRemote bool
	// RebootCommand replaces `systemctl reboot` when the coordinators
	// order a reboot (reboot.go); with it set, a restart of the agent
	// counts as the node coming back.
	RebootCommand []string

	Logger *slog.Logger
}

// DefaultConfig returns the defaults: data in /var/lib/hive, a 5 minute
// drift check, gossip on :7402.
func DefaultConfig() Config {
	g := gossip.DefaultConfig()
	return Config{
		DataDir:          "/var/lib/hive",
		Gossip:           &g,
		Interval:         5 * time.Minute,
		RetryMin:         5 * time.Second,
		RetryMax:         5 * time.Minute,
		ReconnectMin:     500 * time.Millisecond,
		ReconnectMax:     30 * time.Second,
		ReconnectSpread:  5 * time.Second,
		RunTimeout:       time.Hour,
		StopGrace:        20 * time.Second,
		MaxQueuedReports: 100,
	}
}

// Validate reports what is wrong with c, every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if err := pki.ValidateName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if c.DataDir == "" || !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf("data dir %q must be an absolute path", c.DataDir))
	}
	if c.Root != "" && !filepath.IsAbs(c.Root) {
		errs = append(errs, fmt.Errorf("root %q must be an absolute path", c.Root))
	}
	if c.Gossip == nil && len(c.Coordinators) == 0 {
		errs = append(errs, errors.New("no way to find coordinators: give gossip join addresses or coordinator addresses"))
	}
	for _, a := range c.Coordinators {
		if _, err := client.NormalizeAddr(a); err != nil {
			errs = append(errs, err)
		}
	}
	if !c.Dev && c.BootstrapTokenFile == "" && (c.TLSCA == "" || c.TLSCert == "" || c.TLSKey == "") {
		errs = append(errs, errors.New("mutual TLS is required outside --dev: give --tls-ca, --tls-cert and --tls-key (or --bootstrap-token-file with --tls-ca)"))
	}
	if !c.Dev && c.BootstrapTokenFile != "" && c.TLSCA == "" {
		errs = append(errs, errors.New("a bootstrap token needs --tls-ca to verify the coordinators"))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval %v must be positive", c.Interval))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("retry backoff %v..%v is invalid", c.RetryMin, c.RetryMax))
	}
	if c.ReconnectMin <= 0 || c.ReconnectMax < c.ReconnectMin {
		errs = append(errs, fmt.Errorf("reconnect backoff %v..%v is invalid", c.ReconnectMin, c.ReconnectMax))
	}
	if c.ReconnectSpread < 0 {
		errs = append(errs, fmt.Errorf("reconnect spread %v is negative", c.ReconnectSpread))
	}
	if c.RunTimeout <= 0 || c.StopGrace < 0 {
		errs = append(errs, errors.New("run timeout must be positive and stop grace not negative"))
	}
	if c.MaxQueuedReports < 1 {
		errs = append(errs, errors.New("max queued reports must be at least 1"))
	}
	if c.MetricsAddr != "" {
		if err := checkMetricsAddr(c.MetricsAddr, c.MetricsAllowRemote); err != nil {
			errs = append(errs, err)
		}
	}
	// The coordinators refuse a watch with a bad label or address; say so
	// at start instead of retrying forever.
	if err := pki.ValidateLabels(c.Labels); err != nil {
		errs = append(errs, fmt.Errorf("labels: %w", err))
	}
	for _, a := range c.Addresses {
		if ip, err := netip.ParseAddr(a); err != nil || ip.Zone() != "" || ip.IsUnspecified() || ip.IsMulticast() {
			errs = append(errs, fmt.Errorf("address %q: want one unicast IP address (no prefix length, no zone, not 0.0.0.0 or ::)", a))
		}
	}
	return errors.Join(errs...)
}

// sandbox reports whether the agent converges under a sandbox root.
func (c *Config) sandbox() bool { return c.Root != "" && c.Root != "/" }
