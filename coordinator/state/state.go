// Package state is the coordinators' replicated state as a plain in-memory
// store: the generations of the site, the node registry, every node's last
// report, the sealed secrets, the bootstrap tokens and the coordinators'
// addresses. It knows nothing of raft.
//
// Invariants:
//   - Generations are numbered from 1 without gaps; generation n is at
//     index n-1 and is never changed once appended.
//   - Every mutating method is deterministic: given the same sequence of
//     calls with the same arguments (times come from the commands, stamped
//     by the raft leader), every replica ends in the same state and returns
//     the same results. Nothing here reads the clock or random numbers.
//   - Stored messages are immutable: an update replaces the pointer, so a
//     message returned by a getter may be read without locks after the call,
//     but must never be modified by the caller.
//
// Concurrency: mutating methods are called from one goroutine (raft's FSM
// apply loop); getters are called from any goroutine (gRPC handlers,
// renderers). A sync.RWMutex guards the maps; no method blocks on anything
// but that mutex.
package state

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Rejection reasons returned in CommandResult.reason. Every replica decides
// them identically.
const (
	ReasonStaleBase    = "stale_base"
	ReasonNotFound     = "not_found"
	ReasonInvalid      = "invalid"
	ReasonTokenUsed    = "token_used"
	ReasonTokenExpired = "token_expired"
	ReasonTokenNode    = "token_node"
	// ReasonTokenReplace: the token would mint a certificate for a node
	// already registered or a coordinator's name, and was not created
	// with replace.
	ReasonTokenReplace = "token_replace"
)

// Store is the replicated state. The zero value is not usable; call New.
type Store struct {
	mu sync.RWMutex

	gens         []*hivev1.Generation
	nodes        map[string]*hivev1.NodeRecord
	reports      map[string]*hivev1.Report
	secrets      map[string]*hivev1.StoredSecret
	tokens       map[string]*hivev1.StoredBootstrapToken
	coordinators map[string]*hivev1.CoordinatorRecord
	revocations  map[string]*hivev1.Revocation        // the deny list, by node (revoke.go)
	ro           rolloutState                         // the latest rollout and its node index (rollout.go)
	audit        auditLog                             // bounded audit log (audit.go)
	checkRecs    map[string]*hivev1.CheckNodeRecord   // health and drift repairs, by node (checks.go)
	vols         volumeState                          // volume minors, ports and sizes (volumes.go)
	maint        map[string]*hivev1.MaintenanceRecord // nodes in maintenance (maintenance.go)
	reboot       *hivev1.RebootQueue                  // the reboot lock and queue, or nil (maintenance.go)

	// index is the raft index of the last applied command.
	index uint64
	// registryVersion increases whenever the node registry changes.
	registryVersion uint64
	// nextOrdinal is the ordinal the next newly recorded node gets
	// (NodeRecord.ordinal; 1 for the first).
	nextOrdinal uint64
	// secretsVersion increases whenever any secret changes.
	secretsVersion uint64
}

// New returns an empty store.
func New() *Store {
	return &Store{
		nodes:        map[string]*hivev1.NodeRecord{},
		reports:      map[string]*hivev1.Report{},
		secrets:      map[string]*hivev1.StoredSecret{},
		tokens:       map[string]*hivev1.StoredBootstrapToken{},
		coordinators: map[string]*hivev1.CoordinatorRecord{},
		revocations:  map[string]*hivev1.Revocation{},
		nextOrdinal:  1,
	}
}

// SetIndex records the raft index of the command being applied.
func (s *Store) SetIndex(i uint64) {
	s.mu.Lock()
	s.index = i
	s.mu.Unlock()
}

// Index returns the raft index of the last applied command.
func (s *Store) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

func reject(reason, format string, args ...any) *hivev1.CommandResult {
	return &hivev1.CommandResult{Reason: reason, Error: fmt.Sprintf(format, args...)}
}

// current returns the current generation or nil. Callers hold mu.
func (s *Store) current() *hivev1.Generation {
	if len(s.gens) == 0 {
		return nil
	}
	return s.gens[len(s.gens)-1]
}

func (s *Store) currentNumber() uint64 { return uint64(len(s.gens)) }

// Push appends c.Generation as the next generation. The number and parent
// of the proposed generation are ignored and set here. A push whose sha256
// equals the current generation's changes nothing and reports unchanged; a
// push whose base is not the current generation is refused with
// ReasonStaleBase unless forced.
func (s *Store) Push(t time.Time, c *hivev1.PushCommand) *hivev1.CommandResult {
	g := c.GetGeneration()
	if g == nil || g.GetSite() == nil {
		return reject(ReasonInvalid, "push without a site")
	}
	if g.GetSha256() == "" {
		return reject(ReasonInvalid, "push without sha256")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pushLocked(t, c)
}

// pushLocked is Push with mu held and the command's generation checked.
func (s *Store) pushLocked(t time.Time, c *hivev1.PushCommand) *hivev1.CommandResult {
	g := c.GetGeneration()
	cur := s.current()
	if cur != nil && cur.GetSha256() == g.GetSha256() {
		return &hivev1.CommandResult{Generation: cur.GetNumber(), Unchanged: true}
	}
	if !c.GetForce() && c.GetBaseGeneration() != s.currentNumber() {
		return reject(ReasonStaleBase, "push is based on generation %d but the current generation is %d (pull, re-check, or force)", c.GetBaseGeneration(), s.currentNumber())
	}
	allocs, nextMinor, nextPort, rej := s.allocateVolumesLocked(g.GetSite(), s.currentNumber()+1)
	if rej != nil {
		return rej
	}
	s.commitVolumesLocked(allocs, nextMinor, nextPort)
	ng := proto.Clone(g).(*hivev1.Generation)
	ng.Number = s.currentNumber() + 1
	ng.Parent = s.currentNumber()
	ng.RollbackOf = 0
	if ng.Time == nil {
		ng.Time = timestamppb.New(t)
	}
	s.gens = append(s.gens, ng)
	return &hivev1.CommandResult{Generation: ng.Number}
}

// Rollback appends a generation carrying the content of c.Target.
func (s *Store) Rollback(t time.Time, c *hivev1.RollbackCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.GetTarget() == 0 || c.GetTarget() > s.currentNumber() {
		return reject(ReasonNotFound, "generation %d does not exist (current is %d)", c.GetTarget(), s.currentNumber())
	}
	if !c.GetForce() && c.GetBaseGeneration() != 0 && c.GetBaseGeneration() != s.currentNumber() {
		return reject(ReasonStaleBase, "rollback is based on generation %d but the current generation is %d", c.GetBaseGeneration(), s.currentNumber())
	}
	target := s.gens[c.GetTarget()-1]
	cur := s.current()
	if cur.GetSha256() == target.GetSha256() {
		return &hivev1.CommandResult{Generation: cur.GetNumber(), Unchanged: true}
	}
	allocs, nextMinor, nextPort, rej := s.allocateVolumesLocked(target.GetSite(), s.currentNumber()+1)
	if rej != nil {
		return rej
	}
	s.commitVolumesLocked(allocs, nextMinor, nextPort)
	msg := c.GetMessage()
	if msg == "" {
		msg = fmt.Sprintf("rollback to generation %d", target.GetNumber())
	}
	ng := &hivev1.Generation{
		Number:     s.currentNumber() + 1,
		Parent:     s.currentNumber(),
		Sha256:     target.GetSha256(),
		Author:     c.GetAuthor(),
		Message:    msg,
		Time:       timestamppb.New(t),
		Site:       target.GetSite(),
		RollbackOf: target.GetNumber(),
		SourceName: target.GetSourceName(),
		Source:     target.GetSource(),
	}
	s.gens = append(s.gens, ng)
	return &hivev1.CommandResult{Generation: ng.Number}
}

// UpsertNode records a node's facts. Unchanged facts change nothing (and
// do not bump the registry version).
func (s *Store) UpsertNode(t time.Time, c *hivev1.NodeUpsertCommand) *hivev1.CommandResult {
	if c.GetName() == "" {
		return reject(ReasonInvalid, "node without a name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.nodes[c.GetName()]
	n := &hivev1.NodeRecord{
		Name:           c.GetName(),
		Labels:         c.GetLabels(),
		Addresses:      c.GetAddresses(),
		AgentVersion:   c.GetAgentVersion(),
		Updated:        timestamppb.New(t),
		Identity:       c.GetIdentity(),
		OperatorLabels: old.GetOperatorLabels(),
	}
	if n.Identity == nil {
		n.Identity = old.GetIdentity() // an admin's watch, or an old entry
	}
	if ok && SameNodeFacts(old, n) {
		return &hivev1.CommandResult{Unchanged: true}
	}
	// The ordinal records registration order, once. It depends only on
	// the command and the store: a command without one (written before
	// ordinals existed) gives 0, as a snapshot of that time holds; the
	// leader's proposal raises a replica whose counter lags.
	switch {
	case ok:
		n.Ordinal = old.GetOrdinal()
	case c.GetOrdinal() > 0:
		n.Ordinal = max(c.GetOrdinal(), s.nextOrdinal)
		s.nextOrdinal = n.Ordinal + 1
	}
	s.nodes[n.Name] = n
	s.registryVersion++
	return &hivev1.CommandResult{}
}

// NextOrdinal returns the registration ordinal the next new node would get
// (what the leader proposes in NodeUpsertCommand.ordinal).
func (s *Store) NextOrdinal() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nextOrdinal
}

// SameNodeFacts reports whether two records carry the same reported
// labels, addresses, agent version, identity and operator labels.
func SameNodeFacts(a, b *hivev1.NodeRecord) bool {
	if a.GetAgentVersion() != b.GetAgentVersion() || len(a.GetLabels()) != len(b.GetLabels()) || len(a.GetAddresses()) != len(b.GetAddresses()) {
		return false
	}
	if !proto.Equal(a.GetIdentity(), b.GetIdentity()) || !sameMap(a.GetOperatorLabels(), b.GetOperatorLabels()) {
		return false
	}
	for k, v := range a.GetLabels() {
		if w, ok := b.GetLabels()[k]; !ok || w != v {
			return false
		}
	}
	for i := range a.GetAddresses() {
		if a.GetAddresses()[i] != b.GetAddresses()[i] {
			return false
		}
	}
	return true
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Label sources (TrustedLabels).
const (
	SourceCertificate = "certificate"
	SourceOperator    = "operator"
	SourceDev         = "dev"
)

// TrustedLabels returns the labels selectors match for a node record: its
// identity's labels (bound in its certificate, or its own in --dev),
// overridden key by key by operator labels; and where each came from.
// Reported labels (NodeRecord.labels) are never among them.
func TrustedLabels(n *hivev1.NodeRecord) (labels, sources map[string]string) {
	id, op := n.GetIdentity(), n.GetOperatorLabels()
	if len(id.GetLabels()) == 0 && len(op) == 0 {
		return nil, nil
	}
	labels, sources = map[string]string{}, map[string]string{}
	src := id.GetSource()
	if src == "" {
		src = SourceCertificate
	}
	for k, v := range id.GetLabels() {
		labels[k], sources[k] = v, src
	}
	for k, v := range op {
		labels[k], sources[k] = v, SourceOperator
	}
	return labels, sources
}

// MatchLabels returns the labels of TrustedLabels without their sources,
// for the renderer, which reads them once per watcher and push. Without
// operator labels it is the identity's own map, not a copy: callers must
// not modify it.
func MatchLabels(n *hivev1.NodeRecord) map[string]string {
	op := n.GetOperatorLabels()
	if len(op) == 0 {
		return n.GetIdentity().GetLabels()
	}
	labels, _ := TrustedLabels(n)
	return labels
}

// LabelNode sets and removes operator labels of a registered node. An
// unknown node is ReasonNotFound; setting and removing the same key, or
// ending with more than maxOperatorLabels, is ReasonInvalid. (Keys and
// values are validated by the server before proposing.)
func (s *Store) LabelNode(t time.Time, c *hivev1.NodeLabelCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.nodes[c.GetName()]
	if !ok {
		return reject(ReasonNotFound, "node %q is not registered (it has never watched)", c.GetName())
	}
	labels := map[string]string{}
	for k, v := range old.GetOperatorLabels() {
		labels[k] = v
	}
	for _, k := range c.GetRemove() {
		if _, both := c.GetSet()[k]; both {
			return reject(ReasonInvalid, "label %q is both set and removed", k)
		}
		delete(labels, k)
	}
	for k, v := range c.GetSet() {
		labels[k] = v
	}
	if len(labels) > maxOperatorLabels {
		return reject(ReasonInvalid, "node %s would have %d operator labels; the limit is %d", c.GetName(), len(labels), maxOperatorLabels)
	}
	if sameMap(labels, old.GetOperatorLabels()) {
		return &hivev1.CommandResult{Unchanged: true}
	}
	n := proto.Clone(old).(*hivev1.NodeRecord)
	n.OperatorLabels = labels
	if len(labels) == 0 {
		n.OperatorLabels = nil
	}
	n.Updated = timestamppb.New(t)
	s.nodes[n.Name] = n
	s.registryVersion++
	return &hivev1.CommandResult{}
}

// maxOperatorLabels bounds a node's operator labels (pki.MaxLabels).
const maxOperatorLabels = 32

// ApplyReports stores each report as its node's last report, unless the
// stored one is newer: a report is skipped when its seq is not above the
// stored seq and it did not finish later either (a replayed queued report
// never overwrites a newer one; an agent that restarted and reset its
// sequence is still accepted). It returns how many were stored.
func (s *Store) ApplyReports(c *hivev1.ReportBatchCommand) *hivev1.CommandResult {
	return s.ApplyReportsAt(time.Time{}, c)
}

// ApplyReportsAt is ApplyReports at command time t: a node's health_since
// moves to t when its health changes (checks.go).
func (s *Store) ApplyReportsAt(t time.Time, c *hivev1.ReportBatchCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored := 0
	for _, r := range c.GetReports() {
		if r.GetNode() == "" || s.removedLocked(r.GetNode()) {
			continue
		}
		if old, ok := s.reports[r.GetNode()]; ok {
			newerSeq := r.GetSeq() > old.GetSeq()
			newerTime := r.GetFinished().AsTime().After(old.GetFinished().AsTime())
			if !newerSeq && !newerTime {
				continue
			}
		}
		// Kept with its results encoded and without published values
		// (sealed into secrets before they reach the log; plaintext is
		// never kept): results.go.
		s.reports[r.GetNode()] = packReport(r)
		s.noteReportLocked(t, r)
		stored++
	}
	return &hivev1.CommandResult{Generation: uint64(stored)}
}

// ValidSecretName reports whether name may be set by an operator: letters,
// digits, '.', '_' and '-', at most 128 characters. Names with a '/' are
// published by nodes ("<node>/<name>").
func ValidSecretName(name string) error {
	if name == "" || len(name) > 128 {
		return errors.New("secret name must have 1 to 128 characters")
	}
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
		default:
			return fmt.Errorf("secret name %q: character %q not allowed (use letters, digits, '.', '_', '-')", name, r)
		}
	}
	return nil
}

// IsPublished reports whether a secret name is one a node published.
func IsPublished(name string) bool { return strings.Contains(name, "/") }

// SetSecret stores a sealed secret value.
func (s *Store) SetSecret(t time.Time, c *hivev1.SecretSetCommand) *hivev1.CommandResult {
	if c.GetName() == "" || len(c.GetSealed()) == 0 || c.GetKeyId() == "" {
		return reject(ReasonInvalid, "secret set needs a name, a sealed value and a key id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var version uint64 = 1
	if old, ok := s.secrets[c.GetName()]; ok {
		version = old.GetVersion() + 1
	}
	s.secrets[c.GetName()] = &hivev1.StoredSecret{
		Name:    c.GetName(),
		Sealed:  c.GetSealed(),
		KeyId:   c.GetKeyId(),
		Author:  c.GetAuthor(),
		Updated: timestamppb.New(t),
		Version: version,
	}
	s.secretsVersion++
	return &hivev1.CommandResult{}
}

// DeleteSecret removes a secret.
func (s *Store) DeleteSecret(c *hivev1.SecretDeleteCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.secrets[c.GetName()]; !ok {
		return reject(ReasonNotFound, "secret %q does not exist", c.GetName())
	}
	delete(s.secrets, c.GetName())
	s.secretsVersion++
	return &hivev1.CommandResult{}
}

// RemovePeer forgets a coordinator's addresses.
func (s *Store) RemovePeer(c *hivev1.PeerRemoveCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.coordinators[c.GetName()]; !ok {
		return reject(ReasonNotFound, "coordinator %q is not known", c.GetName())
	}
	delete(s.coordinators, c.GetName())
	return &hivev1.CommandResult{}
}

// UpsertCoordinator records a coordinator's addresses.
func (s *Store) UpsertCoordinator(t time.Time, c *hivev1.CoordinatorUpsertCommand) *hivev1.CommandResult {
	if c.GetName() == "" {
		return reject(ReasonInvalid, "coordinator without a name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.coordinators[c.GetName()] = &hivev1.CoordinatorRecord{
		Name: c.GetName(), GrpcAddr: c.GetGrpcAddr(), RaftAddr: c.GetRaftAddr(),
		Version: c.GetVersion(), Updated: timestamppb.New(t), CommandVersion: c.GetCommandVersion(),
	}
	return &hivev1.CommandResult{}
}

// CreateToken stores a bootstrap token's hash.
func (s *Store) CreateToken(c *hivev1.BootstrapTokenCreateCommand) *hivev1.CommandResult {
	if c.GetTokenSha256() == "" {
		return reject(ReasonInvalid, "token without a hash")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[c.GetTokenSha256()] = &hivev1.StoredBootstrapToken{
		TokenSha256: c.GetTokenSha256(), Node: c.GetNode(), Expires: c.GetExpires(), Author: c.GetAuthor(),
		Labels: c.GetLabels(), NodePattern: c.GetNodePattern(), Replace: c.GetReplace(),
	}
	return &hivev1.CommandResult{}
}

// CheckToken decides, without changing anything, whether the token with
// hash sha may mint a certificate for node at time t: it exists, is
// unused and unexpired, names node (or a pattern matching it), and node
// is neither registered nor a coordinator unless the token allows
// replacing. It returns the token, or the rejection RedeemToken would
// return. The coordinator calls it before signing anything; RedeemToken
// decides again, identically, in Apply.
func (s *Store) CheckToken(t time.Time, sha, node string) (*hivev1.StoredBootstrapToken, *hivev1.CommandResult) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.checkTokenLocked(t, sha, node)
}

func (s *Store) checkTokenLocked(t time.Time, sha, node string) (*hivev1.StoredBootstrapToken, *hivev1.CommandResult) {
	tok, ok := s.tokens[sha]
	switch {
	case !ok:
		return nil, reject(ReasonNotFound, "unknown bootstrap token")
	case tok.GetUsed():
		return nil, reject(ReasonTokenUsed, "bootstrap token was already used")
	case !t.Before(tok.GetExpires().AsTime()):
		return nil, reject(ReasonTokenExpired, "bootstrap token expired at %s", tok.GetExpires().AsTime().UTC().Format(time.RFC3339))
	case tok.GetNode() == "" && tok.GetNodePattern() == "":
		return nil, reject(ReasonTokenNode, "bootstrap token is bound to no node name (made before tokens were bound); create one with --node")
	case tok.GetNode() != "" && tok.GetNode() != node:
		return nil, reject(ReasonTokenNode, "bootstrap token is for node %q, not %q", tok.GetNode(), node)
	case tok.GetNodePattern() != "" && !MatchNodePattern(tok.GetNodePattern(), node):
		return nil, reject(ReasonTokenNode, "bootstrap token is for nodes matching %q, not %q", tok.GetNodePattern(), node)
	}
	if !tok.GetReplace() {
		if _, ok := s.nodes[node]; ok {
			return nil, reject(ReasonTokenReplace, "node %q is already registered; a token for an existing node must be created with --replace", node)
		}
		if _, ok := s.coordinators[node]; ok {
			return nil, reject(ReasonTokenReplace, "%q is a coordinator's name; a token for it must be created with --replace", node)
		}
	}
	return tok, nil
}

// MatchNodePattern reports whether node matches a token's path.Match
// pattern (a malformed pattern matches nothing).
func MatchNodePattern(pattern, node string) bool {
	ok, err := path.Match(pattern, node)
	return err == nil && ok
}

// RedeemToken marks a token used, if CheckToken allows it at t.
func (s *Store) RedeemToken(t time.Time, c *hivev1.BootstrapTokenRedeemCommand) *hivev1.CommandResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok, res := s.checkTokenLocked(t, c.GetTokenSha256(), c.GetNode())
	if res != nil {
		return res
	}
	nt := proto.Clone(tok).(*hivev1.StoredBootstrapToken)
	nt.Used = true
	nt.UsedBy = c.GetNode()
	s.tokens[nt.TokenSha256] = nt
	return &hivev1.CommandResult{}
}

// --- reads ---

// Current returns the current generation, or nil before the first push.
func (s *Store) Current() *hivev1.Generation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.current()
}

// CurrentNumber returns the current generation number (0: none).
func (s *Store) CurrentNumber() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.currentNumber()
}

// Generation returns generation n, or nil.
func (s *Store) Generation(n uint64) *hivev1.Generation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n == 0 || n > s.currentNumber() {
		return nil
	}
	return s.gens[n-1]
}

// Generations returns up to limit generations, newest first (0: all).
func (s *Store) Generations(limit int) []*hivev1.Generation {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := len(s.gens)
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]*hivev1.Generation, 0, limit)
	for i := n - 1; i >= n-limit; i-- {
		out = append(out, s.gens[i])
	}
	return out
}

// Node returns a node record, or nil.
func (s *Store) Node(name string) *hivev1.NodeRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nodes[name]
}

// Nodes returns every node record sorted by name and the registry version.
func (s *Store) Nodes() ([]*hivev1.NodeRecord, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*hivev1.NodeRecord, 0, len(s.nodes))
	for _, n := range s.nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, s.registryVersion
}

// EachNodeReport calls f with every registered node and its last report
// (nil: none), in no particular order, until f returns false: one pass
// under the read lock, without the copy and sort of Nodes (the FSM's
// report events check a whole fleet per batch with it). f must not call
// the store.
func (s *Store) EachNodeReport(f func(*hivev1.NodeRecord, *hivev1.Report) bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for name, n := range s.nodes {
		if !f(n, s.reports[name]) {
			return
		}
	}
}

// RegistryVersion increases with every registry change.
func (s *Store) RegistryVersion() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.registryVersion
}

// Report returns a node's last report, or nil. Its results are kept
// encoded: read them with Results, ResultsWhere or SummarizeResults, never
// GetResults (results.go).
func (s *Store) Report(name string) *hivev1.Report {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reports[name]
}

// Reports returns every node's last report by node name (a copy of the
// map); read their results as Report says.
func (s *Store) Reports() map[string]*hivev1.Report {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]*hivev1.Report, len(s.reports))
	for k, v := range s.reports {
		out[k] = v
	}
	return out
}

// Secret returns a stored secret, or nil.
func (s *Store) Secret(name string) *hivev1.StoredSecret {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.secrets[name]
}

// Secrets returns every stored secret sorted by name.
func (s *Store) Secrets() []*hivev1.StoredSecret {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*hivev1.StoredSecret, 0, len(s.secrets))
	for _, v := range s.secrets {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SecretsVersion increases with every secret change.
func (s *Store) SecretsVersion() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.secretsVersion
}

// Token returns a bootstrap token record, or nil.
func (s *Store) Token(sha string) *hivev1.StoredBootstrapToken {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.tokens[sha]
}

// Coordinator returns a coordinator's record, or nil.
func (s *Store) Coordinator(name string) *hivev1.CoordinatorRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.coordinators[name]
}

// Coordinators returns every coordinator record sorted by name.
func (s *Store) Coordinators() []*hivev1.CoordinatorRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*hivev1.CoordinatorRecord, 0, len(s.coordinators))
	for _, v := range s.coordinators {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
