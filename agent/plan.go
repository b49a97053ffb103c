package agent

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/limits"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TriggerPlan is the trigger of a plan dry run's answer (hivectl plan).
const TriggerPlan = "plan"

// planQueue is how many plan dry runs a watch stream holds while one
// runs; more are dropped (the plan shows the node as not answering).
const planQueue = 4

// planRunner dry-runs the plans one watch stream delivers, one at a time,
// on its own goroutine, and answers over the stream's connection. It ends
// with the stream.
//
// A dry run is the engine's plan mode (converge.RunOptions{DryRun: true},
// the same code a real run plans with): nothing on the machine is touched,
// and the agent's own state is left alone — the desired state it holds,
// its cache, its applied generation, its report sequence and queue, its
// run statistics and any firewall confirm window. The engine serialises
// runs, so a dry run waits for a real run in progress and the other way
// round.
type planRunner struct {
	a    *Agent
	conn *client.Conn
	ch   chan *hivev1.PlanDryRun
}

func (a *Agent) newPlanRunner(ctx context.Context, conn *client.Conn) *planRunner {
	p := &planRunner{a: a, conn: conn, ch: make(chan *hivev1.PlanDryRun, planQueue)}
	go p.loop(ctx)
	return p
}

// offer queues a dry run; it never blocks.
func (p *planRunner) offer(pl *hivev1.PlanDryRun) {
	select {
	case p.ch <- pl:
	default:
		p.a.log.Warn("plan dry run dropped: too many waiting", "plan", pl.GetId())
	}
}

func (p *planRunner) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pl := <-p.ch:
			r, err := p.a.planDryRun(ctx, pl)
			if err != nil {
				p.a.log.Warn("plan dry run refused", "plan", pl.GetId(), "err", err)
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err = p.conn.ReportPlan(actx, &hivev1.ReportPlanRequest{PlanId: pl.GetId(), Report: r})
			cancel()
			if err != nil {
				p.a.log.Warn("plan answer not delivered", "plan", pl.GetId(), "err", err)
				continue
			}
			p.a.log.Info("plan answered", "plan", pl.GetId(), "generation", r.GetGeneration(), "results", len(r.GetResults()))
		}
	}
}

// errPlanState is returned for a plan dry run whose state is not for this
// node or is past its deadline.
var errPlanState = errors.New("plan dry run not for this node or too late")

// planDryRun dry-runs a plan's state and returns the answer, fitted to the
// coordinator's report limits. It changes nothing on the machine or in
// the agent.
func (a *Agent) planDryRun(ctx context.Context, pl *hivev1.PlanDryRun) (*hivev1.Report, error) {
	st := pl.GetState()
	if st == nil || st.GetNode() != a.cfg.Name || pl.GetId() == "" {
		return nil, errPlanState
	}
	deadline := pl.GetDeadline().AsTime()
	if pl.GetDeadline() == nil || time.Now().After(deadline) {
		return nil, errPlanState
	}
	rctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	rctx, cancel2 := context.WithTimeout(rctx, a.cfg.RunTimeout)
	defer cancel2()
	started := time.Now()
	rep, err := a.deps.Engine.Run(rctx, st, converge.RunOptions{DryRun: true})
	r := a.runReport(st, rep, err, started, time.Now(), TriggerPlan, true)
	markPlanCauses(r.Results, st, a.current())
	limits.FitReport(r)
	return r, nil
}

// sameResource compares two resources but for where they were declared
// (an edit elsewhere in the site file moves them).
func sameResource(a, b *hivev1.Resource) bool {
	if a.GetSource() == b.GetSource() {
		return proto.Equal(a, b)
	}
	a, b = proto.Clone(a).(*hivev1.Resource), proto.Clone(b).(*hivev1.Resource)
	a.Source, b.Source = "", ""
	return proto.Equal(a, b)
}

// markPlanCauses tells each planned change's cause: drift when the
// resource, the node's facts and its secrets are the same in the planned
// state as in the state the agent holds (the machine drifted: the next
// push repairs it, as the next drift check would), change otherwise.
func markPlanCauses(results []*hivev1.ResourceResult, planned, current *hivev1.NodeState) {
	same := current != nil && proto.Equal(planned.GetFacts(), current.GetFacts()) &&
		proto.Equal(&hivev1.NodeState{Secrets: planned.GetSecrets()}, &hivev1.NodeState{Secrets: current.GetSecrets()})
	have := map[string]*hivev1.Resource{}
	for _, r := range current.GetResources() {
		have[r.GetKey()] = r
	}
	want := map[string]*hivev1.Resource{}
	for _, r := range planned.GetResources() {
		want[r.GetKey()] = r
	}
	for _, x := range results {
		if x.GetOutcome() != hivev1.Outcome_OUTCOME_PLANNED {
			continue
		}
		p, c := want[x.GetKey()], have[x.GetKey()]
		switch {
		case same && p != nil && c != nil && sameResource(p, c):
			x.Cause = hivev1.Cause_CAUSE_DRIFT
		case p != nil || c != nil:
			x.Cause = hivev1.Cause_CAUSE_CHANGE
		}
	}
}
