package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Maintenance and coordinated reboots: the API (docs/operations.md,
// "Maintenance" and "Reboots"). The writes are admin-only raft commands
// (bodies 60–64), audited like every API write (audit.go); the reboot
// queue is driven by the leader (reboot.go). RebootStart with dry_run
// writes nothing: it answers the waves the queue would run
// (rebootDryRun), from any server.

func init() {
	for _, m := range []string{"MaintenanceStart", "MaintenanceEnd", "RebootStart", "RebootCancel"} {
		methodAccess[coordSvc+m] = accessAdmin
	}
	methodAccess[coordSvc+"RebootStatus"] = accessAdminOrPeer

	summarizers["maintenance_set"] = func(c *hivev1.Command) string {
		m := c.GetMaintenanceSet()
		return "maintenance node " + m.GetNode() + reasonSuffix(m.GetReason())
	}
	summarizers["maintenance_clear"] = func(c *hivev1.Command) string {
		return "resume node " + c.GetMaintenanceClear().GetNode() + " from maintenance"
	}
	summarizers["reboot_request"] = func(c *hivev1.Command) string {
		r := c.GetRebootRequest()
		s := fmt.Sprintf("reboot %d node(s) %s", len(r.GetNodes()), strings.Join(capList(r.GetNodes(), 20), ","))
		if r.GetMaxParallel() > 0 {
			s += fmt.Sprintf(" (max parallel %d)", r.GetMaxParallel())
		}
		return s + reasonSuffix(r.GetReason())
	}
	summarizers["reboot_cancel"] = func(c *hivev1.Command) string { return "cancel queued reboots" }
	summarizers["reboot_step"] = func(c *hivev1.Command) string {
		r := c.GetRebootStep()
		return fmt.Sprintf("reboot %s: %s", r.GetNode(), rebootStateName(r.GetTo()))
	}

	eventDerivers["maintenance_set"] = func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			m := c.GetMaintenanceSet()
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindNodeMaintenance, Node: m.GetNode(),
					Summary: fmt.Sprintf("node %s in maintenance, set by %s%s", m.GetNode(), m.GetAuthor(), reasonSuffix(m.GetReason())),
					Fields:  map[string]string{"author": m.GetAuthor(), "reason": m.GetReason()}})
			}
		}
	}
	eventDerivers["maintenance_clear"] = func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			m := c.GetMaintenanceClear()
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindNodeResumed, Node: m.GetNode(),
					Summary: fmt.Sprintf("node %s resumed from maintenance by %s", m.GetNode(), m.GetAuthor()),
					Fields:  map[string]string{"author": m.GetAuthor()}})
			}
		}
	}
	eventDerivers["reboot_request"] = func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			r := c.GetRebootRequest()
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindRebootQueued,
					Summary: fmt.Sprintf("%d node(s) queued for reboot by %s", len(r.GetNodes()), r.GetAuthor()),
					Fields:  map[string]string{"author": r.GetAuthor(), "nodes": strings.Join(capList(r.GetNodes(), 50), ",")}})
			}
		}
	}
	eventDerivers["reboot_step"] = func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			r := c.GetRebootStep()
			if applied(res) {
				sum := fmt.Sprintf("reboot of %s: %s", r.GetNode(), rebootStateName(r.GetTo()))
				if r.GetMessage() != "" {
					sum += " (" + r.GetMessage() + ")"
				}
				emit(&hivev1.Event{Kind: events.KindRebootStep, Node: r.GetNode(), Summary: sum,
					Fields: map[string]string{"state": rebootStateName(r.GetTo()), "from": rebootStateName(r.GetFrom())}})
			}
		}
	}
	eventDerivers["reboot_cancel"] = func(_ *Server, st *state.Store, c *hivev1.Command) func(*hivev1.CommandResult, func(*hivev1.Event)) {
		return func(res *hivev1.CommandResult, emit func(*hivev1.Event)) {
			if applied(res) {
				emit(&hivev1.Event{Kind: events.KindRebootCancelled, Summary: "queued reboots cancelled by " + c.GetRebootCancel().GetAuthor()})
			}
		}
	}
}

// rebootStateName is "rebooting" for REBOOT_STATE_REBOOTING.
func rebootStateName(s hivev1.RebootState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "REBOOT_STATE_"))
}

func (a *api) MaintenanceStart(ctx context.Context, req *hivev1.MaintenanceStartRequest) (*hivev1.MaintenanceStartResponse, error) {
	if err := pki.ValidateName(req.GetNode()); err != nil {
		return nil, invalid("node: %v", err)
	}
	if strings.TrimSpace(req.GetReason()) == "" {
		return nil, invalid("reason: required (say why the node is taken out)")
	}
	if err := checkRolloutReason(req.GetReason()); err != nil {
		return nil, err
	}
	c := &hivev1.Command{Body: &hivev1.Command_MaintenanceSet{MaintenanceSet: &hivev1.MaintenanceSetCommand{
		Node: req.GetNode(), Reason: req.GetReason(), Author: auditIdentity(ctx)}}}
	if _, err := a.s.commit(ctx, c); err != nil {
		return nil, toStatus(err)
	}
	return &hivev1.MaintenanceStartResponse{Maintenance: a.s.fsm.Store().Maintenance(req.GetNode())}, nil
}

func (a *api) MaintenanceEnd(ctx context.Context, req *hivev1.MaintenanceEndRequest) (*hivev1.MaintenanceEndResponse, error) {
	if err := pki.ValidateName(req.GetNode()); err != nil {
		return nil, invalid("node: %v", err)
	}
	c := &hivev1.Command{Body: &hivev1.Command_MaintenanceClear{MaintenanceClear: &hivev1.MaintenanceClearCommand{
		Node: req.GetNode(), Author: auditIdentity(ctx)}}}
	if _, err := a.s.commit(ctx, c); err != nil {
		return nil, toStatus(err)
	}
	return &hivev1.MaintenanceEndResponse{}, nil
}

// MaxRebootParallel bounds RebootStartRequest.max_parallel.
const MaxRebootParallel = 1000

func (a *api) RebootStart(ctx context.Context, req *hivev1.RebootStartRequest) (*hivev1.RebootStartResponse, error) {
	sel := 0
	if len(req.GetNodes()) > 0 {
		sel++
	}
	if req.GetRole() != "" {
		sel++
	}
	if req.GetAll() {
		sel++
	}
	if sel != 1 {
		return nil, invalid("nodes, role, all: give exactly one")
	}
	if req.GetMaxParallel() > MaxRebootParallel {
		return nil, invalid("max_parallel: at most %d (got %d)", MaxRebootParallel, req.GetMaxParallel())
	}
	if len(req.GetNodes()) > state.MaxRebootQueue {
		return nil, invalid("nodes: at most %d (got %d)", state.MaxRebootQueue, len(req.GetNodes()))
	}
	if err := checkRolloutReason(req.GetReason()); err != nil {
		return nil, err
	}
	st := a.s.fsm.Store()
	var nodes, skipped []string
	seen := map[string]bool{}
	for i, n := range req.GetNodes() {
		if err := pki.ValidateName(n); err != nil {
			return nil, invalid("nodes[%d]: %v", i, err)
		}
		if !seen[n] {
			seen[n] = true
			nodes = append(nodes, n)
		}
	}
	if req.GetRole() != "" || req.GetAll() {
		registry, _ := st.Nodes()
		for _, n := range registry {
			g := st.TargetGeneration(n.GetName())
			labels, _ := state.TrustedLabels(n)
			roles := render.SelectRoles(g.GetSite(), n.GetName(), labels)
			if req.GetRole() != "" && !contains(roles, req.GetRole()) {
				continue
			}
			if st.Maintenance(n.GetName()) != nil {
				skipped = append(skipped, n.GetName()+": in maintenance")
				continue
			}
			nodes = append(nodes, n.GetName())
		}
		sort.Strings(nodes)
		if len(nodes) == 0 {
			what := "no registered node"
			if req.GetRole() != "" {
				what = fmt.Sprintf("no registered node outside maintenance has role %q", req.GetRole())
			}
			return nil, status.Error(codes.NotFound, what)
		}
	}
	c := &hivev1.Command{Body: &hivev1.Command_RebootRequest{RebootRequest: &hivev1.RebootRequestCommand{
		Nodes: nodes, MaxParallel: req.GetMaxParallel(), Author: auditIdentity(ctx), Reason: req.GetReason()}}}
	if req.GetDryRun() {
		return a.rebootDryRun(st, c.GetRebootRequest(), skipped)
	}
	if _, err := a.s.commit(ctx, c); err != nil {
		return nil, toStatus(err)
	}
	return &hivev1.RebootStartResponse{Queue: a.s.fsm.Store().RebootQueue(), Skipped: skipped}, nil
}

// rebootDryRun answers RebootStart with dry_run for the command r a real
// start would commit: the queue r would leave (state.PlanRebootRequest,
// so the same rejections the FSM gives a real start: unregistered nodes,
// a halted queue, a queue too long) cut into the waves the leader would
// run (rebootPlan). It commits nothing, so there is no audit entry and no
// event. It reads this server's own store, as RebootStatus does, so a
// follower answers too, from a state that may be a little behind the
// leader's (entries committed that it has not applied yet).
func (a *api) rebootDryRun(st *state.Store, r *hivev1.RebootRequestCommand, skipped []string) (*hivev1.RebootStartResponse, error) {
	cur := st.RebootQueue()
	q, added, res := st.PlanRebootRequest(time.Now(), r)
	if res.GetError() != "" {
		return nil, toStatus(&rejection{reason: res.GetReason(), msg: res.GetError()})
	}
	return &hivev1.RebootStartResponse{Queue: cur, Skipped: skipped, Waves: a.s.rebootPlan(st, q, added), MaxParallel: q.GetMaxParallel()}, nil
}

func (a *api) RebootStatus(ctx context.Context, req *hivev1.RebootStatusRequest) (*hivev1.RebootStatusResponse, error) {
	st := a.s.fsm.Store()
	return &hivev1.RebootStatusResponse{Queue: st.RebootQueue(), RaftIndex: st.Index()}, nil
}

func (a *api) RebootCancel(ctx context.Context, req *hivev1.RebootCancelRequest) (*hivev1.RebootCancelResponse, error) {
	c := &hivev1.Command{Body: &hivev1.Command_RebootCancel{RebootCancel: &hivev1.RebootCancelCommand{Author: auditIdentity(ctx)}}}
	if _, err := a.s.commit(ctx, c); err != nil {
		return nil, toStatus(err)
	}
	return &hivev1.RebootCancelResponse{Queue: a.s.fsm.Store().RebootQueue()}, nil
}
