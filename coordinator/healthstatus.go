package coordinator

import (
	"context"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// MaxDriftRepairsListed caps one ListDriftRepairs answer (newest first).
const MaxDriftRepairsListed = 10000

// fillHealth copies a node's check results and health from its last
// committed report, and health_since from the store's record of it.
func fillHealth(ns *hivev1.NodeStatus, r *hivev1.Report, rec *hivev1.CheckNodeRecord) {
	ns.Checks = r.GetChecks()
	ns.Health = r.GetHealth()
	ns.Services = r.GetServices() // bounded at the API (limits.CheckReport)
	if rec.GetHealth() == ns.Health && ns.Health != hivev1.Health_HEALTH_UNSPECIFIED {
		ns.HealthSince = rec.GetHealthSince()
	}
}

// ListDriftRepairs lists the recorded drift repairs, newest first.
func (a *api) ListDriftRepairs(ctx context.Context, req *hivev1.ListDriftRepairsRequest) (*hivev1.ListDriftRepairsResponse, error) {
	st := a.s.fsm.Store()
	var since = req.GetSince()
	if since != nil {
		if err := since.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
	}
	if n := req.GetNode(); n != "" && st.Node(n) == nil && st.Report(n) == nil {
		return nil, status.Errorf(codes.NotFound, "node %q is not known (it has never watched or reported)", n)
	}
	var from = since.AsTime()
	if since == nil {
		from = from.AddDate(-1000, 0, 0)
	}
	out := st.DriftRepairs(req.GetNode(), from)
	resp := &hivev1.ListDriftRepairsResponse{RaftIndex: st.Index()}
	if len(out) > MaxDriftRepairsListed {
		out, resp.Truncated = out[:MaxDriftRepairsListed], true
	}
	resp.Repairs = out
	return resp, nil
}

// healthCollector exports nodes by health and, per check, how many nodes
// fail it, from the committed reports.
type healthCollector struct{ s *Server }

var (
	nodesByHealthDesc = prometheus.NewDesc("hive_coordinator_nodes_by_health",
		"Nodes by the health of their last report (passing, failing, none: no checks or no result yet).", []string{"health"}, nil)
	checkFailingDesc = prometheus.NewDesc("hive_coordinator_check_failing_nodes",
		"Nodes on which a health check (ROLE/NAME, or builtin/...) counts as failing; checks that fail nowhere are 0 while some node runs them.", []string{"check"}, nil)
)

func (c healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- nodesByHealthDesc
	ch <- checkFailingDesc
}

func (c healthCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]float64{"passing": 0, "failing": 0, "none": 0}
	failing := map[string]float64{}
	for _, r := range c.s.fsm.Store().Reports() {
		switch r.GetHealth() {
		case hivev1.Health_HEALTH_PASSING:
			counts["passing"]++
		case hivev1.Health_HEALTH_FAILING:
			counts["failing"]++
		default:
			counts["none"]++
		}
		for _, x := range r.GetChecks() {
			if x.GetPassing() {
				failing[x.GetName()] += 0
			} else {
				failing[x.GetName()]++
			}
		}
	}
	for h, n := range counts {
		ch <- prometheus.MustNewConstMetric(nodesByHealthDesc, prometheus.GaugeValue, n, h)
	}
	names := make([]string, 0, len(failing))
	for n := range failing {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		ch <- prometheus.MustNewConstMetric(checkFailingDesc, prometheus.GaugeValue, failing[n], strings.ToValidUTF8(n, "?"))
	}
}
