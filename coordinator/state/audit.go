package state

import (
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// MaxAuditEntries bounds the audit log: the newest entries are kept.
const MaxAuditEntries = 10000

// auditLog is a bounded ring of audit entries, oldest first from start.
type auditLog struct {
	entries []*hivev1.AuditEntry // len <= MaxAuditEntries
	start   int                  // index of the oldest entry once full
}

func (a *auditLog) add(e *hivev1.AuditEntry) {
	if len(a.entries) < MaxAuditEntries {
		a.entries = append(a.entries, e)
		return
	}
	a.entries[a.start] = e
	a.start = (a.start + 1) % MaxAuditEntries
}

// list returns the entries oldest first (a new slice sharing the
// immutable entries).
func (a *auditLog) list() []*hivev1.AuditEntry {
	out := make([]*hivev1.AuditEntry, 0, len(a.entries))
	out = append(out, a.entries[a.start:]...)
	return append(out, a.entries[:a.start]...)
}

// AppendAudit records the audit information of the command applied at
// the store's current index with time t, body name command and result
// res. It is called by the FSM for every command that carries audit
// information, after the command applied.
func (s *Store) AppendAudit(t time.Time, command string, info *hivev1.AuditInfo, res *hivev1.CommandResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.audit.add(&hivev1.AuditEntry{
		Index: s.index, Time: timestamppb.New(t), Identity: info.GetIdentity(), Rpc: info.GetRpc(),
		Command: command, Summary: info.GetSummary(), Error: res.GetError(), Reason: res.GetReason(),
	})
}

// Audit returns the audit entries at or after since (zero: all), oldest
// first, at most limit of the newest (0: no limit).
func (s *Store) Audit(since time.Time, limit int) []*hivev1.AuditEntry {
	s.mu.RLock()
	all := s.audit.list()
	s.mu.RUnlock()
	if !since.IsZero() {
		i := 0
		for i < len(all) && all[i].GetTime().AsTime().Before(since) {
			i++
		}
		all = all[i:]
	}
	if limit > 0 && len(all) > limit {
		all = all[len(all)-limit:]
	}
	return all
}

// restoreAudit loads a snapshot's audit entries, keeping the newest
// MaxAuditEntries.
func (s *Store) restoreAudit(entries []*hivev1.AuditEntry) {
	if len(entries) > MaxAuditEntries {
		entries = entries[len(entries)-MaxAuditEntries:]
	}
	s.audit = auditLog{entries: append([]*hivev1.AuditEntry(nil), entries...)}
}
