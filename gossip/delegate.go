package gossip

import (
	"context"
	"log/slog"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"

	"github.com/hashicorp/memberlist"
)

// intentWindow is how long a leave intent and a member's departure may be
// apart and still make the member "left" rather than "dead".
const intentWindow = 2 * time.Minute

// msgLeaveIntent prefixes a user message announcing a member's leave.
const msgLeaveIntent byte = 'L'

func encodeIntent(name string) []byte {
	return append([]byte{msgLeaveIntent}, name...)
}

// intentBroadcast is a leave intent queued for gossip; one per member name.
type intentBroadcast struct {
	msg []byte
}

func (b *intentBroadcast) Name() string    { return string(b.msg) }
func (b *intentBroadcast) Message() []byte { return b.msg }
func (b *intentBroadcast) Finished()       {}
func (b *intentBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.Name()
}

// memberLevel is the log level of another member's join and leave: info
// for coordinators, and on coordinators; on an agent, other agents come
// and go at debug (an agent in a pool of thousands would otherwise log a
// line per member at every start).
func (g *Gossip) memberLevel(other *hivev1.MemberMeta) slog.Level {
	coord := hivev1.MemberKind_MEMBER_KIND_COORDINATOR
	if other.GetKind() == coord || g.cfg.Meta.GetKind() == coord || g.cfg.Meta.GetKind() == hivev1.MemberKind_MEMBER_KIND_UNSPECIFIED {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// delegate implements memberlist.Delegate and memberlist.EventDelegate.
// memberlist calls the event methods with its node lock held: they only
// touch the Gossip table under g.mu and never call memberlist.
type delegate struct {
	g *Gossip
}

func (d *delegate) NodeMeta(limit int) []byte {
	d.g.metaMu.Lock()
	defer d.g.metaMu.Unlock()
	if len(d.g.meta) > limit {
		// encodeMeta already enforced MaxMetaSize; a smaller limit would
		// be a memberlist change. Advertise nothing rather than panic.
		return nil
	}
	return d.g.meta
}

func (d *delegate) NotifyMsg(b []byte) {
	if len(b) < 2 || b[0] != msgLeaveIntent {
		return
	}
	name := string(b[1:])
	g := d.g
	if name == g.cfg.Name {
		return
	}
	now := time.Now()
	g.mu.Lock()
	if _, seen := g.intents[name]; seen {
		g.mu.Unlock()
		return
	}
	g.intents[name] = now
	if m, ok := g.members[name]; ok && m.State == StateDead && now.Sub(m.Since) < intentWindow {
		m.State = StateLeft
		g.emitLocked(Event{Type: EventUpdate, Member: *m})
	}
	g.mu.Unlock()
	// Relay once, so the intent reaches members the leaver did not gossip to.
	g.queue.QueueBroadcast(&intentBroadcast{msg: append([]byte(nil), b...)})
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) LocalState(bool) []byte        { return nil }
func (d *delegate) MergeRemoteState([]byte, bool) {}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	g := d.g
	meta, merr := decodeMeta(n.Meta)
	if merr != nil {
		g.log.Warn("member sent undecodable metadata", "member", n.Name, "err", merr)
	}
	m := &Member{
		Name:    n.Name,
		Addr:    n.Address(),
		State:   StateAlive,
		Meta:    meta,
		MetaErr: merr,
		Since:   time.Now(),
		Self:    n.Name == g.cfg.Name,
	}
	g.mu.Lock()
	delete(g.intents, n.Name)
	g.members[n.Name] = m
	g.emitLocked(Event{Type: EventJoin, Member: *m})
	g.mu.Unlock()
	if !m.Self {
		g.log.Log(context.Background(), g.memberLevel(meta), "member joined", "member", n.Name, "addr", m.Addr, "kind", meta.GetKind().String())
	}
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	g := d.g
	now := time.Now()
	g.mu.Lock()
	m, ok := g.members[n.Name]
	if !ok {
		meta, merr := decodeMeta(n.Meta)
		m = &Member{Name: n.Name, Addr: n.Address(), Meta: meta, MetaErr: merr, Self: n.Name == g.cfg.Name}
		g.members[n.Name] = m
	}
	m.State = StateDead
	if t, ok := g.intents[n.Name]; (ok && now.Sub(t) < intentWindow) || m.Self {
		m.State = StateLeft
	}
	m.Since = now
	ev := Event{Type: EventLeave, Member: *m}
	g.emitLocked(ev)
	g.mu.Unlock()
	g.log.Log(context.Background(), g.memberLevel(m.Meta), "member gone", "member", n.Name, "state", ev.Member.State.String())
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	g := d.g
	meta, merr := decodeMeta(n.Meta)
	if merr != nil {
		g.log.Warn("member sent undecodable metadata", "member", n.Name, "err", merr)
	}
	g.mu.Lock()
	m, ok := g.members[n.Name]
	if !ok {
		m = &Member{Name: n.Name, State: StateAlive, Since: time.Now(), Self: n.Name == g.cfg.Name}
		g.members[n.Name] = m
	}
	m.Addr = n.Address()
	m.Meta, m.MetaErr = meta, merr
	g.emitLocked(Event{Type: EventUpdate, Member: *m})
	g.mu.Unlock()
	g.log.Debug("member updated", "member", n.Name)
}
