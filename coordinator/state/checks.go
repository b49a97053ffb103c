package state

import (
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// MaxDriftRepairs is how many drift repairs the store keeps per node (the
// latest).
const MaxDriftRepairs = 100

// maxDriftMessage bounds the message kept with a drift repair.
const maxDriftMessage = 256

// TriggerHealth is Report.trigger of a report an agent sends because its
// health changed: a copy of its last run's report, whose drift repairs
// are recorded already.
const TriggerHealth = "health"

// noteReportLocked updates the node's health record for a report just
// stored: health_since moves to t when the health changed, and the
// report's drift repairs are appended. Records are replaced, never
// modified (Capture shares them). Callers hold mu.
func (s *Store) noteReportLocked(t time.Time, r *hivev1.Report) {
	node := r.GetNode()
	old := s.checkRecs[node]
	var repairs []*hivev1.DriftRepair
	if r.GetTrigger() != TriggerHealth && !r.GetDryRun() {
		for _, x := range ResultsWhere(r, DriftRepaired) {
			msg := x.GetMessage()
			if len(msg) > maxDriftMessage {
				msg = msg[:maxDriftMessage]
			}
			repairs = append(repairs, &hivev1.DriftRepair{
				Node: node, Key: x.GetKey(), Generation: r.GetGeneration(), Time: r.GetFinished(), Message: msg,
			})
		}
	}
	if old.GetHealth() == r.GetHealth() && len(repairs) == 0 && (old != nil || r.GetHealth() == hivev1.Health_HEALTH_UNSPECIFIED) {
		return
	}
	rec := &hivev1.CheckNodeRecord{Node: node, Health: r.GetHealth(), HealthSince: old.GetHealthSince()}
	if old == nil || old.GetHealth() != r.GetHealth() {
		rec.HealthSince = timestamppb.New(t)
	}
	all := append(append([]*hivev1.DriftRepair(nil), old.GetDriftRepairs()...), repairs...)
	if len(all) > MaxDriftRepairs {
		all = all[len(all)-MaxDriftRepairs:]
	}
	rec.DriftRepairs = all
	if s.checkRecs == nil {
		s.checkRecs = map[string]*hivev1.CheckNodeRecord{}
	}
	s.checkRecs[node] = rec
}

// CheckRecord returns a node's health record, or nil. The record must not
// be modified.
func (s *Store) CheckRecord(node string) *hivev1.CheckNodeRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.checkRecs[node]
}

// DriftRepairs returns the drift repairs of node (every node when empty)
// at or after since (zero: all kept), newest first.
func (s *Store) DriftRepairs(node string, since time.Time) []*hivev1.DriftRepair {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*hivev1.DriftRepair
	for name, rec := range s.checkRecs {
		if node != "" && name != node {
			continue
		}
		for _, d := range rec.GetDriftRepairs() {
			if !since.IsZero() && d.GetTime().AsTime().Before(since) {
				continue
			}
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := out[i].GetTime().AsTime(), out[j].GetTime().AsTime()
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		if out[i].GetNode() != out[j].GetNode() {
			return out[i].GetNode() < out[j].GetNode()
		}
		return out[i].GetKey() < out[j].GetKey()
	})
	return out
}

// captureChecksLocked adds the health records to a snapshot, by node.
func (s *Store) captureChecksLocked(snap *hivev1.StateSnapshot) {
	for _, rec := range s.checkRecs {
		snap.CheckRecords = append(snap.CheckRecords, rec)
	}
	sort.Slice(snap.CheckRecords, func(i, j int) bool { return snap.CheckRecords[i].Node < snap.CheckRecords[j].Node })
}

// restoreChecks loads the health records of a snapshot.
func (s *Store) restoreChecks(snap *hivev1.StateSnapshot) error {
	for _, rec := range snap.GetCheckRecords() {
		if rec.GetNode() == "" {
			return errNoNode
		}
		if s.checkRecs == nil {
			s.checkRecs = map[string]*hivev1.CheckNodeRecord{}
		}
		s.checkRecs[rec.GetNode()] = rec
	}
	return nil
}

var errNoNode = fmt.Errorf("%w: health record without a node", ErrSnapshotFormat)
