package agent

import (
	"context"

	"google.golang.org/protobuf/proto"

	"github.com/hivefleet/hive/agent/health"
	"github.com/hivefleet/hive/limits"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TriggerHealth marks a report sent because a health check changed: a copy
// of the last run's report with the current check results (the
// coordinators keep one report per node, so it must carry the results).
const TriggerHealth = "health"

// newChecker builds the agent's health checker; a change of a check wakes
// healthLoop.
func (a *Agent) newChecker() *health.Checker {
	return health.New(health.Config{Logger: a.cfg.Logger, OnChange: func() {
		select {
		case a.healthWake <- struct{}{}:
		default:
		}
	}})
}

// setChecks gives the checker the checks of st (its roles' and the
// built-in ones): the agent calls it after each convergence run. New checks
// run at once; with kick (the run changed the machine, or converged a new
// state) every other check runs once now too, so a change that broke a
// service is seen without waiting for the checks' intervals. Drift-check
// runs that changed nothing do not kick: a check's failures then come at
// its own pace.
func (a *Agent) setChecks(st *hivev1.NodeState, kick bool) {
	checks := health.FromState(st)
	if a.deps.Builtins != nil {
		checks = append(checks, a.deps.Builtins(st)...)
	}
	if kick {
		a.health.Kick() // before Set: a new check's first run is at once anyway
	}
	a.health.Set(checks)
}

// changedAnything reports whether a run changed a resource.
func changedAnything(results []*hivev1.ResourceResult) bool {
	for _, x := range results {
		if x.GetOutcome() == hivev1.Outcome_OUTCOME_CHANGED {
			return true
		}
	}
	return false
}

// withChecks fills r's check results and health from the checker.
func (a *Agent) withChecks(r *hivev1.Report) {
	r.Checks, r.Health = a.health.Results()
}

// healthLoop queues a report whenever the checks changed, so that a
// failing check reaches the coordinators at once rather than with the next
// run.
//
// A health report still queued (no coordinator reachable, or the node over
// its report rate) is superseded by the next one and removed from the
// queue, so a flapping check does not fill the queue with copies.
func (a *Agent) healthLoop(ctx context.Context) {
	var queued uint64 // seq of the last health report queued
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.healthWake:
		}
		a.mu.Lock()
		last := a.lastReport
		a.mu.Unlock()
		if last == nil {
			continue // the first run's report carries the checks
		}
		r := proto.Clone(last).(*hivev1.Report)
		a.withChecks(r)
		if proto.Equal(&hivev1.Report{Checks: r.Checks, Health: r.Health}, &hivev1.Report{Checks: last.Checks, Health: last.Health}) {
			continue
		}
		r.Trigger = TriggerHealth
		r.DriftCheck = false
		r.Seq = a.seq.Add(1)
		limits.FitReport(r)
		a.mu.Lock()
		a.lastReport = r
		a.mu.Unlock()
		a.log.Info("health changed", "health", r.Health.String(), "checks", len(r.Checks))
		if queued != 0 {
			a.cache.Dequeue(queued) // no-op once delivered
		}
		if err := a.cache.Enqueue(r, a.cfg.MaxQueuedReports); err != nil {
			a.log.Error("cannot queue the health report", "err", err)
		}
		queued = r.Seq
		select {
		case a.reportWake <- struct{}{}:
		default:
		}
	}
}

// markCauses tells each changed resource's cause: drift when the state is
// the one the last successful run converged to (the site did not change
// for this node; the machine did), change otherwise. lastOK is "" when no
// successful run is known.
func markCauses(results []*hivev1.ResourceResult, hash, lastOK string) {
	for _, x := range results {
		if x.GetOutcome() != hivev1.Outcome_OUTCOME_CHANGED {
			continue
		}
		if lastOK != "" && hash == lastOK {
			x.Cause = hivev1.Cause_CAUSE_DRIFT
		} else {
			x.Cause = hivev1.Cause_CAUSE_CHANGE
		}
	}
}
