package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// Snapshot format: the 8-byte magic "HIVESNAP", a big-endian uint32
// format version, a big-endian uint64 raft index, then the deterministic
// protobuf encoding of hivev1.StateSnapshot.
const (
	snapshotMagic = "HIVESNAP"
	// SnapshotVersion is the format written by WriteSnapshot. ReadSnapshot
	// accepts every version up to it.
	SnapshotVersion uint32 = 1
	// MaxSnapshotBytes bounds what ReadSnapshot accepts (1 GiB).
	MaxSnapshotBytes = 1 << 30
)

// ErrSnapshotFormat is returned by ReadSnapshot for input that is not a
// snapshot of a known version or whose content is inconsistent.
var ErrSnapshotFormat = errors.New("invalid state snapshot")

// Capture returns the store's content as a snapshot message. It is fast
// (copies pointers under the read lock) and the result shares the store's
// immutable messages, so it can be encoded later while applies go on.
func (s *Store) Capture() (*hivev1.StateSnapshot, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := &hivev1.StateSnapshot{Version: SnapshotVersion, NextNodeOrdinal: s.nextOrdinal}
	snap.Generations = append([]*hivev1.Generation(nil), s.gens...)
	for _, n := range s.nodes {
		snap.Nodes = append(snap.Nodes, n)
	}
	for _, r := range s.reports {
		snap.Reports = append(snap.Reports, r)
	}
	for _, v := range s.secrets {
		snap.Secrets = append(snap.Secrets, v)
	}
	for _, v := range s.tokens {
		snap.BootstrapTokens = append(snap.BootstrapTokens, v)
	}
	for _, v := range s.coordinators {
		snap.Coordinators = append(snap.Coordinators, v)
	}
	sort.Slice(snap.Nodes, func(i, j int) bool { return snap.Nodes[i].Name < snap.Nodes[j].Name })
	sort.Slice(snap.Reports, func(i, j int) bool { return snap.Reports[i].Node < snap.Reports[j].Node })
	sort.Slice(snap.Secrets, func(i, j int) bool { return snap.Secrets[i].Name < snap.Secrets[j].Name })
	sort.Slice(snap.BootstrapTokens, func(i, j int) bool {
		return snap.BootstrapTokens[i].TokenSha256 < snap.BootstrapTokens[j].TokenSha256
	})
	sort.Slice(snap.Coordinators, func(i, j int) bool { return snap.Coordinators[i].Name < snap.Coordinators[j].Name })
	snap.Revocations = s.revocationsLocked()
	snap.Rollout = s.ro.r
	snap.Audit = s.audit.list()
	s.captureChecksLocked(snap)
	s.captureVolumesLocked(snap)
	s.captureMaintenanceLocked(snap)
	return snap, s.index
}

// WriteSnapshot writes snap, taken at raft index, to w.
func WriteSnapshot(w io.Writer, snap *hivev1.StateSnapshot, index uint64) error {
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode state snapshot: %w", err)
	}
	var hdr [20]byte
	copy(hdr[:8], snapshotMagic)
	binary.BigEndian.PutUint32(hdr[8:12], SnapshotVersion)
	binary.BigEndian.PutUint64(hdr[12:20], index)
	if _, err := w.Write(hdr[:]); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("write snapshot body: %w", err)
	}
	return nil
}

// ReadSnapshot builds a new store from a snapshot written by WriteSnapshot.
// Errors wrap ErrSnapshotFormat when the input is not a valid snapshot.
func ReadSnapshot(r io.Reader) (*Store, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSnapshotBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	if len(data) > MaxSnapshotBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrSnapshotFormat, MaxSnapshotBytes)
	}
	if len(data) < 20 || !bytes.Equal(data[:8], []byte(snapshotMagic)) {
		return nil, fmt.Errorf("%w: missing header", ErrSnapshotFormat)
	}
	version := binary.BigEndian.Uint32(data[8:12])
	if version == 0 || version > SnapshotVersion {
		return nil, fmt.Errorf("%w: format version %d, this server reads up to %d", ErrSnapshotFormat, version, SnapshotVersion)
	}
	index := binary.BigEndian.Uint64(data[12:20])
	var snap hivev1.StateSnapshot
	if err := proto.Unmarshal(data[20:], &snap); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotFormat, err)
	}
	s := New()
	s.index = index
	for i, g := range snap.GetGenerations() {
		if g.GetNumber() != uint64(i+1) {
			return nil, fmt.Errorf("%w: generation at position %d has number %d", ErrSnapshotFormat, i+1, g.GetNumber())
		}
		if g.GetSite() == nil {
			return nil, fmt.Errorf("%w: generation %d has no site", ErrSnapshotFormat, g.GetNumber())
		}
		s.gens = append(s.gens, g)
	}
	if err := s.restoreRollout(snap.GetRollout()); err != nil {
		return nil, err
	}
	for _, n := range snap.GetNodes() {
		if n.GetName() == "" {
			return nil, fmt.Errorf("%w: node without a name", ErrSnapshotFormat)
		}
		s.nodes[n.GetName()] = n
		s.nextOrdinal = max(s.nextOrdinal, n.GetOrdinal()+1)
	}
	s.nextOrdinal = max(s.nextOrdinal, snap.GetNextNodeOrdinal())
	for _, r := range snap.GetReports() {
		if r.GetNode() == "" {
			return nil, fmt.Errorf("%w: report without a node", ErrSnapshotFormat)
		}
		s.reports[r.GetNode()] = packReport(r)
	}
	for _, v := range snap.GetSecrets() {
		if v.GetName() == "" {
			return nil, fmt.Errorf("%w: secret without a name", ErrSnapshotFormat)
		}
		s.secrets[v.GetName()] = v
	}
	for _, v := range snap.GetBootstrapTokens() {
		if v.GetTokenSha256() == "" {
			return nil, fmt.Errorf("%w: bootstrap token without a hash", ErrSnapshotFormat)
		}
		s.tokens[v.GetTokenSha256()] = v
	}
	for _, v := range snap.GetCoordinators() {
		if v.GetName() == "" {
			return nil, fmt.Errorf("%w: coordinator without a name", ErrSnapshotFormat)
		}
		s.coordinators[v.GetName()] = v
	}
	for _, v := range snap.GetRevocations() {
		if err := pki.ValidateName(v.GetNode()); err != nil {
			return nil, fmt.Errorf("%w: revocation: %v", ErrSnapshotFormat, err)
		}
		s.revocations[v.GetNode()] = v
	}
	s.restoreAudit(snap.GetAudit())
	if err := s.restoreChecks(&snap); err != nil {
		return nil, err
	}
	if err := s.restoreVolumes(&snap); err != nil {
		return nil, err
	}
	if err := s.restoreMaintenance(&snap); err != nil {
		return nil, err
	}
	// Versions restart from a value different from any a watcher may have
	// seen before, so everything is re-rendered once.
	s.registryVersion = index + 1
	s.secretsVersion = index + 1
	return s, nil
}
