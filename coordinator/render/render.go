// Package render turns the current generation plus the node registry into
// one node's desired state (hivev1.NodeState).
//
// For a node (name, trusted labels, addresses) it selects the roles whose
// selectors match the node's trusted labels (state.TrustedLabels: bound in
// its certificate or set by an operator; never what the agent reports), merges their resources (identical declarations collapse, firewall
// rules and swarm settings merge, anything else that differs is a
// *ConflictError), orders them by dependencies, and resolves cross-node
// facts from the registry:
//   - drbd: peers are the nodes holding peer_role (default: the declaring
//     role) in registration order (NodeRecord.ordinal, assigned when the
//     registry first records a node; ties, only among nodes recorded before
//     ordinals existed, by name), node_id their index, address their first
//     address (an IP; the port is Drbd.port). The node itself is among
//     them. A node added later thus never renumbers the existing peers
//     (DRBD needs stable node ids); a node leaving the role shifts those
//     registered after it.
//   - volume: delivered to the nodes holding its replicas or diskless
//     role (whichever role declares it); peers are those nodes in
//     registration order (node ids as for drbd), diskless_peers those
//     without the replicas role, initial_primary the first replica by
//     name, minor and port the volume's allocation in the store
//     (state.VolumeAllocation, made when a push first declared it).
//   - swarm: the initializer is the lowest-named node whose swarm resource
//     has init set; manager_addrs are "<address>:2377" of the other manager
//     nodes (address: the node's advertise_addr when it is an IP, else its
//     first address); the initializer alone also gets members, every swarm
//     node with that address, its role and labels; join_token_secret is "<initializer>/swarm-worker-token"
//     for workers and "<initializer>/swarm-manager-token" for managers other
//     than the initializer, which publishes both tokens in its reports.
//     Every swarm node gets the site's registry (Site.registry), and the
//     initializer the site's services (Site.services, images pinned to
//     the digests resolved at push).
//   - firewall: source_roles are expanded into sources (every address of
//     every node holding those roles) and cleared; a rule whose sources
//     come out empty is dropped, never widened to "anywhere".
//   - facts.peers lists the nodes of the roles whose name appears in the
//     text of one of the node's file templates (for .Peers.ROLE); not every
//     role's, so that a node's state does not grow, and change, with every
//     node of a large role it has nothing to do with. Firewall and DRBD
//     peers are resolved into the resources themselves. Templates are evaluated by the agent with these
//     facts and the secrets in NodeState.secrets.
//   - secrets: only those named by the node's file resources (File.secrets), its commands (GuardedCommand.secrets),
//     its swarm join token and, on the initializer, the services' secrets, decrypted; a secret without a value is left
//     out (the agent reports the resource as failed).
//
// Targets: each node is rendered at its target generation when the source
// tells it (Targeter: a rollout's waves, coordinator/state), else at the
// current one; the renderer keeps one view per generation in use.
//
// Caching: the registry-wide view (roles of every node, peers per role,
// swarm facts) is built once per (store, generation, registry version);
// merged resources once per distinct role set within a view; and the final
// NodeState once per (view, node facts, secret versions). A push to 5,000
// nodes that share a handful of role sets merges each role set once.
//
// A Renderer is safe for concurrent use by many watch goroutines; Render
// blocks only on the renderer's mutex while a view is (re)built.
package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// SwarmPort is the port of the swarm managers' API in manager_addrs.
const SwarmPort = 2377

// Source is what the renderer reads: a consistent store (package
// coordinator/state implements it).
type Source interface {
	Current() *hivev1.Generation
	Nodes() ([]*hivev1.NodeRecord, uint64)
	RegistryVersion() uint64
	Secret(name string) *hivev1.StoredSecret
}

// Opener decrypts sealed secrets (package coordinator/keyring).
type Opener interface {
	Open(name string, sealed []byte, keyID string) ([]byte, error)
}

// Facts are what the renderer knows of a node.
type Facts struct {
	Name string
	// Labels are the trusted labels, the only ones selectors match.
	Labels map[string]string
	// Reported are the labels the agent reported: passed to templates
	// (.Reported), never matched.
	Reported map[string]string
	// Addresses, validated by the coordinator before they were stored.
	Addresses []string
	// Host holds the host facts the node's agent reported with its watch
	// (NodeFacts fields 10-14 only; nil: none), checked for form only:
	// passed to templates (.Facts), never matched.
	Host *hivev1.NodeFacts
}

// FactsOf returns the facts of a registry record.
func FactsOf(n *hivev1.NodeRecord) Facts {
	return Facts{Name: n.GetName(), Labels: state.MatchLabels(n), Reported: n.GetLabels(), Addresses: n.GetAddresses()}
}

// Renderer renders and caches node states.
type Renderer struct {
	opener Opener

	mu      sync.Mutex
	views   map[uint64]*view // by generation number (target.go)
	nodes   map[string]*entry
	secrets map[string]openedSecret

	hits, misses atomic.Uint64
}

type openedSecret struct {
	version uint64
	keyID   string
	value   []byte
}

type entry struct {
	view *view
	key  string
	out  *Rendered
	err  error
}

// Rendered is a node's rendered state with its encoding. Both are shared
// by every caller and must not be modified.
type Rendered struct {
	State *hivev1.NodeState
	// Encoded is the deterministic protobuf encoding of State with hash and
	// raft_index unset: what the hash is computed over. A sender can append
	// the hash and raft_index fields to it instead of marshalling State
	// again (protobuf allows fields in any order).
	Encoded []byte
}

// New returns a renderer that opens secrets with opener.
func New(opener Opener) *Renderer {
	return &Renderer{opener: opener, views: map[uint64]*view{}, nodes: map[string]*entry{}, secrets: map[string]openedSecret{}}
}

// Stats returns the cache hits and misses so far.
func (r *Renderer) Stats() (hits, misses uint64) { return r.hits.Load(), r.misses.Load() }

// view is the registry-wide render context of one (source, generation,
// registry version).
type view struct {
	src      Source
	gen      *hivev1.Generation
	registry uint64

	nodes     []*hivev1.NodeRecord
	byName    map[string]*hivev1.NodeRecord
	nodeRoles map[string][]string
	peers     map[string][]*hivev1.Peer // by role
	bases     map[string]*base          // by role set key

	managers    []string // manager nodes, sorted by name
	initializer string
	swarmAddr   map[string]string     // address each swarm node advertises
	swarmNodes  []*hivev1.SwarmMember // every swarm node, by name
	addr        map[string]string     // first address by node
	trusted     map[string]map[string]string
}

// base is the merged content of one role set within a view.
type base struct {
	roles     []string
	resources []*hivev1.Resource
	checks    []*hivev1.HealthCheck
	swarm     *hivev1.Swarm // merged swarm resource, or nil
	swarmIdx  int
	secrets   []string
	relevant  []string // roles whose peers go into facts
	resolved  bool
	err       error
}

func rolesKey(roles []string) string { return strings.Join(roles, "\x00") }

// viewFor returns the view of generation gen (nil: none) over src,
// building it if needed.
func (r *Renderer) viewFor(src Source, gen *hivev1.Generation) *view {
	if v := r.views[gen.GetNumber()]; v != nil && v.src == src && v.gen == gen && v.registry == src.RegistryVersion() {
		return v
	}
	nodes, regVersion := src.Nodes()
	v := &view{
		src: src, gen: gen, registry: regVersion, nodes: nodes,
		nodeRoles: map[string][]string{}, peers: map[string][]*hivev1.Peer{}, byName: map[string]*hivev1.NodeRecord{},
		bases: map[string]*base{}, addr: map[string]string{}, trusted: map[string]map[string]string{},
	}
	site := gen.GetSite()
	for _, n := range nodes {
		v.byName[n.GetName()] = n
		if len(n.GetAddresses()) > 0 {
			v.addr[n.GetName()] = n.GetAddresses()[0]
		}
		if site == nil {
			continue
		}
		// The record's own map where no operator label overrides it: a
		// copy per node and view cost 10,000 nodes 17 MB per coordinator.
		trusted := state.MatchLabels(n)
		v.trusted[n.GetName()] = trusted
		roles := SelectRoles(site, n.GetName(), trusted)
		v.nodeRoles[n.GetName()] = roles
		for _, role := range roles {
			v.peers[role] = append(v.peers[role], &hivev1.Peer{Name: n.GetName(), Address: v.addr[n.GetName()], Labels: trusted})
		}
	}
	// Swarm facts need every node's merged swarm resource.
	vols := siteVolumes(site)
	for _, n := range nodes {
		b := v.mergedBase(v.nodeRoles[n.GetName()])
		if b.err != nil || b.swarm == nil {
			continue
		}
		if b.swarm.GetRole() == hivev1.SwarmRole_SWARM_ROLE_MANAGER {
			v.managers = append(v.managers, n.GetName())
		}
		addr := v.addr[n.GetName()]
		if a := b.swarm.GetAdvertiseAddr(); net.ParseIP(a) != nil {
			addr = a
		}
		if v.swarmAddr == nil {
			v.swarmAddr = map[string]string{}
		}
		v.swarmAddr[n.GetName()] = addr
		v.swarmNodes = append(v.swarmNodes, &hivev1.SwarmMember{
			Name: n.GetName(), Address: addr, Role: b.swarm.GetRole(), Labels: volumeNodeLabels(vols, v.nodeRoles[n.GetName()], b.swarm.GetLabels()),
		})
		if b.swarm.GetInit() && (v.initializer == "" || n.GetName() < v.initializer) {
			v.initializer = n.GetName()
		}
	}
	sort.Strings(v.managers)
	// Finish bases (peers, firewall) now that the view is complete.
	for _, b := range v.bases {
		v.resolve(b)
	}
	r.keepViewLocked(v)
	return v
}

// byRegistration returns a copy of peers in registration order (the
// nodes' ordinals; equal ordinals, only 0 for nodes recorded before
// ordinals existed, by name).
func (v *view) byRegistration(peers []*hivev1.Peer) []*hivev1.Peer {
	out := append([]*hivev1.Peer(nil), peers...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := v.byName[out[i].GetName()].GetOrdinal(), v.byName[out[j].GetName()].GetOrdinal()
		if a != b {
			return a < b
		}
		return out[i].GetName() < out[j].GetName()
	})
	return out
}

// mergedBase returns (creating) the merged but unresolved base of a role set.
func (v *view) mergedBase(roles []string) *base {
	k := rolesKey(roles)
	if b, ok := v.bases[k]; ok {
		return b
	}
	b := &base{roles: roles, swarmIdx: -1}
	v.bases[k] = b
	if v.gen == nil {
		return b
	}
	res, err := mergeRoles(v.gen.GetSite(), roles)
	if err != nil {
		b.err = err
		return b
	}
	b.resources = res
	b.checks = roleChecks(v.gen.GetSite(), roles)
	for i, rs := range res {
		if s := rs.GetSwarm(); s != nil {
			b.swarm = s
			b.swarmIdx = i
		}
	}
	return b
}

// resolve fills the cross-node facts that are the same for every node of
// the role set: drbd peers and firewall source roles. It also collects
// the referenced secrets and the roles relevant to facts.peers.
func (v *view) resolve(b *base) {
	if b.err != nil || b.resolved {
		return
	}
	b.resolved = true
	relevant := map[string]bool{}
	secrets := map[string]bool{}
	for i, res := range b.resources {
		switch k := res.GetKind().(type) {
		case *hivev1.Resource_Drbd:
			d := proto.Clone(k.Drbd).(*hivev1.Drbd)
			role := d.GetPeerRole()
			if role == "" {
				role = res.GetRole()
			}
			d.Peers = nil
			for id, p := range v.byRegistration(v.peers[role]) {
				d.Peers = append(d.Peers, &hivev1.DrbdPeer{Name: p.GetName(), Address: p.GetAddress(), NodeId: uint32(id)})
			}
			nr := proto.Clone(res).(*hivev1.Resource)
			nr.Kind = &hivev1.Resource_Drbd{Drbd: d}
			b.resources[i] = nr
		case *hivev1.Resource_Volume:
			b.resources[i] = v.resolveVolume(res, k.Volume)
		case *hivev1.Resource_Firewall:
			f := proto.Clone(k.Firewall).(*hivev1.Firewall)
			var rules []*hivev1.FirewallRule
			for _, rule := range f.GetRules() {
				if len(rule.GetSourceRoles()) == 0 {
					rules = append(rules, rule)
					continue
				}
				srcs := append([]string(nil), rule.GetSources()...)
				seen := map[string]bool{}
				for _, s := range srcs {
					seen[s] = true
				}
				for _, role := range rule.GetSourceRoles() {
					for _, p := range v.peers[role] {
						for _, a := range v.nodeAddresses(p.GetName()) {
							if !seen[a] {
								seen[a] = true
								srcs = append(srcs, a)
							}
						}
					}
				}
				if len(srcs) == 0 {
					continue // no node holds the roles: never widen to anywhere
				}
				rule.Sources = srcs
				rule.SourceRoles = nil
				rules = append(rules, rule)
			}
			f.Rules = rules
			nr := proto.Clone(res).(*hivev1.Resource)
			nr.Kind = &hivev1.Resource_Firewall{Firewall: f}
			b.resources[i] = nr
		case *hivev1.Resource_Hosts:
			b.resources[i] = v.resolveHosts(res)
		case *hivev1.Resource_User:
			if s := k.User.GetPasswordSecret(); s != "" {
				secrets[s] = true
			}
		case *hivev1.Resource_Command:
			for _, s := range k.Command.GetSecrets() {
				secrets[s] = true
			}
		case *hivev1.Resource_File:
			for _, s := range k.File.GetSecrets() {
				secrets[s] = true
			}
			if k.File.GetTemplate() && v.gen != nil {
				for _, role := range v.gen.GetSite().GetRoles() {
					if strings.Contains(k.File.GetContent(), role.GetName()) {
						relevant[role.GetName()] = true
					}
				}
			}
		}
	}
	for s := range secrets {
		b.secrets = append(b.secrets, s)
	}
	sort.Strings(b.secrets)
	for r := range relevant {
		b.relevant = append(b.relevant, r)
	}
	sort.Strings(b.relevant)
}

func (v *view) nodeAddresses(name string) []string {
	return v.byName[name].GetAddresses()
}

// Render returns the NodeState of the node with facts f, rendered from
// src's current generation and registry. Errors are render errors of the
// site for this node (conflicts, missing requirements, unreadable secret
// keys); the returned state must not be modified.
func (r *Renderer) Render(src Source, f Facts) (*Rendered, error) {
	return r.renderAt(src, targetOf(src, f.Name), f)
}

// RenderAt renders the node with facts f at generation gen (nil: none)
// instead of its target, with the same caches (the rollout planner reads
// the DRBD peers and swarm roles of the generation it plans).
func (r *Renderer) RenderAt(src Source, gen *hivev1.Generation, f Facts) (*Rendered, error) {
	return r.renderAt(src, gen, f)
}

func (r *Renderer) renderAt(src Source, gen *hivev1.Generation, f Facts) (*Rendered, error) {
	// The facts' part of the cache key is built before taking the lock
	// that every watcher woken by a push passes through.
	fk := factsKey(f)
	r.mu.Lock()
	v := r.viewFor(src, gen)
	roles := v.nodeRoles[f.Name]
	if _, known := v.nodeRoles[f.Name]; !known || !sameFacts(v, f) {
		if v.gen != nil {
			roles = SelectRoles(v.gen.GetSite(), f.Name, f.Labels)
		}
	}
	b := v.mergedBase(roles)
	v.resolve(b)
	secretKey, secrets, err := r.secretsFor(v, b, f.Name)
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	key := fk + "|" + rolesKey(roles) + "|" + secretKey
	if e, ok := r.nodes[f.Name]; ok && e.view == v && e.key == key {
		r.mu.Unlock()
		r.hits.Add(1)
		return e.out, e.err
	}
	r.mu.Unlock()
	// Build outside the lock: the view and base are complete and no longer
	// change, so thousands of watchers woken by one push render in parallel.
	r.misses.Add(1)
	out, err := r.build(v, b, f, secrets)
	r.mu.Lock()
	if r.views[v.gen.GetNumber()] == v {
		r.nodes[f.Name] = &entry{view: v, key: key, out: out, err: err}
	}
	r.mu.Unlock()
	return out, err
}

// Forget drops a node's cached state (e.g. when its last watcher left).
func (r *Renderer) Forget(name string) {
	r.mu.Lock()
	delete(r.nodes, name)
	r.mu.Unlock()
}

func sameFacts(v *view, f Facts) bool {
	if _, ok := v.byName[f.Name]; !ok {
		return false
	}
	trusted := v.trusted[f.Name]
	if len(trusted) != len(f.Labels) {
		return false
	}
	for k, val := range f.Labels {
		if w, ok := trusted[k]; !ok || w != val {
			return false
		}
	}
	return true
}

func factsKey(f Facts) string {
	keys := make([]string, 0, len(f.Labels))
	for k := range f.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	sb.Grow(256)
	sb.WriteString(f.Name)
	for _, k := range keys {
		sb.WriteByte(0)
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(f.Labels[k])
	}
	sb.WriteString("\x01")
	keys = keys[:0]
	for k := range f.Reported {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sb.WriteByte(0)
		sb.WriteString(k)
		sb.WriteByte('=')
		sb.WriteString(f.Reported[k])
	}
	sb.WriteString("\x01")
	sb.WriteString(strings.Join(f.Addresses, ","))
	sb.WriteString("\x01")
	sb.WriteString(hostKey(f.Host))
	return sb.String()
}

// swarmSecret returns the join-token secret name for node in view, or "".
func swarmSecret(v *view, b *base, node string) string {
	if b.swarm == nil || v.initializer == "" || node == v.initializer {
		return ""
	}
	if b.swarm.GetRole() == hivev1.SwarmRole_SWARM_ROLE_MANAGER {
		return v.initializer + "/swarm-manager-token"
	}
	return v.initializer + "/swarm-worker-token"
}

func (r *Renderer) secretsFor(v *view, b *base, node string) (string, map[string][]byte, error) {
	names := b.secrets
	if js := swarmSecret(v, b, node); js != "" {
		names = append(append([]string(nil), names...), js)
	}
	if b.swarm != nil && node == v.initializer {
		// The initializer delivers the services' secrets as swarm secrets.
		seen := map[string]bool{}
		for _, n := range names {
			seen[n] = true
		}
		for _, svc := range v.gen.GetSite().GetServices() {
			for _, sec := range svc.GetSecrets() {
				if n := sec.GetSecret(); !seen[n] {
					seen[n] = true
					names = append(append([]string(nil), names...), n)
				}
			}
		}
	}
	if len(names) == 0 {
		return "", nil, nil
	}
	out := map[string][]byte{}
	var sb strings.Builder
	for _, n := range names {
		s := v.src.Secret(n)
		if s == nil {
			fmt.Fprintf(&sb, "%s=-;", n)
			continue
		}
		fmt.Fprintf(&sb, "%s=%d/%s;", n, s.GetVersion(), s.GetKeyId())
		o, ok := r.secrets[n]
		if !ok || o.version != s.GetVersion() || o.keyID != s.GetKeyId() {
			if r.opener == nil {
				return "", nil, fmt.Errorf("secret %q: no keyring to open it", n)
			}
			val, err := r.opener.Open(n, s.GetSealed(), s.GetKeyId())
			if err != nil {
				return "", nil, err
			}
			o = openedSecret{version: s.GetVersion(), keyID: s.GetKeyId(), value: val}
			r.secrets[n] = o
		}
		out[n] = o.value
	}
	return sb.String(), out, nil
}

func (r *Renderer) build(v *view, b *base, f Facts, secrets map[string][]byte) (*Rendered, error) {
	if b.err != nil {
		return nil, fmt.Errorf("render node %s: %w", f.Name, b.err)
	}
	st := &hivev1.NodeState{
		Node:       f.Name,
		Generation: v.gen.GetNumber(),
		Facts: &hivev1.NodeFacts{
			Name:           f.Name,
			Labels:         f.Labels,
			ReportedLabels: f.Reported,
			Addresses:      f.Addresses,
			Roles:          b.roles,
			Peers:          map[string]*hivev1.PeerList{},
			OsFamily:       f.Host.GetOsFamily(),
			OsVersion:      f.Host.GetOsVersion(),
			Kernel:         f.Host.GetKernel(),
			Hardware:       f.Host.GetHardware(),
			Interfaces:     f.Host.GetInterfaces(),
		},
		Secrets: secrets,
	}
	for _, role := range b.relevant {
		st.Facts.Peers[role] = &hivev1.PeerList{Peers: v.peers[role]}
	}
	st.Resources = b.resources
	st.Checks = b.checks
	if b.swarm != nil {
		st.Resources = append([]*hivev1.Resource(nil), b.resources...)
		res := proto.Clone(b.resources[b.swarmIdx]).(*hivev1.Resource)
		s := res.GetSwarm()
		s.Initializer = v.initializer == f.Name
		s.ManagerAddrs = nil
		for _, m := range v.managers {
			if a := v.swarmAddr[m]; m != f.Name && a != "" {
				s.ManagerAddrs = append(s.ManagerAddrs, net.JoinHostPort(a, fmt.Sprint(SwarmPort)))
			}
		}
		s.JoinTokenSecret = swarmSecret(v, b, f.Name)
		if s.Initializer {
			s.Members = v.swarmNodes
			if d, ok := v.src.(Drainer); ok {
				for _, m := range v.swarmNodes {
					if d.SwarmDrained(m.GetName()) {
						st.SwarmDrain = append(st.SwarmDrain, m.GetName())
					}
				}
			}
			s.Services = servicesOnVolumeNodes(v.gen.GetSite())
		}
		s.Registry = v.gen.GetSite().GetRegistry()
		st.Resources[b.swarmIdx] = res
	}
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode node state: %w", err)
	}
	sum := sha256.Sum256(enc)
	st.Hash = hex.EncodeToString(sum[:])
	return &Rendered{State: st, Encoded: enc}, nil
}

// Hash returns the hex sha256 of the deterministic encoding of st with hash
// and raft_index cleared.
func Hash(st *hivev1.NodeState) (string, error) {
	c := &hivev1.NodeState{
		Node: st.GetNode(), Generation: st.GetGeneration(), Facts: st.GetFacts(),
		Resources: st.GetResources(), Secrets: st.GetSecrets(), Checks: st.GetChecks(),
		SwarmDrain: st.GetSwarmDrain(),
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("hash node state: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
