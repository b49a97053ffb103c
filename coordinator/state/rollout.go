package state

import (
	"fmt"
	"sort"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Rollouts. The store keeps the latest rollout (hivev1.Rollout): the
// generation it delivers, its waves, and for every planned node the
// target it had before (from_generation). A node's *target* generation,
// the one it is rendered at, follows from it (TargetNumber):
//
//   - no rollout, a completed one, or one whose generation is no longer
//     current (a plain push or a rollback came after it): the current
//     generation — everyone at once, as before rollouts existed;
//   - running or paused: the rollout's generation for the nodes of opened
//     waves, from_generation for the others, base_generation for nodes
//     the plan does not name (they registered later);
//   - rolled back or aborted: the rollback appended a generation with the
//     base generation's content (revert_generation), current now, so the
//     rollout no longer governs: everyone targets it. Agents never take a
//     generation lower than the one they hold, so going back is going
//     forward to the old content, as `hivectl rollback` does. Only when
//     nothing was current before the rollout (base 0) do the planned nodes
//     target their from_generation (0: nothing) instead.
//
// Every transition is a command decided here identically on every
// replica; a command naming another rollout than the latest, or one that
// no longer governs, is refused with ReasonNotFound or ReasonStaleBase.

// rolloutState is the latest rollout and the index of its nodes by name.
type rolloutState struct {
	r   *hivev1.Rollout
	idx map[string]int
}

func (rs *rolloutState) set(r *hivev1.Rollout) {
	rs.r = r
	rs.idx = make(map[string]int, len(r.GetNodes()))
	for i, n := range r.GetNodes() {
		rs.idx[n.GetName()] = i
	}
}

// Reason for a rollout command that does not fit the rollout's state.
const ReasonRolloutState = "rollout_state"

// RolloutDone reports whether a rollout state is final.
func RolloutDone(st hivev1.RolloutState) bool {
	switch st {
	case hivev1.RolloutState_ROLLOUT_STATE_COMPLETED, hivev1.RolloutState_ROLLOUT_STATE_ROLLED_BACK, hivev1.RolloutState_ROLLOUT_STATE_ABORTED:
		return true
	}
	return false
}

// Rollout returns the latest rollout, or nil.
func (s *Store) Rollout() *hivev1.Rollout {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ro.r
}

// RolloutGoverns reports whether r still decides targets: it delivers the
// current generation and is not completed.
func (s *Store) rolloutGovernsLocked() bool {
	r := s.ro.r
	return r != nil && r.GetGeneration() == s.currentNumber() && r.GetState() != hivev1.RolloutState_ROLLOUT_STATE_COMPLETED
}

// TargetNumber returns the generation number node is rendered at (0:
// none).
func (s *Store) TargetNumber(node string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.targetLocked(node)
}

// TargetGeneration returns the generation node is rendered at, or nil
// (none yet). The renderer discovers it (render.Targeter).
func (s *Store) TargetGeneration(node string) *hivev1.Generation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := s.targetLocked(node)
	if n == 0 || n > s.currentNumber() {
		return nil
	}
	return s.gens[n-1]
}

func (s *Store) targetLocked(node string) uint64 {
	if m := s.maint[node]; m != nil {
		return m.GetGeneration()
	}
	if !s.rolloutGovernsLocked() {
		return s.currentNumber()
	}
	r := s.ro.r
	i, ok := s.ro.idx[node]
	if !ok {
		return r.GetBaseGeneration()
	}
	rn := r.GetNodes()[i]
	switch r.GetState() {
	case hivev1.RolloutState_ROLLOUT_STATE_RUNNING, hivev1.RolloutState_ROLLOUT_STATE_PAUSED:
		if rn.GetWave() < r.GetOpened() {
			return r.GetGeneration()
		}
	}
	return rn.GetFromGeneration()
}

// StartRollout appends the command's generation exactly as Push does and,
// if it was appended, installs its rollout with the first wave open, in
// the same step: no reader sees the generation without its plan. Each
// planned node's from_generation is its target just before. A plan naming
// a node twice, or with an empty wave, is ReasonInvalid.
func (s *Store) StartRollout(t time.Time, c *hivev1.RolloutPushCommand) *hivev1.CommandResult {
	p := c.GetPush()
	g := p.GetGeneration()
	if g == nil || g.GetSite() == nil {
		return reject(ReasonInvalid, "push without a site")
	}
	if g.GetSha256() == "" {
		return reject(ReasonInvalid, "push without sha256")
	}
	if len(c.GetWaves()) == 0 {
		return reject(ReasonInvalid, "rollout without waves")
	}
	seen := map[string]bool{}
	for i, w := range c.GetWaves() {
		if len(w.GetNodes()) == 0 {
			return reject(ReasonInvalid, "rollout wave %d has no nodes", i)
		}
		for _, n := range w.GetNodes() {
			if n == "" || seen[n] {
				return reject(ReasonInvalid, "rollout plan names node %q twice (or empty)", n)
			}
			seen[n] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.currentNumber()
	var nodes []*hivev1.RolloutNode
	for i, w := range c.GetWaves() {
		for _, n := range w.GetNodes() {
			nodes = append(nodes, &hivev1.RolloutNode{Name: n, Wave: uint32(i), FromGeneration: s.targetLocked(n)})
		}
	}
	res := s.pushLocked(t, p)
	if res.GetError() != "" || res.GetUnchanged() {
		return res
	}
	sortRolloutNodes(nodes)
	waves := make([]*hivev1.RolloutWave, len(c.GetWaves()))
	for i, w := range c.GetWaves() {
		waves[i] = proto.Clone(w).(*hivev1.RolloutWave)
		waves[i].Opened = nil
	}
	waves[0].Opened = timestamppb.New(t)
	s.ro.set(&hivev1.Rollout{
		Generation: res.GetGeneration(), BaseGeneration: base, Policy: c.GetPolicy(),
		Waves: waves, Nodes: nodes, State: hivev1.RolloutState_ROLLOUT_STATE_RUNNING, Opened: 1,
		Started: timestamppb.New(t), Updated: timestamppb.New(t), Author: g.GetAuthor(),
	})
	return res
}

func sortRolloutNodes(nodes []*hivev1.RolloutNode) {
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].GetName() < nodes[j].GetName() })
}

// rolloutFor returns a clone of the latest rollout if it is the rollout of
// generation gen (0: the latest) and still delivers the current
// generation; else a rejection. Callers hold mu.
func (s *Store) rolloutForLocked(gen uint64) (*hivev1.Rollout, *hivev1.CommandResult) {
	r := s.ro.r
	switch {
	case r == nil:
		return nil, reject(ReasonNotFound, "there is no rollout")
	case gen != 0 && gen != r.GetGeneration():
		return nil, reject(ReasonNotFound, "there is no rollout of generation %d (the latest rollout is of generation %d)", gen, r.GetGeneration())
	case r.GetGeneration() != s.currentNumber():
		return nil, reject(ReasonStaleBase, "the rollout of generation %d was superseded by generation %d", r.GetGeneration(), s.currentNumber())
	}
	return proto.Clone(r).(*hivev1.Rollout), nil
}

func stateName(st hivev1.RolloutState) string {
	switch st {
	case hivev1.RolloutState_ROLLOUT_STATE_RUNNING:
		return "running"
	case hivev1.RolloutState_ROLLOUT_STATE_PAUSED:
		return "paused"
	case hivev1.RolloutState_ROLLOUT_STATE_COMPLETED:
		return "completed"
	case hivev1.RolloutState_ROLLOUT_STATE_ROLLED_BACK:
		return "rolled back"
	case hivev1.RolloutState_ROLLOUT_STATE_ABORTED:
		return "aborted"
	}
	return "unknown"
}

// OpenWave opens the command's wave. Waves open in order: opening an open
// wave changes nothing, skipping one is ReasonInvalid. Only a running
// rollout opens waves, except that a promote also opens one of a paused
// rollout (and resumes it).
func (s *Store) OpenWave(t time.Time, c *hivev1.RolloutWaveCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, rej := s.rolloutForLocked(c.GetGeneration())
	if rej != nil {
		return rej
	}
	switch {
	case c.GetWave() < r.GetOpened():
		return &hivev1.CommandResult{Unchanged: true, Generation: r.GetGeneration()}
	case c.GetWave() >= uint32(len(r.GetWaves())):
		return reject(ReasonInvalid, "the rollout of generation %d has %d waves; there is no wave %d", r.GetGeneration(), len(r.GetWaves()), c.GetWave()+1)
	case c.GetWave() != r.GetOpened():
		return reject(ReasonInvalid, "waves open in order: wave %d is next, not %d", r.GetOpened()+1, c.GetWave()+1)
	}
	switch st := r.GetState(); {
	case st == hivev1.RolloutState_ROLLOUT_STATE_RUNNING:
	case st == hivev1.RolloutState_ROLLOUT_STATE_PAUSED && c.GetPromote():
		r.State = hivev1.RolloutState_ROLLOUT_STATE_RUNNING
		r.Reason = ""
	default:
		return reject(ReasonRolloutState, "the rollout of generation %d is %s", r.GetGeneration(), stateName(st))
	}
	r.Waves[c.GetWave()].Opened = timestamppb.New(t)
	r.Opened = c.GetWave() + 1
	r.WaveHealthySince = nil
	r.Updated = timestamppb.New(t)
	if c.GetPromote() {
		r.ChangedBy = c.GetAuthor()
	}
	s.ro.set(r)
	return &hivev1.CommandResult{Generation: r.GetGeneration()}
}

// PauseRollout pauses a running rollout (a paused one is unchanged).
func (s *Store) PauseRollout(t time.Time, c *hivev1.RolloutPauseCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, rej := s.rolloutForLocked(c.GetGeneration())
	if rej != nil {
		return rej
	}
	switch r.GetState() {
	case hivev1.RolloutState_ROLLOUT_STATE_PAUSED:
		return &hivev1.CommandResult{Unchanged: true, Generation: r.GetGeneration()}
	case hivev1.RolloutState_ROLLOUT_STATE_RUNNING:
	default:
		return reject(ReasonRolloutState, "the rollout of generation %d is %s", r.GetGeneration(), stateName(r.GetState()))
	}
	r.State = hivev1.RolloutState_ROLLOUT_STATE_PAUSED
	r.Reason = c.GetReason()
	r.WaveHealthySince = nil
	r.ChangedBy = c.GetAuthor()
	r.Updated = timestamppb.New(t)
	s.ro.set(r)
	return &hivev1.CommandResult{Generation: r.GetGeneration()}
}

// ResumeRollout resumes a paused rollout (a running one is unchanged).
func (s *Store) ResumeRollout(t time.Time, c *hivev1.RolloutResumeCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, rej := s.rolloutForLocked(c.GetGeneration())
	if rej != nil {
		return rej
	}
	switch r.GetState() {
	case hivev1.RolloutState_ROLLOUT_STATE_RUNNING:
		return &hivev1.CommandResult{Unchanged: true, Generation: r.GetGeneration()}
	case hivev1.RolloutState_ROLLOUT_STATE_PAUSED:
	default:
		return reject(ReasonRolloutState, "the rollout of generation %d is %s", r.GetGeneration(), stateName(r.GetState()))
	}
	r.State = hivev1.RolloutState_ROLLOUT_STATE_RUNNING
	r.Reason = ""
	r.WaveHealthySince = nil
	r.ChangedBy = c.GetAuthor()
	r.Updated = timestamppb.New(t)
	s.ro.set(r)
	return &hivev1.CommandResult{Generation: r.GetGeneration()}
}

// RollbackRollout puts the content from before the rollout back: the
// failure policy's rollback (ROLLED_BACK) or an operator's abort
// (ABORTED). It appends a generation with the base generation's content
// (the rollout's revert_generation; the result's generation), which every
// node targets from then on. A running, paused or completed rollout may be
// aborted; a failure rolls back only a running or paused one.
func (s *Store) RollbackRollout(t time.Time, c *hivev1.RolloutRollbackCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, rej := s.rolloutForLocked(c.GetGeneration())
	if rej != nil {
		return rej
	}
	want := hivev1.RolloutState_ROLLOUT_STATE_ROLLED_BACK
	if c.GetAbort() {
		want = hivev1.RolloutState_ROLLOUT_STATE_ABORTED
	}
	switch st := r.GetState(); {
	case st == want:
		return &hivev1.CommandResult{Unchanged: true, Generation: r.GetGeneration()}
	case st == hivev1.RolloutState_ROLLOUT_STATE_RUNNING, st == hivev1.RolloutState_ROLLOUT_STATE_PAUSED:
	case st == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED && c.GetAbort():
	default:
		return reject(ReasonRolloutState, "the rollout of generation %d is %s", r.GetGeneration(), stateName(st))
	}
	r.State = want
	r.Reason = c.GetReason()
	r.WaveHealthySince = nil
	r.ChangedBy = c.GetAuthor()
	r.Updated = timestamppb.New(t)
	if base := r.GetBaseGeneration(); base > 0 {
		verb := "rolled back"
		if c.GetAbort() {
			verb = "aborted"
		}
		r.RevertGeneration = s.appendRevertLocked(t, s.gens[base-1], c.GetAuthor(),
			fmt.Sprintf("rollout of generation %d %s: %s", r.GetGeneration(), verb, c.GetReason()))
	}
	s.ro.set(r)
	return &hivev1.CommandResult{Generation: max(r.GetRevertGeneration(), r.GetGeneration())}
}

// appendRevertLocked appends a generation with target's content (as
// Rollback does) and returns its number. Callers hold mu.
func (s *Store) appendRevertLocked(t time.Time, target *hivev1.Generation, author, msg string) uint64 {
	ng := &hivev1.Generation{
		Number: s.currentNumber() + 1, Parent: s.currentNumber(), Sha256: target.GetSha256(),
		Author: author, Message: msg, Time: timestamppb.New(t), Site: target.GetSite(),
		RollbackOf: target.GetNumber(), SourceName: target.GetSourceName(), Source: target.GetSource(),
	}
	s.gens = append(s.gens, ng)
	return ng.Number
}

// CompleteRollout marks a running rollout whose waves are all open
// completed: every node targets the current generation.
func (s *Store) CompleteRollout(t time.Time, c *hivev1.RolloutCompleteCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, rej := s.rolloutForLocked(c.GetGeneration())
	if rej != nil {
		return rej
	}
	switch {
	case r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_COMPLETED:
		return &hivev1.CommandResult{Unchanged: true, Generation: r.GetGeneration()}
	case r.GetState() != hivev1.RolloutState_ROLLOUT_STATE_RUNNING:
		return reject(ReasonRolloutState, "the rollout of generation %d is %s", r.GetGeneration(), stateName(r.GetState()))
	case r.GetOpened() != uint32(len(r.GetWaves())):
		return reject(ReasonRolloutState, "the rollout of generation %d has %d of %d waves open", r.GetGeneration(), r.GetOpened(), len(r.GetWaves()))
	}
	r.State = hivev1.RolloutState_ROLLOUT_STATE_COMPLETED
	r.Reason = ""
	r.WaveHealthySince = nil
	r.Updated = timestamppb.New(t)
	s.ro.set(r)
	return &hivev1.CommandResult{Generation: r.GetGeneration()}
}

// MarkWaveHealthy records since when the open wave of a running rollout
// has been healthy, or clears it (since unset): the leader's gate, so that
// a new leader carries the wave's min_healthy_time on instead of starting
// it afresh. A since later than the command's time t is taken as t (the
// wave cannot have been healthy in the future). A wave other than the
// open one, or a rollout that is not running, is ReasonRolloutState (the
// gate looked at a rollout that moved on meanwhile); recording what is
// already recorded is unchanged. It changes no target, so no watch wakes.
func (s *Store) MarkWaveHealthy(t time.Time, c *hivev1.RolloutHealthyCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, rej := s.rolloutForLocked(c.GetGeneration())
	if rej != nil {
		return rej
	}
	if st := r.GetState(); st != hivev1.RolloutState_ROLLOUT_STATE_RUNNING {
		return reject(ReasonRolloutState, "the rollout of generation %d is %s", r.GetGeneration(), stateName(st))
	}
	if c.GetWave()+1 != r.GetOpened() {
		return reject(ReasonRolloutState, "wave %d of the rollout of generation %d is not the open wave (wave %d is)", c.GetWave()+1, r.GetGeneration(), r.GetOpened())
	}
	var since *timestamppb.Timestamp
	if c.GetSince() != nil {
		if err := c.GetSince().CheckValid(); err != nil {
			return reject(ReasonInvalid, "since: %v", err)
		}
		since = timestamppb.New(c.GetSince().AsTime())
		if since.AsTime().After(t) {
			since = timestamppb.New(t)
		}
	}
	old := r.GetWaveHealthySince()
	if (old == nil && since == nil) || (old != nil && since != nil && old.AsTime().Equal(since.AsTime())) {
		return &hivev1.CommandResult{Unchanged: true, Generation: r.GetGeneration()}
	}
	r.WaveHealthySince = since
	s.ro.set(r)
	return &hivev1.CommandResult{Generation: r.GetGeneration()}
}

// restoreRollout installs a rollout read from a snapshot.
func (s *Store) restoreRollout(r *hivev1.Rollout) error {
	if r == nil {
		return nil
	}
	if r.GetGeneration() == 0 || r.GetGeneration() > s.currentNumber() {
		return fmt.Errorf("%w: rollout of generation %d, which does not exist", ErrSnapshotFormat, r.GetGeneration())
	}
	for _, n := range r.GetNodes() {
		if n.GetName() == "" || n.GetWave() >= uint32(len(r.GetWaves())) {
			return fmt.Errorf("%w: rollout node %q in wave %d of %d", ErrSnapshotFormat, n.GetName(), n.GetWave(), len(r.GetWaves()))
		}
	}
	s.ro.set(r)
	return nil
}
