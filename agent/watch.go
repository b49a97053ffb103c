package agent

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/limits"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/version"
)

// connHolder is the coordinator connection in use, shared by the watcher
// (owner) and the reporter.
type connHolder struct {
	conn *client.Conn
	// rep sends reports over the connection (one ReportStream).
	rep *reporter
}

// candidates returns coordinator gRPC addresses: gossip's alive
// coordinators and the static ones (or, when there are none, the
// coordinators gossip last saw, else those remembered from the last
// session), shuffled (so thousands of agents
// spread over the coordinators), with avoid moved to the end.
func (a *Agent) candidates(avoid string) []string {
	var out []string
	if a.gossip != nil {
		for _, m := range a.gossip.Coordinators() {
			if n, err := client.NormalizeAddr(m.Meta.GetGrpcAddr()); err == nil {
				out = append(out, n)
			}
		}
	}
	for _, s := range a.cfg.Coordinators {
		if n, err := client.NormalizeAddr(s); err == nil && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 && a.gossip != nil {
		// No coordinator alive in gossip: try those gossip last saw (dead
		// or left). A restarted coordinator answers gRPC before the pools
		// have merged again, so the agent reports as soon as it is back.
		for _, m := range a.gossip.Members() {
			if m.Meta.GetKind() != hivev1.MemberKind_MEMBER_KIND_COORDINATOR {
				continue
			}
			if n, err := client.NormalizeAddr(m.Meta.GetGrpcAddr()); err == nil && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	if len(out) == 0 {
		// A restart before gossip found anyone: the last session's list.
		out = append(out, a.remembered...)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	if i := slices.Index(out, avoid); i >= 0 && len(out) > 1 {
		out = append(append(out[:i:i], out[i+1:]...), avoid)
	}
	return out
}

func (a *Agent) clientConfig(addrs []string) client.Config {
	return client.Config{
		Addrs:          addrs,
		CA:             a.cfg.TLSCA,
		Cert:           a.cfg.TLSCert,
		Key:            a.cfg.TLSKey,
		Insecure:       a.cfg.Dev,
		AttemptTimeout: 3 * time.Second,
		// The coordinator allows pings every 10s, even with no stream
		// open: a silently dead coordinator (or a cut path) ends the
		// watch within ~35s at the HTTP/2 level, besides gossip (see
		// watch).
		Keepalive:        25 * time.Second,
		KeepaliveTimeout: 10 * time.Second,
	}
}

// watchLoop keeps one watch stream open, switching coordinators with
// exponential backoff and jitter when a stream ends.
func (a *Agent) watchLoop(ctx context.Context) {
	var events <-chan gossip.Event
	if a.gossip != nil {
		ch, cancel := a.gossip.Subscribe(64)
		defer cancel()
		events = ch
	}
	if d := RestartSpread(a.fleetSize); d > 0 && a.current() != nil {
		// A restart of a whole fleet (power back after a cut): the
		// cached state is enforced already; spread the reconnections.
		wait := rand.N(d)
		a.log.Info("restarted with a cached state: spreading the first connection", "delay", wait.Round(time.Millisecond), "fleet", a.fleetSize)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
	backoff := a.cfg.ReconnectMin
	avoid := ""
	dialFails := 0 // dials in a row that reached no coordinator
	for ctx.Err() == nil {
		addrs := a.candidates(avoid)
		if len(addrs) == 0 {
			a.log.Debug("no coordinator known yet")
			a.sleep(ctx, backoffJitter(backoff), events)
			backoff = min(backoff*2, a.cfg.ReconnectMax)
			continue
		}
		select {
		case <-a.reconnect: // a renewal before this dial: it uses the new certificate
		default:
		}
		cc := a.clientConfig(addrs)
		cc.AttemptTimeout = attemptTimeout(dialFails)
		conn, err := client.Dial(ctx, cc)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			dialFails++
			wait := backoffJitter(backoff)
			a.log.Warn("no coordinator reachable", "tried", addrs, "retry_in", wait.Round(time.Millisecond), "err", err)
			a.sleep(ctx, wait, events)
			backoff = min(backoff*2, a.cfg.ReconnectMax)
			continue
		}
		dialFails = 0
		h := &connHolder{conn: conn, rep: newReporter(conn)}
		a.conn.Store(h)
		a.rememberCoordinators()
		select {
		case a.reportWake <- struct{}{}:
		default:
		}
		began := time.Now()
		got, err := a.watch(ctx, conn)
		a.conn.CompareAndSwap(h, nil)
		conn.Close()
		if ctx.Err() != nil {
			return
		}
		a.statsMu.Lock()
		a.stats.Reconnects++
		a.statsMu.Unlock()
		avoid = conn.Addr
		wait := backoffJitter(backoff)
		if got || time.Since(began) > 30*time.Second {
			// A healthy stream ended (the coordinator stopped or was cut
			// off): reconnect after a random delay in [0, spread), so
			// its agents do not all arrive elsewhere at the same moment.
			backoff = a.cfg.ReconnectMin
			wait = rand.N(a.cfg.ReconnectSpread + 1)
		}
		a.log.Warn("watch stream lost, switching coordinator", "coordinator", conn.Addr, "retry_in", wait.Round(time.Millisecond), "err", err)
		// Membership events that arrived while the stream was up are
		// stale: a join seen then must not cut the next backoff short.
		drain(events)
		a.sleep(ctx, wait, nil)
		backoff = min(backoff*2, a.cfg.ReconnectMax)
	}
}

// attemptTimeout is how long one watch dial gives each coordinator
// (TCP, TLS handshake, health check) after fails dials in a row that
// reached none: 3 s, doubled per failure, at most 30 s. A fixed 3 s never
// connects where the handshake takes longer (a starved host: 500 agents
// restarting at once on two cores took 5-50 s to start, and every attempt
// cut at 3 s was a handshake thrown away on both sides, then redone).
func attemptTimeout(fails int) time.Duration {
	const base, most = 3 * time.Second, 30 * time.Second
	if fails >= 4 {
		return most
	}
	return min(base<<fails, most)
}

// drain empties a buffered event channel without blocking.
func drain(events <-chan gossip.Event) {
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// sleep waits d, or less when gossip reports a coordinator joining.
func (a *Agent) sleep(ctx context.Context, d time.Duration, events <-chan gossip.Event) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Type != gossip.EventLeave && ev.Member.Meta.GetKind() == hivev1.MemberKind_MEMBER_KIND_COORDINATOR {
				// Spread the herd: a little random delay, not none.
				time.Sleep(rand.N(a.cfg.ReconnectMin + 1))
				return
			}
		}
	}
}

// watch runs one stream until it fails (the coordinator ends it, or the
// connection's own HTTP/2 keepalive finds the path dead), ctx ends, or a
// certificate renewal asks for a new connection. It reports whether a
// state was received.
//
// Gossip's opinion of the coordinator is deliberately not consulted: in a
// large or loaded pool memberlist can call a coordinator dead (UDP probes
// lost in a full queue) while its gRPC stream delivers, and tearing down
// working streams on such a hint only added a reconnect storm to the load.
// A stream is judged by its own keepalives (clientConfig: a ping after 25s
// of silence, dead 10s later); gossip only helps choose a coordinator when
// connecting (candidates).
func (a *Agent) watch(ctx context.Context, conn *client.Conn) (bool, error) {
	sctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	known := ""
	if st := a.current(); st != nil {
		known = st.GetHash()
	}
	wreq := &hivev1.WatchNodeStateRequest{
		Node:         a.cfg.Name,
		Labels:       a.cfg.Labels,
		Addresses:    a.addresses(),
		AgentVersion: version.Version,
		KnownHash:    known,
	}
	a.hostFacts(wreq)
	stream, err := conn.WatchNodeState(sctx, wreq)
	if err != nil {
		return false, err
	}
	a.log.Info("watching desired state", "coordinator", conn.Addr, "known_hash", short(known))
	renewed := make(chan struct{})
	defer close(renewed)
	go func() {
		select {
		case <-renewed:
		case <-a.reconnect:
			cancelCause(errRenewed)
		}
	}()
	got := false
	plans := a.newPlanRunner(sctx, conn) // plan.go: dry runs for hivectl plan
	for {
		resp, err := stream.Recv()
		if err != nil {
			if status.Code(err) == codes.Canceled && ctx.Err() == nil {
				if c := context.Cause(sctx); c != nil {
					err = c
				}
			}
			return got, err
		}
		if !got {
			a.metrics.watchUp()
			defer a.metrics.watchDown()
		}
		got = true
		if st := resp.GetState(); st != nil {
			a.deliver(st)
		}
		if pl := resp.GetPlan(); pl != nil {
			plans.offer(pl)
		}
		if o := resp.GetReboot(); o != nil {
			a.reboot(ctx, o)
		}
	}
}

// probe checks that a coordinator answers now (firewall confirm).
func (a *Agent) probe(ctx context.Context) error {
	addrs := a.candidates("")
	if len(addrs) == 0 {
		return client.ErrUnreachable
	}
	conn, err := client.Dial(ctx, a.clientConfig(addrs))
	if err != nil {
		return err
	}
	return conn.Close()
}

// reportLoop sends queued reports, oldest first, over the current
// connection; it waits for a connection or a new report otherwise.
func (a *Agent) reportLoop(ctx context.Context) {
	backoff := time.Second
	for {
		var retry <-chan time.Time
		if !a.flush(ctx) {
			retry = time.After(backoffJitter(backoff))
			backoff = min(backoff*2, 30*time.Second)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			// One last attempt for the final report, briefly.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			a.flush(fctx)
			cancel()
			return
		case <-a.reportWake:
		case <-retry:
		}
	}
}

// flush sends what is queued; it returns false when something is left to
// retry.
func (a *Agent) flush(ctx context.Context) bool {
	seqs, err := a.cache.Queued()
	if err != nil {
		a.log.Error("cannot read the report queue", "err", err)
		return false
	}
	if len(seqs) == 0 {
		return true
	}
	h := a.conn.Load()
	if h == nil {
		return true // the watcher wakes us when a connection is up
	}
	for _, seq := range seqs {
		r, err := a.cache.Peek(seq)
		if err != nil {
			a.log.Warn("dropping an unreadable queued report", "seq", seq, "err", err)
			a.cache.Dequeue(seq)
			continue
		}
		limits.FitReport(r) // a report queued by an older agent may be over the limits
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = h.rep.Report(sctx, r)
		cancel()
		switch status.Code(err) {
		case codes.OK:
			a.cache.Dequeue(seq)
			a.statsMu.Lock()
			a.stats.ReportsSent++
			a.statsMu.Unlock()
			a.log.Debug("report delivered", "seq", seq, "generation", r.GetGeneration())
		case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition:
			// Sending it again would fail again.
			a.log.Error("coordinator refused a report; dropping it", "seq", seq, "err", err)
			a.cache.Dequeue(seq)
		case codes.ResourceExhausted:
			// Over this node's report rate, or the coordinator's queue is
			// full: keep the report queued and back off.
			a.log.Info("coordinator asked to slow down; keeping reports queued", "seq", seq, "queued", len(seqs), "err", err)
			return false
		default:
			a.log.Info("report not delivered, will retry", "seq", seq, "err", err)
			return false
		}
	}
	return true
}

// rememberCoordinators saves the coordinators gossip knows (alive ones),
// when the list changed, so that a restarted agent can reach them before
// gossip has joined. Called from the watch goroutine.
func (a *Agent) rememberCoordinators() {
	if a.gossip == nil {
		return
	}
	var addrs []string
	for _, m := range a.gossip.Coordinators() {
		if n, err := client.NormalizeAddr(m.Meta.GetGrpcAddr()); err == nil {
			addrs = append(addrs, n)
		}
	}
	slices.Sort(addrs)
	key := strings.Join(addrs, ",")
	if len(addrs) == 0 || key == a.saved {
		return
	}
	if err := a.cache.SaveCoordinators(addrs); err != nil {
		a.log.Warn("cannot remember the coordinators", "err", err)
		return
	}
	a.saved = key
}
