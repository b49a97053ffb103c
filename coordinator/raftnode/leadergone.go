package raftnode

import (
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// LeaderGone is told that a raft connection from a peer closed (the
// transport calls it; it never blocks). When this server follows a leader
// whose raft port now refuses connections (Config.LeaderRefuses: the
// leader's process is gone, its host answered for it), waiting for the
// heartbeat timeout (1–3 s) only delays the election: the surviving voter
// with the lowest id starts one at once (Config.Campaign, raft's TimeoutNow to itself, as in
// a leadership transfer: its vote requests are granted by followers that
// still believe in the dead leader; the log checks apply as always). The
// next survivor starts one a campaignTurn later if no leader was elected
// and no election started by then (else two turns later: the first one's
// log may have been behind its own), and so on. A leader whose host
// vanished without a word (no refusal) is replaced by the heartbeat
// timeout alone. Timing only: raft's safety is untouched. (Not waited
// for: a heartbeat after the refusal. A follower whose own connections to
// a live leader's raft port are rejected by a firewall would start an
// election whenever a connection from the leader closes; such a follower
// cannot take part in elections anyway. Waiting 250 ms for heartbeats was
// tried: stale appends processed late under load passed for heartbeats
// and sent kills back to the 1–3 s timeout.)
func (n *Node) LeaderGone() {
	if n.cfg.LeaderRefuses == nil || n.cfg.Campaign == nil || n.raft.State() != raft.Follower {
		return
	}
	if !n.probing.CompareAndSwap(false, true) {
		n.log.Debug("a raft peer closed its connection: a probe runs already")
		return
	}
	go func() {
		defer n.probing.Store(false)
		term := n.raft.CurrentTerm()
		addr, id := n.raft.LeaderWithID()
		if id == "" || string(id) == n.cfg.LocalID {
			return
		}
		refused := n.cfg.LeaderRefuses(string(addr))
		n.log.Debug("a raft peer closed its connection: probed the leader", "leader", id, "refused", refused)
		if !refused {
			return
		}
		f := n.raft.GetConfiguration()
		if f.Error() != nil {
			return
		}
		var voters []string
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter && s.ID != id {
				voters = append(voters, string(s.ID))
			}
		}
		slices.Sort(voters)
		rank := slices.Index(voters, n.cfg.LocalID)
		if rank < 0 {
			return
		}
		if rank > 0 {
			// Give the survivors before this one their turn: wait until
			// a leader is elected or rank turns have passed; if an
			// election started meanwhile (the term moved), give it two
			// more turns before disturbing it.
			n.log.Info("raft leader's port refuses connections; waiting for an election", "leader", id, "turn", rank)
			if n.waitLeaderFor(time.Duration(rank)*campaignTurn, string(id)) {
				return
			}
			if n.raft.CurrentTerm() != term && n.waitLeaderFor(2*campaignTurn, string(id)) {
				return
			}
		}
		// Still following that leader, or nobody (no leader elected
		// meanwhile)?
		if now := n.Leader(); (now != "" && now != string(id)) || n.raft.State() != raft.Follower {
			return
		}
		n.log.Warn("raft leader's port refuses connections: starting an election now", "leader", id)
		n.campaigns.Add(1)
		if err := n.cfg.Campaign(); err != nil {
			n.log.Warn("start an election", "err", err)
		}
	}()
}

// campaignTurn is how long a survivor waits for the one before it to be
// elected (an election on loopback or a LAN takes a few milliseconds: one
// vote round and a write of the vote; a loaded host's fsync can take a
// hundred).
const campaignTurn = 300 * time.Millisecond

// waitLeaderFor waits up to d for a leader other than dead; it reports
// whether one was elected (or the node is stopping).
func (n *Node) waitLeaderFor(d time.Duration, dead string) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		ch := n.Changed()
		if l := n.Leader(); l != "" && l != dead {
			return true
		}
		select {
		case <-n.stop:
			return true
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}
