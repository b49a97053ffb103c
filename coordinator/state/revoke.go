package state

import (
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The deny list. Each revoked node (agent identity) has one
// hivev1.Revocation: a cut-off time (every certificate of agent:<node>
// whose NotBefore is not after it is denied, which covers certificates the
// coordinators never saw, such as those made offline by `hivectl tls cert
// create`) and a set of denied serials. Entries only ever grow: the
// cut-off moves forward, serials are added; nothing un-revokes. A node
// is admitted again only with a certificate issued after its cut-off.

// MaxRevokedSerials bounds the serials of one node's entry.
const MaxRevokedSerials = 1000

// NormalizeSerial turns a certificate serial written in hex (upper or
// lower case, with or without colons or a 0x prefix, as openssl and
// `hivectl tls cert show` print it) into the form the deny list keeps:
// lowercase hex without leading zeros.
func NormalizeSerial(s string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X"))
	h = strings.ReplaceAll(h, ":", "")
	if h == "" || len(h) > 64 {
		return "", fmt.Errorf("serial %q: want 1 to 64 hex digits", s)
	}
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || n.Sign() <= 0 {
		return "", fmt.Errorf("serial %q: not a positive hexadecimal number", s)
	}
	return n.Text(16), nil
}

// SerialText is the deny-list form of a certificate serial number.
func SerialText(n *big.Int) string { return n.Text(16) }

// Revoke adds to node's deny list entry: with c.Cutoff, every certificate
// of the node with NotBefore not after t; and c.Serials. A revocation
// that adds nothing (the cut-off is already later, the serials already
// listed) reports unchanged.
func (s *Store) Revoke(t time.Time, c *hivev1.NodeRevokeCommand) *hivev1.CommandResult {
	if err := pki.ValidateName(c.GetNode()); err != nil {
		return reject(ReasonInvalid, "revoke: node: %v", err)
	}
	if !c.GetCutoff() && len(c.GetSerials()) == 0 {
		return reject(ReasonInvalid, "revoke %s: neither a cut-off nor serials", c.GetNode())
	}
	for _, sn := range c.GetSerials() {
		if n, err := NormalizeSerial(sn); err != nil || n != sn {
			return reject(ReasonInvalid, "revoke %s: serial %q is not in normal form (lowercase hex, no leading zeros)", c.GetNode(), sn)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.revocations[c.GetNode()]
	r := s.revokeLocked(t, old, c.GetNode(), c.GetCutoff(), c.GetSerials(), c.GetAuthor(), c.GetReason())
	if len(r.GetSerials()) > MaxRevokedSerials {
		return reject(ReasonInvalid, "revoke %s: %d serials; at most %d per node (revoke the node with a cut-off instead)", c.GetNode(), len(r.GetSerials()), MaxRevokedSerials)
	}
	if old != nil && old.GetCutoff().AsTime().Equal(r.GetCutoff().AsTime()) && (old.GetCutoff() == nil) == (r.GetCutoff() == nil) &&
		slices.Equal(old.GetSerials(), r.GetSerials()) {
		return &hivev1.CommandResult{Unchanged: true}
	}
	s.revocations[c.GetNode()] = r
	return &hivev1.CommandResult{}
}

// revokeLocked returns old (may be nil) extended with a cut-off at t and
// serials. Callers hold mu.
func (s *Store) revokeLocked(t time.Time, old *hivev1.Revocation, node string, cutoff bool, serials []string, author, reason string) *hivev1.Revocation {
	r := &hivev1.Revocation{Node: node}
	if old != nil {
		r = proto.Clone(old).(*hivev1.Revocation)
	}
	if cutoff && (r.GetCutoff() == nil || t.After(r.GetCutoff().AsTime())) {
		r.Cutoff = timestamppb.New(t)
	}
	for _, sn := range serials {
		if !slices.Contains(r.Serials, sn) {
			r.Serials = append(r.Serials, sn)
		}
	}
	sort.Strings(r.Serials)
	r.Author, r.Reason, r.Updated = author, reason, timestamppb.New(t)
	return r
}

// RemoveNode forgets a node: its registry record, its last report and
// the secrets it published ("<node>/<name>"), and revokes it with a
// cut-off at t (so it cannot register again with the certificate it had).
// A node neither in the registry, nor reporting, nor revoked is refused
// with ReasonNotFound. The result's generation field holds how many
// published secrets were deleted.
func (s *Store) RemoveNode(t time.Time, c *hivev1.NodeRemoveCommand) *hivev1.CommandResult {
	node := c.GetNode()
	if err := pki.ValidateName(node); err != nil {
		return reject(ReasonInvalid, "remove: node: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, inRegistry := s.nodes[node]
	_, reported := s.reports[node]
	old, revoked := s.revocations[node]
	if !inRegistry && !reported && !revoked {
		return reject(ReasonNotFound, "node %q is not known (not in the registry, no report, not revoked)", node)
	}
	r := s.revokeLocked(t, old, node, true, nil, c.GetAuthor(), c.GetReason())
	r.Removed = true
	s.revocations[node] = r
	if inRegistry {
		delete(s.nodes, node)
		s.registryVersion++
	}
	delete(s.reports, node)
	delete(s.checkRecs, node)
	deleted := 0
	for name := range s.secrets {
		if strings.HasPrefix(name, node+"/") {
			delete(s.secrets, name)
			deleted++
		}
	}
	if deleted > 0 {
		s.secretsVersion++
	}
	return &hivev1.CommandResult{Generation: uint64(deleted)}
}

// removedLocked reports whether node was removed and has not registered
// since (its late reports are dropped). Callers hold mu.
func (s *Store) removedLocked(node string) bool {
	r, ok := s.revocations[node]
	if !ok || !r.GetRemoved() {
		return false
	}
	_, registered := s.nodes[node]
	return !registered
}

// Revocation returns node's deny list entry, or nil.
func (s *Store) Revocation(node string) *hivev1.Revocation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revocations[node]
}

// Revocations returns the deny list sorted by node.
func (s *Store) Revocations() []*hivev1.Revocation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revocationsLocked()
}

func (s *Store) revocationsLocked() []*hivev1.Revocation {
	out := make([]*hivev1.Revocation, 0, len(s.revocations))
	for _, v := range s.revocations {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Denied reports whether the certificate of agent:node with notBefore and
// serial (SerialText form) is on the deny list, and why: "revoked at
// <cut-off> (...)" or "revoked at <time> (serial <s> on the deny list)".
func (s *Store) Denied(node string, notBefore time.Time, serial string) (string, bool) {
	s.mu.RLock()
	r := s.revocations[node]
	s.mu.RUnlock()
	return DeniedBy(r, notBefore, serial)
}

// DeniedBy is Denied against one entry (nil: not denied).
func DeniedBy(r *hivev1.Revocation, notBefore time.Time, serial string) (string, bool) {
	if r == nil {
		return "", false
	}
	if c := r.GetCutoff(); c != nil && !notBefore.After(c.AsTime()) {
		return "revoked at " + c.AsTime().UTC().Format(time.RFC3339) + " (with every certificate of the node issued until then)", true
	}
	if _, found := slices.BinarySearch(r.GetSerials(), serial); found {
		return fmt.Sprintf("revoked at %s (serial %s on the deny list)", r.GetUpdated().AsTime().UTC().Format(time.RFC3339), serial), true
	}
	return "", false
}
