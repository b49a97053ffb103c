package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/version"
)

// The agent's Prometheus endpoint (docs/operations.md, "Agent metrics"):
// off unless Config.MetricsAddr is set, and on a loopback address unless
// Config.MetricsAllowRemote. It serves /metrics only.

// checkMetricsAddr validates --metrics-addr: host:port with an IP or
// "localhost", loopback unless remote is allowed.
func checkMetricsAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: want HOST:PORT, e.g. 127.0.0.1:9464: %v", addr, err)
	}
	if port == "" {
		return fmt.Errorf("metrics address %q: no port", addr)
	}
	if host == "localhost" {
		return nil
	}
	if host == "" {
		if allowRemote {
			return nil
		}
		return fmt.Errorf("metrics address %q listens on every interface; give a loopback address such as 127.0.0.1:%s, or pass --metrics-allow-remote", addr, port)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("metrics address %q: host must be an IP address or localhost", addr)
	}
	if !ip.IsLoopback() && !allowRemote {
		return fmt.Errorf("metrics address %q is not a loopback address; the agent's metrics are local unless --metrics-allow-remote is given", addr)
	}
	return nil
}

// agentMetrics are the agent's metrics, on a registry of its own.
type agentMetrics struct {
	reg          *prometheus.Registry
	runs         *prometheus.CounterVec
	runDuration  *prometheus.HistogramVec
	resources    *prometheus.CounterVec
	driftRepairs prometheus.Counter
	applied      prometheus.Gauge
	desired      prometheus.Gauge
	lastRun      *prometheus.GaugeVec
	connected    prometheus.Gauge
	reconnects   prometheus.Counter
	checks       *prometheus.GaugeVec
	health       prometheus.Gauge
}

func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry()}
	m.runs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_agent_runs_total",
		Help: "Convergence runs by trigger (startup, state, interval, signal, retry, firewall-rollback) and result (converged, failed)."}, []string{"trigger", "result"})
	m.runDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "hive_agent_run_duration_seconds",
		Help: "Duration of convergence runs by result.", Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12)}, []string{"result"})
	m.resources = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_agent_resources_total",
		Help: "Resource results of runs by outcome (ok, changed, failed, skipped, planned)."}, []string{"outcome"})
	m.driftRepairs = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_agent_drift_repairs_total",
		Help: "Resources found drifted from the desired state and changed back."})
	m.applied = prometheus.NewGauge(prometheus.GaugeOpts{Name: "hive_agent_applied_generation",
		Help: "Generation of the last run that converged."})
	m.desired = prometheus.NewGauge(prometheus.GaugeOpts{Name: "hive_agent_desired_generation",
		Help: "Generation of the desired state the agent holds."})
	m.lastRun = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hive_agent_last_run_timestamp_seconds",
		Help: "Unix time of the end of the last run, by result."}, []string{"result"})
	m.connected = prometheus.NewGauge(prometheus.GaugeOpts{Name: "hive_agent_watch_connected",
		Help: "1 while a watch stream to a coordinator is open and has delivered, else 0."})
	m.reconnects = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_agent_watch_disconnects_total",
		Help: "Watch streams lost (the agent then reconnects)."})
	m.checks = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hive_agent_check_passing",
		Help: "Health checks as of the last report: 1 passing, 0 failing."}, []string{"check", "kind"})
	m.health = prometheus.NewGauge(prometheus.GaugeOpts{Name: "hive_agent_health_passing",
		Help: "1 when every health check passes (or the node has none), 0 when one fails."})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hive_agent_info", Help: "The agent's version."}, []string{"version"})
	info.WithLabelValues(version.Version).Set(1)
	m.reg.MustRegister(m.runs, m.runDuration, m.resources, m.driftRepairs, m.applied, m.desired, m.lastRun,
		m.connected, m.reconnects, m.checks, m.health, info)
	return m
}

// observeRun records a finished run's report.
func (m *agentMetrics) observeRun(r *hivev1.Report, took time.Duration, ok bool) {
	result := "converged"
	if !ok {
		result = "failed"
	}
	m.runs.WithLabelValues(r.GetTrigger(), result).Inc()
	m.runDuration.WithLabelValues(result).Observe(took.Seconds())
	m.lastRun.WithLabelValues(result).Set(float64(r.GetFinished().AsTime().Unix()))
	for _, res := range r.GetResults() {
		outcome := res.GetOutcome()
		name := "unknown"
		switch outcome {
		case hivev1.Outcome_OUTCOME_OK:
			name = "ok"
		case hivev1.Outcome_OUTCOME_CHANGED:
			name = "changed"
			if res.GetCause() == hivev1.Cause_CAUSE_DRIFT {
				m.driftRepairs.Inc()
			}
		case hivev1.Outcome_OUTCOME_FAILED:
			name = "failed"
		case hivev1.Outcome_OUTCOME_SKIPPED:
			name = "skipped"
		case hivev1.Outcome_OUTCOME_PLANNED:
			name = "planned"
		}
		m.resources.WithLabelValues(name).Inc()
	}
	if ok && !r.GetDryRun() {
		m.applied.Set(float64(r.GetGeneration()))
	}
	m.observeChecks(r.GetChecks(), r.GetHealth())
}

// observeChecks records check results (from a report, or the checker at
// scrape time).
func (m *agentMetrics) observeChecks(checks []*hivev1.CheckResult, h hivev1.Health) {
	m.checks.Reset()
	if len(checks) == 0 {
		m.health.Set(1)
		return
	}
	for _, c := range checks {
		v := 0.0
		if c.GetPassing() {
			v = 1
		}
		m.checks.WithLabelValues(c.GetName(), c.GetKind()).Set(v)
	}
	if h == hivev1.Health_HEALTH_PASSING {
		m.health.Set(1)
	} else {
		m.health.Set(0)
	}
}

func (m *agentMetrics) watchUp()   { m.connected.Set(1) }
func (m *agentMetrics) watchDown() { m.connected.Set(0); m.reconnects.Inc() }

// listenMetrics binds the metrics address (New), so a bad or busy
// address fails the start.
func (a *Agent) listenMetrics() error {
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	a.metricsLn = ln
	return nil
}

// MetricsAddr returns the address the metrics endpoint listens on, or "".
func (a *Agent) MetricsAddr() string {
	if a.metricsLn == nil {
		return ""
	}
	return a.metricsLn.Addr().String()
}

// serveMetrics serves /metrics until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context) {
	mux := http.NewServeMux()
	inner := promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
	mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.health != nil {
			// The checks run between runs too: current values.
			a.metrics.observeChecks(a.health.Results())
		}
		inner.ServeHTTP(w, r)
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	a.log.Info("serving metrics", "addr", a.metricsLn.Addr().String())
	if err := srv.Serve(a.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		a.log.Error("metrics endpoint stopped", "err", err)
	}
}
