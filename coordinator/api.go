package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hivefleet/hive/coordinator/raftnode"
	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// api implements CoordinatorService.
type api struct {
	hivev1.UnimplementedCoordinatorServiceServer
	s *Server
}

// toStatus is the one translation of server errors to gRPC status.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case raftnode.Outcome(err) != hivev1.OutcomeNone:
		// The apply outcome's one mapping: NOT_APPLIED only when the
		// write was certainly not appended, OUTCOME_UNKNOWN when it may
		// have been.
		st, _ := raftnode.Status(err)
		return st.Err()
	case errors.Is(err, raft.ErrRaftShutdown), errors.Is(err, errStopping):
		return status.Error(codes.Unavailable, err.Error())
	}
	var re *rejection
	if errors.As(err, &re) {
		code := codes.FailedPrecondition
		switch re.reason {
		case state.ReasonStaleBase:
			code = codes.Aborted
		case state.ReasonNotFound:
			code = codes.NotFound
		case state.ReasonInvalid:
			code = codes.InvalidArgument
		case state.ReasonTokenUsed, state.ReasonTokenExpired, state.ReasonTokenNode, state.ReasonTokenReplace:
			code = codes.PermissionDenied
		}
		return status.Error(code, re.msg)
	}
	return status.Error(codes.Internal, err.Error())
}

// rejection is a business rejection decided by the FSM.
type rejection struct{ reason, msg string }

func (r *rejection) Error() string { return r.msg }

// commit applies c and turns a rejected result into a *rejection error.
// Except for report batches (nobody reads them back through the same
// server at once, and the batcher should not wait), it answers only once
// this server's own FSM has applied the entry (read-your-writes: a push
// through a follower lists the matched nodes, and a status or history read
// right after on the same server shows the new generation).
func (s *Server) commit(ctx context.Context, c *hivev1.Command) (*hivev1.CommandResult, error) {
	res, idx, err := s.apply(ctx, c)
	if err != nil {
		return nil, err
	}
	if _, report := c.GetBody().(*hivev1.Command_ReportBatch); !report && idx > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		err := s.fsm.WaitApplied(wctx, idx)
		cancel()
		if err != nil {
			// Committed, but this server lags: answer anyway (the write
			// happened); reads here may not show it yet.
			s.log.Warn("answering before this server applied the committed entry", "index", idx, "applied", s.fsm.Applied(), "err", err)
		}
	}
	if res.GetError() != "" {
		return res, &rejection{reason: res.GetReason(), msg: res.GetError()}
	}
	return res, nil
}

func (a *api) Push(ctx context.Context, req *hivev1.PushRequest) (*hivev1.PushResponse, error) {
	s := a.s
	if req.GetPlanId() != "" {
		return a.pushPlan(ctx, req) // plan.go
	}
	if size := proto.Size(req); size > s.cfg.MaxPushBytes {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "push is %d bytes; the limit is %d bytes (%.1f MiB)", size, s.cfg.MaxPushBytes, float64(s.cfg.MaxPushBytes)/(1<<20))
	}
	if err := checkSite(req.GetSite()); err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "site rejected: %v", err)
	}
	// What pull will show must be what agents get.
	if err := checkSource(req.GetSourceName(), req.GetSource(), req.GetSite()); err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "push rejected: %v", err)
	}
	// Service images are pinned to digests before the site goes through
	// raft: the generation names what runs, and its hash changes when a
	// tag is moved to another image.
	pinned, err := s.pinner.Pin(ctx, req.GetSite())
	if err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, status.Errorf(codes.InvalidArgument, "push rejected: %v", err)
	}
	sum, err := siteHash(pinned)
	if err != nil {
		return nil, toStatus(err)
	}
	cmd, err := s.pushCommand(req, &hivev1.PushCommand{
		Generation: &hivev1.Generation{
			Sha256: sum, Author: author(ctx), Message: req.GetMessage(), Site: pinned,
			SourceName: req.GetSourceName(), Source: req.GetSource(),
		},
		BaseGeneration: req.GetBaseGeneration(),
		Force:          req.GetForce(),
	})
	if err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, err
	}
	res, err := s.commit(ctx, cmd)
	if err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, toStatus(err)
	}
	if res.GetUnchanged() && !req.GetForce() && res.GetGeneration() == req.GetBaseGeneration()+1 {
		// Unchanged, yet the generation after the base holds this very
		// push (content, author, message): the raft node sent it again
		// after an attempt whose outcome was unknown (a leader lost), and
		// the first attempt was applied. It was pushed.
		if g := s.fsm.Store().Generation(res.GetGeneration()); g.GetSha256() == sum && g.GetAuthor() == author(ctx) && g.GetMessage() == req.GetMessage() {
			res = &hivev1.CommandResult{Generation: res.GetGeneration()}
		}
	}
	if res.GetUnchanged() {
		s.metrics.pushes.WithLabelValues("unchanged").Inc()
	} else {
		s.metrics.pushes.WithLabelValues("applied").Inc()
		s.log.Info("generation pushed", "generation", res.GetGeneration(), "author", author(ctx), "sha256", sum)
	}
	return &hivev1.PushResponse{Generation: res.GetGeneration(), Sha256: sum, Unchanged: res.GetUnchanged(), Nodes: s.matchedNodes()}, nil
}

// matchedNodes returns the registry nodes the current generation gives at
// least one role.
func (s *Server) matchedNodes() []string {
	st := s.fsm.Store()
	g := st.Current()
	nodes, _ := st.Nodes()
	var out []string
	for _, n := range nodes {
		// A node in maintenance keeps its generation: not waited for.
		if g != nil && st.Maintenance(n.GetName()) == nil && len(render.SelectRoles(g.GetSite(), n.GetName(), render.FactsOf(n).Labels)) > 0 {
			out = append(out, n.GetName())
		}
	}
	return out
}

func (a *api) Rollback(ctx context.Context, req *hivev1.RollbackRequest) (*hivev1.RollbackResponse, error) {
	s := a.s
	res, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_Rollback{Rollback: &hivev1.RollbackCommand{
		Target: req.GetTarget(), Author: author(ctx), Message: req.GetMessage(),
		BaseGeneration: req.GetBaseGeneration(), Force: req.GetForce(),
	}}})
	if err != nil {
		s.metrics.pushes.WithLabelValues("rejected").Inc()
		return nil, toStatus(err)
	}
	if res.GetUnchanged() {
		s.metrics.pushes.WithLabelValues("unchanged").Inc()
	} else {
		s.metrics.pushes.WithLabelValues("applied").Inc()
		s.log.Info("rolled back", "target", req.GetTarget(), "generation", res.GetGeneration(), "author", author(ctx))
	}
	g := s.fsm.Store().Generation(res.GetGeneration())
	return &hivev1.RollbackResponse{Generation: res.GetGeneration(), Sha256: g.GetSha256()}, nil
}

func summary(g *hivev1.Generation) *hivev1.GenerationSummary {
	n := 0
	for _, r := range g.GetSite().GetRoles() {
		n += len(r.GetResources())
	}
	return &hivev1.GenerationSummary{
		Number: g.GetNumber(), Parent: g.GetParent(), Sha256: g.GetSha256(), Author: g.GetAuthor(),
		Message: g.GetMessage(), Time: g.GetTime(), RollbackOf: g.GetRollbackOf(), Resources: uint32(n),
	}
}

// ListGenerations lists the history. With max_wait it blocks until a
// generation newer than min_index (a history_index) is applied here, or
// the wait ends (see statuswait.go).
func (a *api) ListGenerations(ctx context.Context, req *hivev1.ListGenerationsRequest) (*hivev1.ListGenerationsResponse, error) {
	s := a.s
	wait, err := blockingWait(ctx, req.GetMaxWait())
	if err != nil {
		return nil, err
	}
	if req.GetConsistent() {
		if err := s.readIndex(ctx); err != nil {
			return nil, status.Errorf(codes.Unavailable, "consistent read: %v", err)
		}
	}
	_, version := s.statusw.history()
	if wait > 0 {
		b := newBlockUntil(wait)
		defer b.stop()
		if err := s.catchUp(ctx, req.GetMinIndex(), b); err != nil {
			return nil, err
		}
		// Every status change wakes the waiters: wait on until the
		// history moved.
		for {
			var ch <-chan struct{}
			if ch, version = s.statusw.history(); version > req.GetMinIndex() {
				break
			}
			changed, err := s.waitChange(ctx, ch, b)
			if err != nil {
				return nil, err
			}
			if !changed {
				break
			}
		}
	}
	st := s.fsm.Store()
	resp := &hivev1.ListGenerationsResponse{Current: st.CurrentNumber(), HistoryIndex: version}
	for _, g := range st.Generations(int(req.GetLimit())) {
		resp.Generations = append(resp.Generations, summary(g))
	}
	return resp, nil
}

func (a *api) GetGeneration(ctx context.Context, req *hivev1.GetGenerationRequest) (*hivev1.GetGenerationResponse, error) {
	st := a.s.fsm.Store()
	n := req.GetNumber()
	if n == 0 {
		n = st.CurrentNumber()
	}
	g := st.Generation(n)
	if g == nil {
		if st.CurrentNumber() == 0 {
			return nil, status.Error(codes.NotFound, "no generation has been pushed yet")
		}
		return nil, status.Errorf(codes.NotFound, "generation %d does not exist (current is %d)", n, st.CurrentNumber())
	}
	return &hivev1.GetGenerationResponse{Generation: g}, nil
}

func (a *api) DiffGenerations(ctx context.Context, req *hivev1.DiffGenerationsRequest) (*hivev1.DiffGenerationsResponse, error) {
	st := a.s.fsm.Store()
	get := func(n uint64) (*hivev1.Site, error) {
		if n == 0 {
			return &hivev1.Site{}, nil // generation 0: the empty site
		}
		g := st.Generation(n)
		if g == nil {
			return nil, status.Errorf(codes.NotFound, "generation %d does not exist (current is %d)", n, st.CurrentNumber())
		}
		return g.GetSite(), nil
	}
	from, err := get(req.GetFrom())
	if err != nil {
		return nil, err
	}
	to, err := get(req.GetTo())
	if err != nil {
		return nil, err
	}
	return &hivev1.DiffGenerationsResponse{Changes: DiffSites(from, to)}, nil
}

func (a *api) GetNodeState(ctx context.Context, req *hivev1.GetNodeStateRequest) (*hivev1.GetNodeStateResponse, error) {
	if req.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	if err := checkNode(ctx, req.GetNode()); err != nil {
		return nil, err
	}
	st := a.s.fsm.Store()
	f := render.Facts{Name: req.GetNode()}
	if n := st.Node(req.GetNode()); n != nil {
		f = render.FactsOf(n)
	}
	out, err := a.s.renderer.Render(st, f)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &hivev1.GetNodeStateResponse{State: withIndex(out.State, st.Index())}, nil
}

// withIndex returns a shallow copy of a cached state with raft_index set.
func withIndex(ns *hivev1.NodeState, index uint64) *hivev1.NodeState {
	return &hivev1.NodeState{
		Node: ns.GetNode(), Generation: ns.GetGeneration(), Hash: ns.GetHash(), Facts: ns.GetFacts(),
		Resources: ns.GetResources(), Secrets: ns.GetSecrets(), RaftIndex: index,
	}
}

// registration is what a watch records about its node: the validated
// facts and the identity of its connection (nil: keep the record's).
type registration struct {
	name     string
	labels   map[string]string // reported
	addrs    []string          // checked, canonical
	host     *hivev1.NodeFacts // reported host facts, checked (nil: none)
	version  string
	identity *hivev1.NodeIdentity
}

// record returns the node record the registration would leave, given the
// stored one (nil for a new node).
func (r *registration) record(old *hivev1.NodeRecord) *hivev1.NodeRecord {
	rec := &hivev1.NodeRecord{Name: r.name, Labels: r.labels, Addresses: r.addrs, AgentVersion: r.version,
		Identity: r.identity, OperatorLabels: old.GetOperatorLabels()}
	if rec.Identity == nil {
		rec.Identity = old.GetIdentity()
	}
	return rec
}

// registerNode records a node's facts through raft when they differ from
// the registry.
func (s *Server) registerNode(ctx context.Context, r *registration) error {
	if old := s.fsm.Store().Node(r.name); old != nil && state.SameNodeFacts(old, r.record(old)) {
		return nil
	}
	_, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_NodeUpsert{NodeUpsert: &hivev1.NodeUpsertCommand{
		Name: r.name, Labels: r.labels, Addresses: r.addrs, AgentVersion: r.version, Identity: r.identity,
	}}})
	return err
}

// registerTimeout bounds the registration a watch waits for.
const registerTimeout = 3 * time.Second

// registerLater retries a node's registration until it succeeds or ctx
// (the watch stream) ends.
func (s *Server) registerLater(ctx context.Context, r *registration) {
	backoff := 500 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if err := s.registerNode(ctx, r); err == nil {
			return
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

func (a *api) WatchNodeState(req *hivev1.WatchNodeStateRequest, stream hivev1.CoordinatorService_WatchNodeStateServer) error {
	// The handler's goroutine waits here for the stream's whole life, so
	// its stack is what one watching agent costs: the checks, the
	// registration and each render run in calls that have returned by the
	// time it waits, leaving only gRPC's frames and this small one. Go
	// shrinks an idle goroutine's stack at a collection only while less
	// than a quarter of it is in use; with WatchNodeState's old 1.2 KB
	// frame under the wait, a handler whose first render had grown its
	// stack to 16 KiB kept all of it (docs/performance.md, "Issue 13 fifth
	// pass").
	w, err := a.s.startWatch(stream.Context(), req)
	if err != nil {
		return err
	}
	defer w.stop()
	return w.run(stream)
}

// nodeWatch is one agent's WatchNodeState stream once its checks passed
// and its node is registered.
type nodeWatch struct {
	s         *Server
	ctx       context.Context
	reg       *registration
	last      string          // hash of the state last sent
	sentPlans map[string]bool // plan dry runs this stream sent
	sentBoot  uint64          // the reboot order this stream sent (reboot.go)
	unplan    func()
}

// startWatch checks a watch request and registers its node.
//
//go:noinline
func (s *Server) startWatch(ctx context.Context, req *hivev1.WatchNodeStateRequest) (*nodeWatch, error) {
	node := req.GetNode()
	if node == "" {
		return nil, status.Error(codes.InvalidArgument, "node is required")
	}
	if err := checkNode(ctx, node); err != nil {
		return nil, err
	}
	// Everything the agent says is checked before anything reaches raft;
	// its labels are facts, the labels that select roles come from its
	// certificate (or an operator).
	addrs, err := checkWatchRequest(req)
	if err != nil {
		return nil, err
	}
	host, err := checkHostFacts(req)
	if err != nil {
		return nil, err
	}
	identity, leaf, err := s.watchIdentity(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := checkAgentAddresses(ctx, leaf, addrs); err != nil {
		return nil, err
	}
	reg := &registration{name: node, labels: req.GetLabels(), addrs: addrs, host: host, version: req.GetAgentVersion(), identity: identity}
	// Record the node's facts through raft. Without a leader (no quorum)
	// the watch is still served from this server's state, a read, and the
	// registration is retried in the background while the stream lasts.
	rctx, rcancel := context.WithTimeout(ctx, registerTimeout)
	err = s.registerNode(rctx, reg)
	rcancel()
	if err != nil {
		var re *rejection
		if errors.As(err, &re) || ctx.Err() != nil {
			return nil, toStatus(fmt.Errorf("register node %s: %w", node, err))
		}
		s.log.Warn("watch served before the node could be registered; retrying in the background", "node", node, "err", err)
		go s.registerLater(ctx, reg)
	}
	s.metrics.watchers.Inc()
	return &nodeWatch{s: s, ctx: ctx, reg: reg, last: req.GetKnownHash(), sentPlans: map[string]bool{}, unplan: s.plans.watch(node)}, nil // plan.go
}

func (w *nodeWatch) stop() {
	w.unplan()
	w.s.metrics.watchers.Dec()
}

// run sends the node's state, and again whenever something it may depend
// on changes, until the stream ends. It waits with only its own small
// frame above gRPC's (see WatchNodeState).
func (w *nodeWatch) run(stream hivev1.CoordinatorService_WatchNodeStateServer) error {
	for {
		wake := w.s.hub.wait()
		planWake := w.s.plans.wait()
		if err := w.send(stream); err != nil {
			return err
		}
		select {
		case <-w.ctx.Done():
			return nil
		case <-w.s.ctx.Done():
			return status.Error(codes.Unavailable, "coordinator is stopping")
		case <-wake:
		case <-planWake:
		}
	}
}

// send renders the node's state and sends what the agent has not seen:
// a new state, plan dry runs, a reboot order.
//
//go:noinline
func (w *nodeWatch) send(stream hivev1.CoordinatorService_WatchNodeStateServer) error {
	s, node := w.s, w.reg.name
	if err := s.checkCert(w.ctx, callerFrom(w.ctx)); err != nil {
		return err // revoked (or expired) while watching
	}
	st := s.fsm.Store()
	// The facts this watch registers, with the trusted labels as the
	// store has them now (an operator may change them at any time).
	f := render.FactsOf(w.reg.record(st.Node(node)))
	f.Host = w.reg.host
	out, err := s.renderer.Render(st, f)
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	if h := out.State.GetHash(); h != w.last {
		if err := stream.SendMsg(encodeWatchResponse(out, st.Index())); err != nil {
			return err
		}
		s.metrics.watchSends.Inc()
		w.last = h
	}
	if err := s.sendPlans(stream.SendMsg, st, f, w.sentPlans); err != nil {
		return err
	}
	if o := rebootOrder(st, node); o != nil && o.GetId() != w.sentBoot {
		if err := stream.SendMsg(&hivev1.WatchNodeStateResponse{Reboot: o}); err != nil {
			return err
		}
		w.sentBoot = o.GetId()
	}
	return nil
}

func (a *api) Report(ctx context.Context, req *hivev1.ReportRequest) (*hivev1.ReportResponse, error) {
	done := make(chan error, 1)
	if err := a.s.acceptReport(ctx, req.GetReport(), func(err error) { done <- err }); err != nil {
		return nil, err
	}
	select {
	case err := <-done:
		if err != nil {
			return nil, err
		}
		return &hivev1.ReportResponse{Accepted: true}, nil
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	}
}

// acceptReport is a report's way in, the same for a Report call and for
// each message of a ReportStream: the caller's certificate must name the
// report's node, the node must be within its rate and the report within
// its bounds; published secrets are committed first (a raft round of
// their own, rare); an APPLYING report is kept in memory here, a final
// one goes to the batcher. An error return is the report's refusal, as a
// gRPC status, and done is never called; otherwise done is called exactly
// once with the outcome, nil once the report is committed through raft
// (an APPLYING report: at once), on the goroutine that committed its
// batch: done must not block.
func (s *Server) acceptReport(ctx context.Context, r *hivev1.Report, done func(error)) error {
	if r == nil {
		return status.Error(codes.InvalidArgument, "report is required")
	}
	if r.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "report.node is required")
	}
	if err := checkNode(ctx, r.GetNode()); err != nil {
		return err
	}
	if err := s.admitReport(ctx, r); err != nil {
		return err
	}
	if len(r.GetPublishedSecrets()) > 0 {
		if err := s.publishSecrets(ctx, r.GetNode(), r.GetPublishedSecrets()); err != nil {
			return toStatus(err)
		}
		r = proto.Clone(r).(*hivev1.Report)
		r.PublishedSecrets = nil
	}
	if r.GetPhase() == hivev1.Phase_PHASE_APPLYING {
		// A run started: kept in memory here (status and blocking status
		// show it), never written through raft. The final report is.
		s.statusw.setApplying(r)
		done(nil)
		return nil
	}
	if err := s.batcher.enqueue(ctx, r, func(err error) { done(toStatus(err)) }); err != nil {
		return toStatus(err)
	}
	return nil
}

// publishSecrets seals values a node publishes as "<node>/<name>" secrets,
// writing only those that changed.
func (s *Server) publishSecrets(ctx context.Context, node string, values map[string][]byte) error {
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := state.ValidSecretName(n); err != nil {
			return &rejection{reason: state.ReasonInvalid, msg: "published secret: " + err.Error()}
		}
		full := node + "/" + n
		v := values[n]
		if len(v) > MaxSecretBytes {
			return &rejection{reason: state.ReasonInvalid, msg: fmt.Sprintf("published secret %s is %d bytes; the limit is %d", full, len(v), MaxSecretBytes)}
		}
		if old := s.fsm.Store().Secret(full); old != nil {
			if cur, err := s.keyring.Open(full, old.GetSealed(), old.GetKeyId()); err == nil && string(cur) == string(v) {
				continue
			}
		}
		sealed, kid, err := s.keyring.Seal(full, v)
		if err != nil {
			return err
		}
		if _, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_SecretSet{SecretSet: &hivev1.SecretSetCommand{
			Name: full, Sealed: sealed, KeyId: kid, Author: "agent:" + node,
		}}}); err != nil {
			return err
		}
		s.log.Info("node published a secret", "node", node, "secret", full)
	}
	return nil
}

// applyReports commits one batch of reports (the batcher's apply).
func (s *Server) applyReports(ctx context.Context, reports []*hivev1.Report) error {
	_, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_ReportBatch{ReportBatch: &hivev1.ReportBatchCommand{Reports: reports}}})
	if err == nil {
		s.metrics.reports.Add(float64(len(reports)))
		s.metrics.reportBatches.Inc()
	}
	return err
}

// GetStatus lists every node's status, or one node's with req.node. The
// per-resource results of the last run are included only for one node: a
// fleet-wide answer (what `hivectl push --wait` polls) stays small.
//
// With max_wait it blocks: it answers at once if the status here is newer
// than min_index (a status_index), else at the next change or when the
// wait ends (see statuswait.go). A node's "applying" phase is the one its
// agent reported to this server, kept in memory; elsewhere the node shows
// as pending until its final report is committed.
func (a *api) GetStatus(ctx context.Context, req *hivev1.GetStatusRequest) (*hivev1.GetStatusResponse, error) {
	s := a.s
	wait, err := blockingWait(ctx, req.GetMaxWait())
	if err != nil {
		return nil, err
	}
	view := s.statusw.view()
	if wait > 0 {
		b := newBlockUntil(wait)
		defer b.stop()
		if err := s.catchUp(ctx, req.GetMinIndex()>>localBits, b); err != nil {
			return nil, err
		}
		if view = s.statusw.view(); view.version <= req.GetMinIndex() {
			if _, err := s.waitChange(ctx, view.ch, b); err != nil {
				return nil, err
			}
			view = s.statusw.view()
		}
	}
	st := s.fsm.Store()
	cur := st.Current()
	nodes, _ := st.Nodes()
	reports := st.Reports()
	names := map[string]*hivev1.NodeRecord{}
	for _, n := range nodes {
		names[n.GetName()] = n
	}
	for n := range reports {
		if _, ok := names[n]; !ok {
			names[n] = &hivev1.NodeRecord{Name: n}
		}
	}
	if len(view.applying) > 0 {
		s.statusw.forget(reports, names)
	}
	if req.GetNode() != "" {
		n, ok := names[req.GetNode()]
		if !ok {
			return nil, status.Errorf(codes.NotFound, "node %q is not known (it has never watched or reported)", req.GetNode())
		}
		names = map[string]*hivev1.NodeRecord{req.GetNode(): n}
	}
	resp := &hivev1.GetStatusResponse{Generation: cur.GetNumber(), RaftIndex: st.Index(), Server: s.cfg.Name, StatusIndex: view.version}
	gs := s.gossipStates()
	for _, n := range names {
		// Desired is the node's target: a rollout holds nodes outside
		// its open waves on the generation they had.
		// One node's status carries its results; the fleet's only counts.
		ns := nodeStatus(n, overlay(reports[n.GetName()], view.applying[n.GetName()]), st.TargetGeneration(n.GetName()), req.GetNode() != "")
		fillHealth(ns, reports[n.GetName()], st.CheckRecord(n.GetName()))
		ns.Maintenance, ns.Reboot = st.Maintenance(n.GetName()), st.RebootEntry(n.GetName())
		ns.Gossip = gs[n.GetName()]
		// A site that cannot be rendered for the node (conflicting roles,
		// a missing requirement) is an error the operator must see here:
		// the node's watch fails with it and the node never converges.
		if cur != nil && st.Node(n.GetName()) != nil {
			if _, err := s.renderer.Render(st, render.FactsOf(n)); err != nil {
				ns.Errors = append(ns.Errors, err.Error())
			}
		}
		resp.Nodes = append(resp.Nodes, ns)
	}
	sort.Slice(resp.Nodes, func(i, j int) bool { return resp.Nodes[i].Name < resp.Nodes[j].Name })
	return resp, nil
}

// nodeStatus is n's status against generation cur given its last report r
// (nil: none): the counts of r's results by outcome and the failed ones as
// errors, and with withResults the results themselves.
func nodeStatus(n *hivev1.NodeRecord, r *hivev1.Report, cur *hivev1.Generation, withResults bool) *hivev1.NodeStatus {
	trusted, sources := state.TrustedLabels(n)
	ns := &hivev1.NodeStatus{
		Name: n.GetName(), Labels: trusted, LabelSources: sources, ReportedLabels: n.GetLabels(),
		Addresses: n.GetAddresses(), DesiredGeneration: cur.GetNumber(), AgentVersion: n.GetAgentVersion(),
		Phase: hivev1.Phase_PHASE_PENDING, Resources: &hivev1.ResourceCounts{},
		CertificateSerial: n.GetIdentity().GetSerial(), CertificateNotAfter: n.GetIdentity().GetNotAfter(),
	}
	if cur != nil {
		ns.Roles = render.SelectRoles(cur.GetSite(), n.GetName(), trusted)
	}
	if r == nil {
		return ns
	}
	ns.AppliedGeneration = r.GetGeneration()
	ns.DryRun = r.GetDryRun()
	if r.GetAgentVersion() != "" {
		ns.AgentVersion = r.GetAgentVersion()
	}
	ns.LastReport = r.GetFinished()
	if ns.LastReport == nil {
		ns.LastReport = r.GetStarted()
	}
	switch {
	case r.GetGeneration() != cur.GetNumber() && r.GetPhase() != hivev1.Phase_PHASE_APPLYING:
		// Behind its desired (target) generation, or ahead of it: a
		// rollout rolled back or aborted gives it an older target back.
		// Pending until it reports the target.
		ns.Phase = hivev1.Phase_PHASE_PENDING
	default:
		ns.Phase = r.GetPhase()
		if ns.Phase == hivev1.Phase_PHASE_UNSPECIFIED {
			ns.Phase = hivev1.Phase_PHASE_PENDING
		}
	}
	// The store keeps results encoded (state/results.go): counted without
	// decoding, decoded only for one node or for a node with failures.
	ns.Resources = state.SummarizeResults(r)
	if !withResults && ns.Resources.GetFailed() == 0 {
		return ns
	}
	keep := state.Failed
	if withResults {
		keep = state.All
	}
	results := state.ResultsWhere(r, keep)
	if withResults {
		ns.Results = results
	}
	for _, res := range results {
		if res.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED {
			ns.Errors = append(ns.Errors, fmt.Sprintf("%s: %s", res.GetKey(), res.GetMessage()))
		}
	}
	return ns
}

func (a *api) ListMembers(ctx context.Context, req *hivev1.ListMembersRequest) (*hivev1.ListMembersResponse, error) {
	return &hivev1.ListMembersResponse{Members: a.s.members()}, nil
}

// members lists every gossip member (coordinators with their raft role),
// then raft servers and registry nodes gossip does not know (gossip state
// unspecified: e.g. agents started without gossip).
func (s *Server) members() []*hivev1.Member {
	st := s.fsm.Store()
	var out []*hivev1.Member
	_, leaderID := s.raft.LeaderWithID()
	raftServers := map[string]bool{}
	if f := s.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			raftServers[string(srv.ID)] = true
		}
	}
	role := func(name string) hivev1.RaftRole {
		switch {
		case name == s.cfg.Name:
			return raftRole(s.raft.State())
		case raft.ServerID(name) == leaderID:
			return hivev1.RaftRole_RAFT_ROLE_LEADER
		case raftServers[name]:
			return hivev1.RaftRole_RAFT_ROLE_FOLLOWER
		}
		return hivev1.RaftRole_RAFT_ROLE_NONE
	}
	seen := map[string]bool{}
	if s.gossip != nil {
		for _, m := range s.gossip.Members() {
			pm := m.Proto()
			if pm.GetKind() == hivev1.MemberKind_MEMBER_KIND_COORDINATOR {
				pm.Raft = role(pm.GetName())
			}
			out = append(out, pm)
			seen[pm.GetName()] = true
		}
	}
	for name := range raftServers {
		if seen[name] {
			continue
		}
		m := &hivev1.Member{Name: name, Kind: hivev1.MemberKind_MEMBER_KIND_COORDINATOR, Raft: role(name)}
		if rec := st.Coordinator(name); rec != nil {
			m.GrpcAddr, m.Version = rec.GetGrpcAddr(), rec.GetVersion()
		}
		out = append(out, m)
		seen[name] = true
	}
	nodes, _ := st.Nodes()
	for _, n := range nodes {
		if seen[n.GetName()] {
			continue
		}
		m := &hivev1.Member{Name: n.GetName(), Kind: hivev1.MemberKind_MEMBER_KIND_AGENT, Labels: render.FactsOf(n).Labels, Version: n.GetAgentVersion()}
		if len(n.GetAddresses()) > 0 {
			m.Address = n.GetAddresses()[0]
		}
		out = append(out, m)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func raftRole(st raft.RaftState) hivev1.RaftRole {
	switch st {
	case raft.Leader:
		return hivev1.RaftRole_RAFT_ROLE_LEADER
	case raft.Candidate:
		return hivev1.RaftRole_RAFT_ROLE_CANDIDATE
	case raft.Follower:
		return hivev1.RaftRole_RAFT_ROLE_FOLLOWER
	}
	return hivev1.RaftRole_RAFT_ROLE_NONE
}

func (a *api) SetSecret(ctx context.Context, req *hivev1.SetSecretRequest) (*hivev1.SetSecretResponse, error) {
	s := a.s
	if err := state.ValidSecretName(req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.GetValue()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "secret %s: empty value", req.GetName())
	}
	if len(req.GetValue()) > MaxSecretBytes {
		return nil, status.Errorf(codes.InvalidArgument, "secret %s is %d bytes; the limit is %d", req.GetName(), len(req.GetValue()), MaxSecretBytes)
	}
	sealed, kid, err := s.keyring.Seal(req.GetName(), req.GetValue())
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_SecretSet{SecretSet: &hivev1.SecretSetCommand{
		Name: req.GetName(), Sealed: sealed, KeyId: kid, Author: author(ctx),
	}}}); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("secret set", "secret", req.GetName(), "author", author(ctx))
	return &hivev1.SetSecretResponse{Nodes: s.secretUsers(req.GetName())}, nil
}

// secretUsers returns the registry nodes whose state references a secret.
func (s *Server) secretUsers(name string) []string {
	st := s.fsm.Store()
	nodes, _ := st.Nodes()
	var out []string
	for _, n := range nodes {
		r, err := s.renderer.Render(st, render.FactsOf(n))
		if err != nil {
			continue
		}
		ns := r.State
		if _, ok := ns.GetSecrets()[name]; ok {
			out = append(out, n.GetName())
			continue
		}
		for _, r := range ns.GetResources() {
			if f := r.GetFile(); f != nil && contains(f.GetSecrets(), name) {
				out = append(out, n.GetName())
				break
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func (a *api) ListSecrets(ctx context.Context, req *hivev1.ListSecretsRequest) (*hivev1.ListSecretsResponse, error) {
	st := a.s.fsm.Store()
	referenced := map[string]bool{}
	cur := st.Current()
	for _, n := range cur.GetSite().GetSecrets() {
		referenced[n] = true
	}
	for _, r := range cur.GetSite().GetRoles() {
		for _, res := range r.GetResources() {
			for _, n := range res.GetFile().GetSecrets() {
				referenced[n] = true
			}
		}
	}
	resp := &hivev1.ListSecretsResponse{}
	have := map[string]bool{}
	for _, sec := range st.Secrets() {
		have[sec.GetName()] = true
		resp.Secrets = append(resp.Secrets, &hivev1.SecretInfo{
			Name: sec.GetName(), Updated: sec.GetUpdated(), Author: sec.GetAuthor(),
			Referenced: referenced[sec.GetName()], Published: state.IsPublished(sec.GetName()),
		})
	}
	for n := range referenced {
		if !have[n] {
			resp.Missing = append(resp.Missing, n)
		}
	}
	sort.Strings(resp.Missing)
	return resp, nil
}

func (a *api) DeleteSecret(ctx context.Context, req *hivev1.DeleteSecretRequest) (*hivev1.DeleteSecretResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if _, err := a.s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_SecretDelete{SecretDelete: &hivev1.SecretDeleteCommand{
		Name: req.GetName(), Author: author(ctx),
	}}}); err != nil {
		return nil, toStatus(err)
	}
	a.s.log.Info("secret deleted", "secret", req.GetName(), "author", author(ctx))
	return &hivev1.DeleteSecretResponse{}, nil
}

func (a *api) ListPeers(ctx context.Context, req *hivev1.ListPeersRequest) (*hivev1.ListPeersResponse, error) {
	f := a.s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, toStatus(err)
	}
	_, leader := a.s.raft.LeaderWithID()
	resp := &hivev1.ListPeersResponse{}
	for _, srv := range f.Configuration().Servers {
		resp.Peers = append(resp.Peers, &hivev1.RaftPeer{
			Id: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leader,
		})
	}
	return resp, nil
}

// leaderClient returns a client of the leader's CoordinatorService, or nil
// when this server leads.
func (s *Server) leaderClient() (hivev1.CoordinatorServiceClient, error) {
	if s.raft.State() == raft.Leader {
		return nil, nil
	}
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return nil, ErrNoLeader
	}
	rec := s.fsm.Store().Coordinator(string(id))
	if rec == nil {
		return nil, fmt.Errorf("%w: leader %s has not recorded its address yet", ErrNoLeader, id)
	}
	conn, err := s.forwardConn(rec.GetGrpcAddr())
	if err != nil {
		return nil, err
	}
	return hivev1.NewCoordinatorServiceClient(conn), nil
}

// addVoter adds id at addr as a raft voter (or promotes the non-voter id)
// through the leader (locally or by AddPeer on the leader, which adds a
// non-voter after proving it: the leader's reconcileLoop promotes it).
// Production calls it on the leader only, for a server already proven. A leadership change before or while the
// configuration change commits is retried (adding a voter already present
// at the same address is harmless) until ctx or the apply timeout ends.
func (s *Server) addVoter(ctx context.Context, id, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for {
		changed := s.node.Changed()
		var err error
		if s.raft.State() == raft.Leader {
			timeout := s.cfg.ApplyTimeout
			if d, ok := ctx.Deadline(); ok {
				timeout = time.Until(d)
			}
			err = s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout).Error()
			if err == nil {
				return nil
			}
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) &&
				!errors.Is(err, raft.ErrLeadershipTransferInProgress) && !errors.Is(err, raft.ErrEnqueueTimeout) {
				return err
			}
		} else {
			var c hivev1.CoordinatorServiceClient
			if c, err = s.leaderClient(); err == nil && c != nil {
				if _, err = c.AddPeer(ctx, &hivev1.AddPeerRequest{Id: id, Address: addr}); err == nil {
					return nil
				}
				if status.Code(err) != codes.Unavailable {
					return err
				}
			}
		}
		s.log.Info("adding raft voter: retrying after a leadership change", "peer", id, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("add voter %s: %w (last error: %v)", id, ctx.Err(), err)
		case <-changed: // a new leader: at once
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// AddPeer adds a coordinator as a raft non-voter through the leader, once
// it proved its certificate there (proveAndAdd); the leader's
// reconcileLoop promotes it once caught up. Neither an admin nor a
// coordinator can add a voter directly.
func (a *api) AddPeer(ctx context.Context, req *hivev1.AddPeerRequest) (*hivev1.AddPeerResponse, error) {
	if req.GetId() == "" || req.GetAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "id and address are required")
	}
	if a.s.clientTLS == nil {
		return nil, status.Error(codes.FailedPrecondition, errNoTLS.Error())
	}
	c, err := a.s.leaderClient()
	if err != nil {
		return nil, toStatus(err)
	}
	if c != nil {
		return c.AddPeer(forwardCtx(ctx), req)
	}
	if err := a.s.proveAndAdd(ctx, req.GetId(), req.GetAddress(), req.GetGrpcAddress()); err != nil {
		if errors.Is(err, ErrUnproven) {
			return nil, status.Errorf(codes.FailedPrecondition, "add peer %s: %v", req.GetId(), err)
		}
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "add peer %s: %v", req.GetId(), err)
	}
	a.s.log.Info("added raft peer as a non-voter after it proved its certificate", "peer", req.GetId(), "address", req.GetAddress(), "by", author(ctx))
	a.s.auditOnly(ctx, fmt.Sprintf("add coordinator %s (raft %s, grpc %s)", req.GetId(), req.GetAddress(), req.GetGrpcAddress()))
	return &hivev1.AddPeerResponse{}, nil
}

// RemovePeer removes a server from raft through the leader. An id that is
// not in the configuration is NotFound (naming the known peers).
func (a *api) RemovePeer(ctx context.Context, req *hivev1.RemovePeerRequest) (*hivev1.RemovePeerResponse, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id is required")
	}
	c, err := a.s.leaderClient()
	if err != nil {
		return nil, toStatus(err)
	}
	if c != nil {
		return c.RemovePeer(forwardCtx(ctx), req)
	}
	f := a.s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, toStatus(err)
	}
	found := false
	for _, srv := range f.Configuration().Servers {
		found = found || srv.ID == raft.ServerID(req.GetId())
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "no raft peer named %q (peers: %s)", req.GetId(), raftPeerIDs(f.Configuration()))
	}
	if err := a.s.raft.RemoveServer(raft.ServerID(req.GetId()), f.Index(), a.s.cfg.ApplyTimeout).Error(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "remove peer %s: %v", req.GetId(), err)
	}
	if a.s.fsm.Store().Coordinator(req.GetId()) != nil {
		if _, err := a.s.commit(ctx, &hivev1.Command{Body: &hivev1.Command_PeerRemove{PeerRemove: &hivev1.PeerRemoveCommand{Name: req.GetId()}}}); err != nil {
			return nil, toStatus(err)
		}
	} else {
		a.s.auditOnly(ctx, "remove coordinator "+req.GetId()+" (raft peer only)")
	}
	a.s.log.Info("removed raft peer", "peer", req.GetId(), "by", author(ctx))
	return &hivev1.RemovePeerResponse{}, nil
}
