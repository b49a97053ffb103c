package coordinator

// hivectl plan: a proposed site is rendered for every node it affects and
// dry-run by each connected agent against its machine, without becoming a
// generation.
//
// Flow. The coordinator the client calls runs the plan (its "origin"):
// after a consistent read (so its state holds every committed generation,
// the plan's base), it renders each affected node's would-be state from the
// proposed content as generation base+1 (a renderer of the plan's own, so
// the watch cache is untouched) to find render errors, keeps the plan, and
// hands it to every other coordinator over ClusterService.PlanDeliver. Each
// coordinator keeps the plan too (push --plan works through any of them)
// and wakes its watch streams: a stream whose node is among the plan's
// sends it a PlanDryRun with the state rendered there (once the deliverer's
// raft index is applied, so renders agree). Each PlanDeliver answers with
// the plan's nodes watching that coordinator, so the origin knows at once
// which nodes are offline (no stream anywhere) and waits only for the
// others. An agent answers with ReportPlan to the coordinator it watches,
// which checks it like a report (certificate names the node, limits,
// rate) and passes it to the origin (PlanCollect), or records it when it
// is the origin. The call returns when every connected node answered or
// at the timeout, with what it has.
//
// Why ClusterService and not a raft command: a plan is not state. Through
// raft it would cost a quorum round and a log entry carrying the whole
// site for nothing that must survive; every replica would have to keep it
// in snapshots for push --plan to agree, and an old replica would have to
// skip it. Over ClusterService a coordinator that is down misses the plan
// (its agents answer "offline" or "no answer", and push --plan through it
// says the plan is unknown there), which is what a plan should do: it is
// a look, never a write. push --plan itself is an ordinary push of the
// kept content with the plan's base generation, so the raft log decides
// whether the base moved, on every replica alike.
//
// Bounds: each coordinator keeps the last maxPlans plans for planTTL; an
// answer is a Report within package limits, counted against the node's
// report rate.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

const (
	// maxPlans is how many plans a coordinator keeps (the oldest goes).
	maxPlans = 16
	// planTTL is how long a plan can be pushed with push --plan.
	planTTL = time.Hour
	// PlanDefaultTimeout and PlanMaxTimeout bound how long a plan waits
	// for the agents' answers.
	PlanDefaultTimeout = 10 * time.Second
	PlanMaxTimeout     = 5 * time.Minute
	// planDeliverTimeout bounds one PlanDeliver to another coordinator.
	planDeliverTimeout = 3 * time.Second
)

func init() {
	methodAccess[coordSvc+"Plan"] = accessAdmin
	methodAccess[coordSvc+"ReportPlan"] = accessNode // agents as themselves, checked in the handler
	methodAccess[clusterSvc+"PlanDeliver"] = accessCoordinator
	methodAccess[clusterSvc+"PlanCollect"] = accessCoordinator
	methodMaxBytes[coordSvc+"ReportPlan"] = MaxReportRequestBytes + 64
	typeMaxBytes[fullName(&hivev1.ReportPlanRequest{})] = MaxReportRequestBytes + 64
}

// planBook is the plans a coordinator keeps and the nodes watching it. Its
// zero value is ready. Safe for concurrent use; nothing blocks beyond its
// mutex.
type planBook struct {
	mu       sync.Mutex
	plans    []*plan // oldest first
	ch       chan struct{}
	watching map[string]int // node → watch streams on this server
}

// plan is one kept plan.
type plan struct {
	id, origin string
	base       uint64
	gen        *hivev1.Generation // the proposed content as generation base+1
	nodes      map[string]bool
	deadline   time.Time
	expires    time.Time
	index      uint64 // raft index to have applied before rendering
	delivered  time.Time

	renderer *render.Renderer
	srcMu    sync.Mutex
	src      *planSource

	// At the origin: the answers, by node.
	mu      sync.Mutex
	answers map[string]*planAnswer
	changed chan struct{} // closed and replaced on each answer
}

type planAnswer struct {
	report      *hivev1.Report
	coordinator string
	at          time.Time
}

// planSource is the store as the renderer sees it, with the plan's content
// as the current generation.
type planSource struct {
	*state.Store
	gen *hivev1.Generation
}

func (p *planSource) Current() *hivev1.Generation { return p.gen }

// TargetGeneration renders every node at the plan's content: the store's
// rollout targets (render.Targeter, promoted from the embedded store) are
// not what a plan shows.
func (p *planSource) TargetGeneration(string) *hivev1.Generation { return p.gen }

// source returns the plan's render source over st (one per store, so the
// renderer's view cache holds across calls).
func (p *plan) source(st *state.Store) *planSource {
	p.srcMu.Lock()
	defer p.srcMu.Unlock()
	if p.src == nil || p.src.Store != st {
		p.src = &planSource{Store: st, gen: p.gen}
	}
	return p.src
}

// render returns the node's would-be state under the plan.
func (p *plan) render(st *state.Store, f render.Facts) (*render.Rendered, error) {
	return p.renderer.Render(p.source(st), f)
}

func (p *plan) answer(r *hivev1.Report, coordinator string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.answers == nil || !p.nodes[r.GetNode()] {
		return false
	}
	if _, dup := p.answers[r.GetNode()]; dup {
		return false // a node watching twice (a reconnect) answers once
	}
	p.answers[r.GetNode()] = &planAnswer{report: r, coordinator: coordinator, at: time.Now()}
	close(p.changed)
	p.changed = make(chan struct{})
	return true
}

// answered returns a copy of the answers and the channel closed at the
// next one.
func (p *plan) answered() (map[string]*planAnswer, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]*planAnswer, len(p.answers))
	for k, v := range p.answers {
		out[k] = v
	}
	return out, p.changed
}

// add keeps p, dropping expired plans and the oldest beyond maxPlans, and
// wakes the watch streams.
func (b *planBook) add(p *plan, now time.Time) {
	b.mu.Lock()
	kept := b.plans[:0]
	for _, q := range b.plans {
		if q.expires.After(now) && q.id != p.id {
			kept = append(kept, q)
		}
	}
	b.plans = append(kept, p)
	if len(b.plans) > maxPlans {
		b.plans = append([]*plan(nil), b.plans[len(b.plans)-maxPlans:]...)
	}
	if b.ch != nil {
		close(b.ch)
	}
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// get returns the kept, unexpired plan with id, or nil.
func (b *planBook) get(id string, now time.Time) *plan {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.plans {
		if p.id == id && p.expires.After(now) {
			return p
		}
	}
	return nil
}

// wait returns a channel closed when the next plan is added. Take it
// before looking for plans, so none is missed.
func (b *planBook) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// pending returns the plans whose deadline has not passed and whose nodes
// include node.
func (b *planBook) pending(node string, now time.Time) []*plan {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*plan
	for _, p := range b.plans {
		if p.nodes[node] && p.deadline.After(now) {
			out = append(out, p)
		}
	}
	return out
}

// watch records a watch stream of node on this server; the returned
// function ends it.
func (b *planBook) watch(node string) func() {
	b.mu.Lock()
	if b.watching == nil {
		b.watching = map[string]int{}
	}
	b.watching[node]++
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		if b.watching[node]--; b.watching[node] <= 0 {
			delete(b.watching, node)
		}
		b.mu.Unlock()
	}
}

// watchingOf returns which of nodes watch this server.
func (b *planBook) watchingOf(nodes map[string]bool) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for n := range b.watching {
		if nodes[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// sendPlans sends a watch stream's node the dry runs of the plans pending
// for it that this stream has not sent yet (sent, by plan id, is the
// stream's own). Called from the watch goroutine only.
func (s *Server) sendPlans(send func(any) error, st *state.Store, f render.Facts, sent map[string]bool) error {
	now := time.Now()
	live := map[string]bool{}
	for _, p := range s.plans.pending(f.Name, now) {
		live[p.id] = true
		if sent[p.id] {
			continue
		}
		sent[p.id] = true
		out, err := p.render(st, f)
		if err != nil {
			continue // the origin found the render error and reports it
		}
		if err := send(&hivev1.WatchNodeStateResponse{Plan: &hivev1.PlanDryRun{
			Id: p.id, State: withIndex(out.State, st.Index()), Deadline: timestamppb.New(p.deadline),
		}}); err != nil {
			return err
		}
		s.metrics.watchSends.Inc()
	}
	for id := range sent {
		if !live[id] {
			delete(sent, id)
		}
	}
	return nil
}

// planNodes returns the registry nodes that hold a role in the current
// generation or in the proposed site, by name.
func planNodes(st *state.Store, proposed *hivev1.Site) []*hivev1.NodeRecord {
	cur := st.Current().GetSite()
	nodes, _ := st.Nodes()
	var out []*hivev1.NodeRecord
	for _, n := range nodes {
		f := render.FactsOf(n)
		if len(render.SelectRoles(proposed, n.GetName(), f.Labels)) > 0 ||
			(cur != nil && len(render.SelectRoles(cur, n.GetName(), f.Labels)) > 0) {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func newPlanID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("plan id: " + err.Error())
	}
	return "p" + hex.EncodeToString(b[:])
}

// Plan runs a plan (see the top of this file).
func (a *api) Plan(ctx context.Context, req *hivev1.PlanRequest) (*hivev1.PlanResponse, error) {
	s := a.s
	if size := proto.Size(req); size > s.cfg.MaxPushBytes {
		return nil, status.Errorf(codes.InvalidArgument, "plan is %d bytes; the limit is %d bytes (%.1f MiB)", size, s.cfg.MaxPushBytes, float64(s.cfg.MaxPushBytes)/(1<<20))
	}
	if err := checkSite(req.GetSite()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "site rejected: %v", err)
	}
	if err := checkSource(req.GetSourceName(), req.GetSource(), req.GetSite()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "plan rejected: %v", err)
	}
	timeout := PlanDefaultTimeout
	if req.GetTimeout() != nil {
		if err := req.GetTimeout().CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "timeout: %v", err)
		}
		timeout = req.GetTimeout().AsDuration()
		if timeout <= 0 || timeout > PlanMaxTimeout {
			return nil, status.Errorf(codes.InvalidArgument, "timeout %v: must be positive and at most %v", timeout, PlanMaxTimeout)
		}
	}
	started := time.Now()
	deadline := started.Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		// Answer a little before the caller gives up.
		deadline = d.Add(-min(time.Until(d)/10, 500*time.Millisecond))
	}
	if err := s.readIndex(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "plan: consistent read: %v", err)
	}
	st := s.fsm.Store()
	index := st.Index()
	cur := st.Current() // read once: a push may land meanwhile
	base := cur.GetNumber()
	if b := req.GetBaseGeneration(); b != 0 && b != base {
		return nil, status.Errorf(codes.Aborted, "plan is based on generation %d, but generation %d is current: %s",
			b, base, movedSince(st.Generations(0), b))
	}
	pinned, err := s.pinner.Pin(ctx, req.GetSite()) // as a push would
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "plan rejected: %v", err)
	}
	sum, err := siteHash(pinned)
	if err != nil {
		return nil, toStatus(err)
	}
	p := &plan{
		id: newPlanID(), origin: s.cfg.Name, base: base,
		gen: &hivev1.Generation{
			Number: base + 1, Parent: base, Sha256: sum, Author: author(ctx),
			Site: pinned, SourceName: req.GetSourceName(), Source: req.GetSource(),
		},
		nodes: map[string]bool{}, deadline: deadline, expires: started.Add(planTTL), index: index,
		renderer: render.New(syncOpener{s}), answers: map[string]*planAnswer{}, changed: make(chan struct{}),
		delivered: started,
	}
	resp := &hivev1.PlanResponse{
		Id: p.id, BaseGeneration: p.base, Sha256: sum, Unchanged: cur.GetSha256() == sum,
		Expires: timestamppb.New(p.expires), Server: s.cfg.Name,
	}
	byName := map[string]*hivev1.PlanNode{}
	for _, n := range planNodes(st, req.GetSite()) {
		pn := &hivev1.PlanNode{Name: n.GetName(), LastGeneration: st.Report(n.GetName()).GetGeneration()}
		if _, err := p.render(st, render.FactsOf(n)); err != nil {
			pn.State, pn.Error = hivev1.PlanNodeState_PLAN_NODE_STATE_RENDER_ERROR, err.Error()
		} else {
			p.nodes[n.GetName()] = true
		}
		byName[n.GetName()] = pn
		resp.Nodes = append(resp.Nodes, pn)
	}
	s.plans.add(p, started)
	where := s.deliverPlan(ctx, p)
	s.log.Info("plan started", "plan", p.id, "base", p.base, "nodes", len(resp.Nodes), "connected", len(where), "author", author(ctx))

	// Wait for every connected node's answer, or the deadline.
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var answers map[string]*planAnswer
	for {
		var ch <-chan struct{}
		answers, ch = p.answered()
		waiting := 0
		for n := range where {
			if _, ok := answers[n]; !ok {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		done := false
		select {
		case <-ch:
		case <-timer.C:
			done = true
		case <-ctx.Done():
			return nil, toStatus(ctx.Err())
		}
		if done {
			answers, _ = p.answered()
			break
		}
	}
	for name, pn := range byName {
		if pn.State == hivev1.PlanNodeState_PLAN_NODE_STATE_RENDER_ERROR {
			continue
		}
		if ans, ok := answers[name]; ok {
			pn.State = hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED
			pn.Results = state.Results(ans.report)
			pn.Coordinator = ans.coordinator
			pn.Took = durationpb.New(ans.at.Sub(p.delivered))
			continue
		}
		pn.Coordinator = where[name]
		pn.State = hivev1.PlanNodeState_PLAN_NODE_STATE_OFFLINE
		if pn.Coordinator != "" {
			pn.State = hivev1.PlanNodeState_PLAN_NODE_STATE_NO_ANSWER
		}
	}
	s.log.Info("plan answered", "plan", p.id, "answered", len(answers), "took", time.Since(started).Round(time.Millisecond))
	return resp, nil
}

// deliverPlan hands p to every coordinator (this one included) and returns
// where each of its nodes watches (node → coordinator). A coordinator that
// cannot be reached in time is skipped: its agents show as offline.
func (s *Server) deliverPlan(ctx context.Context, p *plan) map[string]string {
	where := map[string]string{}
	for _, n := range s.plans.watchingOf(p.nodes) {
		where[n] = s.cfg.Name
	}
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return where
	}
	req := &hivev1.PlanDeliverRequest{
		Id: p.id, Origin: p.origin, BaseGeneration: p.base, Site: p.gen.GetSite(),
		SourceName: p.gen.GetSourceName(), Source: p.gen.GetSource(), Sha256: p.gen.GetSha256(),
		Deadline: timestamppb.New(p.deadline), Expires: timestamppb.New(p.expires), RaftIndex: p.index,
	}
	for n := range p.nodes {
		req.Nodes = append(req.Nodes, n)
	}
	sort.Strings(req.Nodes)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, srv := range f.Configuration().Servers {
		id := string(srv.ID)
		if srv.ID == raft.ServerID(s.cfg.Name) {
			continue
		}
		rec := s.fsm.Store().Coordinator(id)
		if rec.GetGrpcAddr() == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Bounded by the plan's deadline too: the caller gets its
			// answer within the timeout even if a coordinator hangs.
			dctx, cancel := context.WithDeadline(ctx, earliest(time.Now().Add(planDeliverTimeout), p.deadline))
			defer cancel()
			conn, err := s.forwardConn(rec.GetGrpcAddr())
			if err != nil {
				s.log.Warn("plan not delivered", "plan", p.id, "coordinator", id, "err", err)
				return
			}
			resp, err := hivev1.NewClusterServiceClient(conn).PlanDeliver(dctx, req)
			if err != nil {
				s.log.Warn("plan not delivered", "plan", p.id, "coordinator", id, "err", err)
				return
			}
			mu.Lock()
			for _, n := range resp.GetWatching() {
				if p.nodes[n] && where[n] == "" {
					where[n] = id
				}
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return where
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// PlanDeliver keeps a plan another coordinator runs and sends its dry runs
// to the agents watching here.
func (c *cluster) PlanDeliver(ctx context.Context, req *hivev1.PlanDeliverRequest) (*hivev1.PlanDeliverResponse, error) {
	s := c.s
	if req.GetId() == "" || req.GetOrigin() == "" || req.GetSite() == nil {
		return nil, status.Error(codes.InvalidArgument, "plan delivery needs id, origin and site")
	}
	now := time.Now()
	p := &plan{
		id: req.GetId(), origin: req.GetOrigin(), base: req.GetBaseGeneration(),
		gen: &hivev1.Generation{
			Number: req.GetBaseGeneration() + 1, Parent: req.GetBaseGeneration(), Sha256: req.GetSha256(),
			Site: req.GetSite(), SourceName: req.GetSourceName(), Source: req.GetSource(),
		},
		nodes: map[string]bool{}, deadline: req.GetDeadline().AsTime(), expires: req.GetExpires().AsTime(),
		index: req.GetRaftIndex(), renderer: render.New(syncOpener{s}), delivered: now,
	}
	if p.expires.After(now.Add(planTTL)) {
		p.expires = now.Add(planTTL)
	}
	for _, n := range req.GetNodes() {
		p.nodes[n] = true
	}
	// Render from the state the origin planned on: wait (briefly) until
	// this server applied its index; the watch streams wait for it too.
	wctx, cancel := context.WithTimeout(ctx, planDeliverTimeout)
	_ = s.fsm.WaitApplied(wctx, p.index)
	cancel()
	s.plans.add(p, now)
	return &hivev1.PlanDeliverResponse{Watching: s.plans.watchingOf(p.nodes)}, nil
}

// ReportPlan takes an agent's plan answer.
func (a *api) ReportPlan(ctx context.Context, req *hivev1.ReportPlanRequest) (*hivev1.ReportPlanResponse, error) {
	s := a.s
	r := req.GetReport()
	if req.GetPlanId() == "" {
		return nil, status.Error(codes.InvalidArgument, "plan_id is required")
	}
	if r == nil || r.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "report.node is required")
	}
	if err := checkNode(ctx, r.GetNode()); err != nil {
		return nil, err
	}
	if len(r.GetPublishedSecrets()) > 0 {
		return nil, status.Error(codes.InvalidArgument, "report.published_secrets: a plan answer publishes nothing")
	}
	if err := s.admitReport(ctx, r); err != nil {
		return nil, err
	}
	p := s.plans.get(req.GetPlanId(), time.Now())
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "plan %q is not known to coordinator %s (expired, or never delivered here)", req.GetPlanId(), s.cfg.Name)
	}
	if !p.nodes[r.GetNode()] {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not part of plan %s", r.GetNode(), p.id)
	}
	if r.GetGeneration() != p.base+1 {
		return nil, status.Errorf(codes.InvalidArgument, "report.generation %d: plan %s plans generation %d", r.GetGeneration(), p.id, p.base+1)
	}
	if p.origin == s.cfg.Name {
		return &hivev1.ReportPlanResponse{Accepted: p.answer(r, s.cfg.Name)}, nil
	}
	rec := s.fsm.Store().Coordinator(p.origin)
	if rec.GetGrpcAddr() == "" {
		return nil, status.Errorf(codes.Unavailable, "plan %s runs on coordinator %s, whose address is not known here", p.id, p.origin)
	}
	conn, err := s.forwardConn(rec.GetGrpcAddr())
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "plan %s: reach coordinator %s: %v", p.id, p.origin, err)
	}
	resp, err := hivev1.NewClusterServiceClient(conn).PlanCollect(ctx, &hivev1.PlanCollectRequest{PlanId: p.id, Report: r, Coordinator: s.cfg.Name})
	if err != nil {
		return nil, err
	}
	return &hivev1.ReportPlanResponse{Accepted: resp.GetAccepted()}, nil
}

// PlanCollect records an answer another coordinator received for a plan
// this one runs. That coordinator checked the agent's identity and the
// report's bounds.
func (c *cluster) PlanCollect(ctx context.Context, req *hivev1.PlanCollectRequest) (*hivev1.PlanCollectResponse, error) {
	s := c.s
	p := s.plans.get(req.GetPlanId(), time.Now())
	if p == nil || p.origin != s.cfg.Name {
		return nil, status.Errorf(codes.NotFound, "plan %q does not run on coordinator %s", req.GetPlanId(), s.cfg.Name)
	}
	if req.GetReport().GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "report.node is required")
	}
	return &hivev1.PlanCollectResponse{Accepted: p.answer(req.GetReport(), req.GetCoordinator())}, nil
}

// pushPlan commits a kept plan's content based on its base generation.
func (a *api) pushPlan(ctx context.Context, req *hivev1.PushRequest) (*hivev1.PushResponse, error) {
	s := a.s
	var set []string
	if req.GetSite() != nil {
		set = append(set, "site")
	}
	if len(req.GetSource()) > 0 || req.GetSourceName() != "" {
		set = append(set, "source")
	}
	if req.GetBaseGeneration() != 0 {
		set = append(set, "base_generation")
	}
	if req.GetForce() {
		set = append(set, "force")
	}
	if len(set) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "push with plan_id: %s must be unset (the plan holds the content and its base)", strings.Join(set, ", "))
	}
	p := s.plans.get(req.GetPlanId(), time.Now())
	if p == nil {
		return nil, status.Errorf(codes.NotFound, "plan %q is not known to coordinator %s: plans are kept for %v (the last %d); run hivectl plan again", req.GetPlanId(), s.cfg.Name, planTTL, maxPlans)
	}
	stale := func() error {
		st := s.fsm.Store()
		return status.Errorf(codes.Aborted, "plan %s was made on generation %d, but generation %d is current: %s; run hivectl plan again",
			p.id, p.base, st.CurrentNumber(), movedSince(st.Generations(0), p.base))
	}
	// Refused even when the content is already current (which the raft
	// log would take as unchanged): the plan was made on another base.
	if err := s.readIndex(ctx); err != nil {
		return nil, status.Errorf(codes.Unavailable, "push --plan: consistent read: %v", err)
	}
	if s.fsm.Store().CurrentNumber() != p.base {
		return nil, stale()
	}
	resp, err := a.Push(ctx, &hivev1.PushRequest{
		Site: p.gen.GetSite(), Message: req.GetMessage(), BaseGeneration: p.base,
		SourceName: p.gen.GetSourceName(), Source: p.gen.GetSource(),
	})
	if status.Code(err) == codes.Aborted {
		return nil, stale()
	}
	return resp, err
}

// movedSince describes the generations after base in gens (newest first,
// as Store.Generations returns them): who pushed which generation when,
// with what message (at most the 5 newest).
func movedSince(gens []*hivev1.Generation, base uint64) string {
	var parts []string
	more := 0
	for _, g := range gens {
		if g.GetNumber() <= base {
			continue
		}
		if len(parts) == 5 {
			more++
			continue
		}
		what := "pushed"
		if g.GetRollbackOf() != 0 {
			what = fmt.Sprintf("rolled back to %d", g.GetRollbackOf())
		}
		msg := g.GetMessage()
		if msg == "" {
			msg = "(no message)"
		} else {
			msg = fmt.Sprintf("%q", msg)
		}
		parts = append(parts, fmt.Sprintf("generation %d %s by %s at %s: %s", g.GetNumber(), what, g.GetAuthor(),
			g.GetTime().AsTime().UTC().Format(time.RFC3339), msg))
	}
	if more > 0 {
		parts = append(parts, fmt.Sprintf("and %d earlier", more))
	}
	return strings.Join(parts, "; ")
}
