package coordinator

import (
	"fmt"
	"net/http"
	"net/http/pprof"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, on a registry of its own
// (several servers can live in one test process).
type metrics struct {
	reg           *prometheus.Registry
	applyLatency  prometheus.Histogram
	pushes        *prometheus.CounterVec
	watchers      prometheus.Gauge
	watchSends    prometheus.Counter
	reports       prometheus.Counter
	reportBatches prometheus.Counter
	forwarded     prometheus.Counter
	denied        prometheus.Counter
	leaderChanges prometheus.Counter
	refused       *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.applyLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "hive_coordinator_raft_commit_seconds", Help: "Time from raft apply to commit on the leader.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	m.pushes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hive_coordinator_pushes_total", Help: "Pushes and rollbacks by result (applied, unchanged, rejected).",
	}, []string{"result"})
	m.watchers = prometheus.NewGauge(prometheus.GaugeOpts{Name: "hive_coordinator_watchers", Help: "Open WatchNodeState streams."})
	m.watchSends = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_coordinator_watch_sends_total", Help: "Node states sent to watchers."})
	m.reports = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_coordinator_reports_total", Help: "Agent reports committed through this server."})
	m.reportBatches = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_coordinator_report_batches_total", Help: "Report batches committed through this server."})
	m.forwarded = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_coordinator_forwarded_total", Help: "Writes forwarded to the leader."})
	m.denied = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_coordinator_denied_total", Help: "Calls refused by authorisation."})
	m.leaderChanges = prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_coordinator_leadership_changes_total", Help: "Times this server gained or lost raft leadership."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hive_coordinator_refused_total", Help: "Calls refused by a limit (size: request over its method's cap; shape: report outside its bounds; rate: node over its report rate; queue: report queue full).",
	}, []string{"limit"})
	for _, c := range []prometheus.Collector{m.applyLatency, m.pushes, m.watchers, m.watchSends, m.reports, m.reportBatches, m.forwarded, m.denied, m.leaderChanges, m.refused} {
		f(c)
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hive_coordinator_raft_state", Help: "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
	}, func() float64 {
		if s.raft == nil {
			return 3
		}
		switch s.raft.State() {
		case raft.Follower:
			return 0
		case raft.Candidate:
			return 1
		case raft.Leader:
			return 2
		}
		return 3
	}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hive_coordinator_raft_term", Help: "Current raft term (it grows with every election)."},
		func() float64 {
			if s.raft == nil {
				return 0
			}
			return float64(s.raft.CurrentTerm())
		}))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hive_coordinator_raft_applied_index", Help: "Last raft index applied to the FSM."},
		func() float64 { return float64(s.fsm.Store().Index()) }))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hive_coordinator_generation", Help: "Current generation."},
		func() float64 { return float64(s.fsm.Store().CurrentNumber()) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_raft_log_cache_hits_total", Help: "Raft entries read back from the in-memory log cache."},
		func() float64 { h, _ := s.logCacheStats(); return float64(h) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_raft_log_cache_misses_total", Help: "Raft entries read back from raft.db because the log cache no longer held them."},
		func() float64 { _, m := s.logCacheStats(); return float64(m) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_render_cache_hits_total", Help: "Node state renders answered from the cache."},
		func() float64 { h, _ := s.renderer.Stats(); return float64(h) }))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_render_cache_misses_total", Help: "Node state renders computed."},
		func() float64 { _, m := s.renderer.Stats(); return float64(m) }))
	gate := func(v func(g *handshakeGate) int64) func() float64 {
		return func() float64 {
			if s.handshakes == nil {
				return 0
			}
			return float64(v(s.handshakes))
		}
	}
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hive_coordinator_tls_handshakes_in_progress", Help: "Client TLS handshakes computing now (bounded: handshake.go)."},
		gate(func(g *handshakeGate) int64 { return g.inProgress.Load() })))
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "hive_coordinator_tls_handshakes_waiting", Help: "Client connections waiting for a TLS handshake slot."},
		gate(func(g *handshakeGate) int64 { return g.waiting.Load() })))
	f(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "hive_coordinator_tls_handshakes_refused_total", Help: "Client connections closed after waiting too long for a TLS handshake slot."},
		gate(func(g *handshakeGate) int64 { return g.refused.Load() })))
	f(healthCollector{s})
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.Handle("/ui/", s.dashboard()) // read-only web dashboard (dashboard.go)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		h := s.httpHealth(r.Context())
		if !h.OK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, h.String())
	})
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *Server) logCacheStats() (hits, misses uint64) {
	if s.logCache == nil {
		return 0, 0
	}
	return s.logCache.Stats()
}
