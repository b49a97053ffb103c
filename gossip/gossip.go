// Package gossip is hive's membership layer: a wrapper around
// hashicorp/memberlist shared by hive-agent and hive-coordinator. Every
// member advertises a hivev1.MemberMeta (kind, labels, gRPC address,
// version, raft facts), protobuf-encoded into memberlist's node metadata
// (at most MaxMetaSize bytes, checked by Validate and UpdateMeta). Agents
// learn the coordinators' gRPC addresses from it; coordinators learn their
// peers and the fleet's liveness.
//
// Lifecycle: New binds the gossip port (UDP and TCP) and returns at once;
// Run joins the configured addresses, retrying with exponential backoff and
// jitter until one join succeeds, then keeps rejoining configured addresses
// that are not alive members (this heals partitions and restarts of the
// whole pool), and on context cancellation broadcasts a leave and shuts the
// member down. Members, Coordinators, UpdateMeta, Subscribe and Joined are
// safe from any goroutine, before, during and after Run.
//
// States: a member is alive, dead (failed probes) or left (it announced its
// leave). memberlist v0.7 does not expose its suspicion state through its
// public API, so StateSuspect exists for the wire mapping but is not
// reported today. Dead and left members are kept in Members for
// Config.DeadRetention, then forgotten.
//
// Events: Subscribe hands out a buffered channel of join, leave and update
// events. Delivery never blocks gossip: when a subscriber's buffer is full
// the event is dropped for that subscriber (counted by Dropped). Events are
// hints; Members is the authoritative view and subscribers that fall behind
// should re-read it.
//
// memberlist's callbacks run on its network goroutines with its node lock
// held; this package's delegate only updates its own table under its own
// mutex and never calls back into memberlist from them.
package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// State is a member's liveness.
type State int

// Member states.
const (
	StateAlive State = iota + 1
	StateSuspect
	StateDead
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

// Proto maps s to the API enum.
func (s State) Proto() hivev1.GossipState {
	switch s {
	case StateAlive:
		return hivev1.GossipState_GOSSIP_STATE_ALIVE
	case StateSuspect:
		return hivev1.GossipState_GOSSIP_STATE_SUSPECT
	case StateDead:
		return hivev1.GossipState_GOSSIP_STATE_DEAD
	case StateLeft:
		return hivev1.GossipState_GOSSIP_STATE_LEFT
	}
	return hivev1.GossipState_GOSSIP_STATE_UNSPECIFIED
}

// Member is one member of the pool as this member sees it.
type Member struct {
	Name string
	// Addr is the member's gossip host:port.
	Addr  string
	State State
	// Meta is the decoded metadata; never nil (empty when the member sent
	// none or MetaErr is set).
	Meta *hivev1.MemberMeta
	// MetaErr is set when the member's metadata could not be decoded.
	MetaErr error
	// Since is when this member last changed state.
	Since time.Time
	// Self marks the local member.
	Self bool
}

// Proto converts m to the API's Member (raft role left unspecified).
func (m Member) Proto() *hivev1.Member {
	return &hivev1.Member{
		Name:     m.Name,
		Kind:     m.Meta.GetKind(),
		Address:  m.Addr,
		Gossip:   m.State.Proto(),
		Labels:   m.Meta.GetLabels(),
		GrpcAddr: m.Meta.GetGrpcAddr(),
		Version:  m.Meta.GetVersion(),
	}
}

// EventType says what happened to a member.
type EventType int

// Event types.
const (
	EventJoin EventType = iota + 1
	EventLeave
	EventUpdate
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventLeave:
		return "leave"
	case EventUpdate:
		return "update"
	}
	return "unknown"
}

// Event is a change of one member.
type Event struct {
	Type   EventType
	Member Member
}

// ErrClosed is returned by UpdateMeta after the member has shut down.
var ErrClosed = errors.New("gossip: member is shut down")

// Gossip is one member of the pool.
type Gossip struct {
	cfg    Config
	log    *slog.Logger
	ml     *memberlist.Memberlist
	queue  *memberlist.TransmitLimitedQueue
	joined chan struct{}

	metaMu sync.Mutex
	meta   []byte

	mu      sync.Mutex
	members map[string]*Member
	intents map[string]time.Time // leave intents by member name, receive time
	subs    map[*subscriber]struct{}

	dropped   atomic.Uint64
	closeOnce sync.Once
	closed    atomic.Bool
}

type subscriber struct {
	ch chan Event
}

// New binds the gossip port and creates the member; it does not contact
// anyone yet (Run does). cfg.Logger nil logs nothing.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mc, err := cfg.memberlistConfig()
	if err != nil {
		return nil, err
	}
	meta, err := encodeMeta(cfg.Meta)
	if err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "gossip"),
		joined:  make(chan struct{}),
		meta:    meta,
		members: make(map[string]*Member),
		intents: make(map[string]time.Time),
		subs:    make(map[*subscriber]struct{}),
	}
	g.queue = &memberlist.TransmitLimitedQueue{NumNodes: g.numMembers, RetransmitMult: mc.RetransmitMult}
	d := &delegate{g: g}
	mc.Delegate = d
	mc.Events = d
	mc.Logger = newStdLogger(cfg.Logger.With("component", "memberlist"))
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start memberlist on %s: %w", cfg.BindAddr, err)
	}
	g.ml = ml
	if len(cfg.Join) == 0 {
		close(g.joined)
	}
	g.log.Info("gossip member started", "name", cfg.Name, "addr", g.LocalAddr(), "encrypted", cfg.Key != nil)
	return g, nil
}

// LocalAddr is the host:port this member advertises.
func (g *Gossip) LocalAddr() string {
	n := g.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Joined is closed once a join has succeeded (at once when Config.Join is
// empty).
func (g *Gossip) Joined() <-chan struct{} { return g.joined }

// Dropped counts events dropped because a subscriber's buffer was full.
func (g *Gossip) Dropped() uint64 { return g.dropped.Load() }

// Run joins the pool and keeps membership healthy until ctx is done; then
// it leaves the pool and shuts the member down. It returns nil: failures
// to join or leave are retried or logged, never fatal.
func (g *Gossip) Run(ctx context.Context) error {
	defer g.Close()
	if len(g.cfg.Join) > 0 {
		if err := g.joinLoop(ctx); err != nil {
			return g.leave()
		}
	}
	if g.cfg.RejoinInterval > 0 {
		t := time.NewTimer(jitter(g.cfg.RejoinInterval))
		defer t.Stop()
		backoff := map[string]*rejoinState{}
		for {
			select {
			case <-ctx.Done():
				return g.leave()
			case <-t.C:
				g.prune()
				g.rejoinMissing(ctx, backoff, time.Now())
				t.Reset(jitter(g.cfg.RejoinInterval))
			}
		}
	}
	<-ctx.Done()
	return g.leave()
}

// joinLoop retries joining until a join reaches another member. It
// waits a random part of JoinSpread first, then tries the join addresses
// one at a time in random order, stopping at the first that answers: one
// push/pull with one member brings the whole membership, and a fleet
// joining through every seed at once would send each seed a full state
// exchange per member.
func (g *Gossip) joinLoop(ctx context.Context) error {
	if g.cfg.JoinSpread > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rand.N(g.cfg.JoinSpread)):
		}
	}
	delay := g.cfg.JoinBackoffMin
	for attempt := 1; ; attempt++ {
		var err error
		for _, addr := range shuffled(g.cfg.Join) {
			var n int
			n, err = g.ml.Join([]string{addr})
			if n > 0 && g.aliveOthers() > 0 {
				g.log.Info("joined gossip pool", "via", addr, "members", g.ml.NumMembers(), "attempts", attempt)
				close(g.joined)
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		wait := backoffJitter(delay)
		lvl := slog.LevelDebug
		if attempt == 1 || attempt%10 == 0 {
			lvl = slog.LevelWarn
		}
		g.log.Log(ctx, lvl, "join failed, retrying", "join", g.cfg.Join, "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		delay = min(delay*2, g.cfg.JoinBackoffMax)
	}
}

// shuffled returns a shuffled copy of addrs.
func shuffled(addrs []string) []string {
	out := slices.Clone(addrs)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// rejoinState is the backoff of one join address that is not an alive
// member: it is joined again at next, and the delay after a failure
// doubles up to RejoinMax.
type rejoinState struct {
	next  time.Time
	delay time.Duration
}

// rejoinMissing joins again the configured addresses that are not alive
// members: after a partition or a restart of the whole pool, memberlist
// alone would keep the halves apart once the dead are no longer gossiped
// to. One join per round (the first due, in random order) is enough to
// merge two halves; an address that stays missing is retried with
// exponential backoff (RejoinInterval doubling up to RejoinMax), so that a
// fleet does not push its whole state to a seed that is down every round.
func (g *Gossip) rejoinMissing(ctx context.Context, backoff map[string]*rejoinState, now time.Time) {
	alive := make(map[string]bool)
	self := g.LocalAddr()
	for _, m := range g.Members() {
		if m.State == StateAlive {
			alive[m.Addr] = true
		}
	}
	var due []string
	for _, j := range g.cfg.Join {
		addrs, err := resolve(ctx, j)
		if err != nil {
			g.log.Debug("resolve join address", "addr", j, "err", err)
			continue
		}
		found := false
		for _, a := range addrs {
			if alive[a] || a == self {
				found = true
				break
			}
		}
		if found {
			delete(backoff, j)
			continue
		}
		st := backoff[j]
		if st == nil {
			// A seed just found missing (restarted, or cut off) is
			// joined after a random delay that grows with the pool: one
			// join merges the pool again, and a restarted seed usually
			// comes back by itself (it rejoins its own seeds), so a
			// thousand members need not all push their state to it
			// within the same seconds.
			st = &rejoinState{next: now.Add(rand.N(g.rejoinSpread() + 1)), delay: g.cfg.RejoinInterval}
			backoff[j] = st
		}
		if !now.Before(st.next) {
			due = append(due, j)
		}
	}
	if len(due) == 0 {
		return
	}
	addr := due[rand.N(len(due))]
	n, err := g.ml.Join([]string{addr})
	st := backoff[addr]
	if n > 0 {
		g.log.Info("rejoined gossip address", "addr", addr)
		delete(backoff, addr)
		return
	}
	st.delay = min(st.delay*2, max(g.rejoinMax(), g.cfg.RejoinInterval))
	st.next = now.Add(jitter(st.delay))
	g.log.Debug("rejoin failed", "addr", addr, "retry_in", st.delay, "err", err)
}

// rejoinSpread is the window over which the members of the pool rejoin a
// seed found missing: 50ms per member, at least nothing, at most 2
// minutes.
func (g *Gossip) rejoinSpread() time.Duration {
	return min(time.Duration(g.cfg.PoolSize)*50*time.Millisecond, 2*time.Minute)
}

func (g *Gossip) rejoinMax() time.Duration {
	if g.cfg.RejoinMax > 0 {
		return g.cfg.RejoinMax
	}
	return 8 * g.cfg.RejoinInterval
}

func resolve(ctx context.Context, hostport string) ([]string, error) {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(h); ip != nil {
		return []string{net.JoinHostPort(ip.String(), p)}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupHost(ctx, h)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, p))
	}
	return out, nil
}

// leave announces the leave to the pool, then shuts the member down. A
// leave that cannot be confirmed (everyone else gone at the same moment)
// is logged, not returned: the others then see this member as dead.
func (g *Gossip) leave() error {
	if g.closed.Load() {
		return nil
	}
	// The leave intent lets others tell "left" from "dead" (memberlist's
	// own leave message does not reach its event delegate as such).
	g.queue.QueueBroadcast(&intentBroadcast{msg: encodeIntent(g.cfg.Name)})
	if g.aliveOthers() > 0 {
		if err := g.ml.Leave(g.cfg.LeaveTimeout); err != nil {
			g.log.Warn("leave not confirmed", "err", err)
		}
		deadline := time.Now().Add(g.cfg.LeaveTimeout)
		for g.queue.NumQueued() > 0 && g.aliveOthers() > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	g.log.Info("left gossip pool", "name", g.cfg.Name)
	g.Close()
	return nil
}

// Close shuts the member down without announcing a leave (others will see
// it as dead). Run calls it; call it yourself only if Run is never called.
func (g *Gossip) Close() {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		_ = g.ml.Shutdown()
		g.mu.Lock()
		for s := range g.subs {
			close(s.ch)
			delete(g.subs, s)
		}
		g.mu.Unlock()
	})
}

// UpdateMeta replaces the advertised metadata and broadcasts it. It blocks
// until the update is sent or ctx is done.
func (g *Gossip) UpdateMeta(ctx context.Context, m *hivev1.MemberMeta) error {
	b, err := encodeMeta(m)
	if err != nil {
		return err
	}
	if g.closed.Load() {
		return ErrClosed
	}
	g.metaMu.Lock()
	g.meta = b
	g.metaMu.Unlock()
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: broadcast metadata: %w", err)
	}
	return nil
}

// Members returns every known member, the local one included, sorted by
// name. Dead and left members stay listed for Config.DeadRetention.
func (g *Gossip) Members() []Member {
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, *m)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// Coordinators returns the alive members of kind coordinator that advertise
// a gRPC address, sorted by name.
func (g *Gossip) Coordinators() []Member {
	var out []Member
	for _, m := range g.Members() {
		if m.State == StateAlive && m.Meta.GetKind() == hivev1.MemberKind_MEMBER_KIND_COORDINATOR && m.Meta.GetGrpcAddr() != "" {
			out = append(out, m)
		}
	}
	return out
}

// Subscribe returns a channel of membership events with room for buffer
// events (minimum 1) and a function that cancels the subscription and
// closes the channel. The channel is also closed when the member shuts
// down. Events that do not fit are dropped (see the package doc).
func (g *Gossip) Subscribe(buffer int) (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, max(buffer, 1))}
	g.mu.Lock()
	if g.closed.Load() {
		g.mu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	g.subs[s] = struct{}{}
	g.mu.Unlock()
	return s.ch, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if _, ok := g.subs[s]; ok {
			delete(g.subs, s)
			close(s.ch)
		}
	}
}

func (g *Gossip) numMembers() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(len(g.members), 1)
}

func (g *Gossip) aliveOthers() int {
	n := 0
	g.mu.Lock()
	for _, m := range g.members {
		if !m.Self && m.State == StateAlive {
			n++
		}
	}
	g.mu.Unlock()
	return n
}

// prune forgets dead and left members older than DeadRetention and stale
// leave intents.
func (g *Gossip) prune() {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, m := range g.members {
		if (m.State == StateDead || m.State == StateLeft) && now.Sub(m.Since) > g.cfg.DeadRetention {
			delete(g.members, name)
		}
	}
	for name, t := range g.intents {
		if now.Sub(t) > intentWindow {
			delete(g.intents, name)
		}
	}
}

// emit delivers ev to every subscriber without blocking. g.mu is held.
func (g *Gossip) emitLocked(ev Event) {
	for s := range g.subs {
		select {
		case s.ch <- ev:
		default:
			g.dropped.Add(1)
		}
	}
}

func decodeMeta(b []byte) (*hivev1.MemberMeta, error) {
	m := &hivev1.MemberMeta{}
	if len(b) == 0 {
		return m, nil
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return &hivev1.MemberMeta{}, fmt.Errorf("decode member metadata: %w", err)
	}
	return m, nil
}

// jitter returns d ± 20%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*8/10 + rand.N(d*4/10+1)
}

// backoffJitter returns a delay in [d/2, d] ("equal jitter"), so that many
// members retrying after one failure spread out.
func backoffJitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}
