package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Names under which a manager publishes the join tokens (the agent puts
// Published() into Report.published_secrets; the coordinator stores them as
// "<node>/<name>" and hands them to joining nodes as join_token_secret).
const (
	PublishedWorkerToken  = "swarm-worker-token"
	PublishedManagerToken = "swarm-manager-token"
)

// MarkerPath is the file (below Env.Root) recording the swarm node hive
// created by init or join; Prune only makes a node leave a swarm that hive
// joined.
const MarkerPath = "/var/lib/hive/swarm-node.json"

// Errors a Change can carry.
var (
	// ErrInvalid is wrapped for a malformed swarm resource.
	ErrInvalid = errors.New("invalid swarm resource")
	// ErrNoToken is wrapped when a node must join but the join token
	// secret has not been published yet.
	ErrNoToken = errors.New("swarm join token not available")
	// ErrNoManager is wrapped when a node must join but no manager is
	// known, or none answers (the manager is down).
	ErrNoManager = errors.New("no swarm manager reachable")
	// ErrState is wrapped when the engine's swarm state needs an operator
	// (locked, error).
	ErrState = errors.New("swarm state needs an operator")
	// ErrNetworkMismatch is wrapped when a declared overlay network exists
	// with other settings (hive never recreates a network).
	ErrNetworkMismatch = errors.New("swarm network exists with other settings")
	// ErrSandbox is returned by Apply in sandbox mode.
	ErrSandbox = errors.New("swarm provider in sandbox mode: plan only")
)

// Config configures the provider.
type Config struct {
	// Host is the Docker Engine API endpoint.
	Host string
	// ListenPort is the swarm management port (2377).
	ListenPort int
	// DialTimeout bounds the reachability check of managers before a join.
	DialTimeout time.Duration
	// Dial is used for that check; nil is a net.Dialer. Tests dial from
	// inside the node's network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Sandbox: never contact the engine (the agent under --root). Plan
	// describes the membership wanted; Apply refuses with ErrSandbox.
	Sandbox bool
	// CAFile is the site CA (the agent's --tls-ca), written to
	// /etc/docker/certs.d/HOST:PORT/ca.crt for a TLS site registry.
	CAFile string
	// ReloadCommand makes dockerd reload daemon.json after its registry
	// settings changed (SIGHUP: registry-mirrors and insecure-registries
	// are reloadable, certs.d is read at each pull, so the engine and its
	// tasks keep running); empty: `systemctl reload docker.service`. Run
	// through Env.Runner.
	ReloadCommand []string
}

// DefaultConfig returns the local engine's socket, port 2377, a 3 s dial
// timeout.
func DefaultConfig() Config {
	return Config{Host: "unix:///var/run/docker.sock", ListenPort: 2377, DialTimeout: 3 * time.Second}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.Host == "" {
		return errors.New("swarm: no docker host")
	}
	if c.ListenPort <= 0 || c.ListenPort > 65535 {
		return fmt.Errorf("swarm: listen port %d", c.ListenPort)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("swarm: dial timeout %v must be positive", c.DialTimeout)
	}
	return nil
}

// Provider converges the "swarm" resource kind through the Docker Engine
// API. It is long-lived (one per agent): it keeps the API client and the
// join tokens last read from the swarm, for Published.
type Provider struct {
	cfg Config
	cli *client.Client
	log *slog.Logger

	mu        sync.Mutex
	published map[string][]byte
	services  []*hivev1.SwarmServiceStatus
}

// New returns a provider; it does not contact the engine yet.
func New(cfg Config, log *slog.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	cli, err := client.New(client.WithHost(cfg.Host))
	if err != nil {
		return nil, fmt.Errorf("swarm: docker client: %w", err)
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	return &Provider{cfg: cfg, cli: cli, log: log.With("component", "swarm")}, nil
}

// Close releases the API client.
func (p *Provider) Close() error { return p.cli.Close() }

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return converge.KindSwarm }

// Requires implements converge.Linker: the Docker package and service, when
// the state declares them, come first.
func (p *Provider) Requires(r *hivev1.Resource, all []*hivev1.Resource) []string {
	return []string{"package:docker.io", "package:docker-ce", "service:docker.service"}
}

// Published returns the values this node publishes for others: the join
// tokens, while it is a swarm manager. The agent copies them into
// Report.published_secrets. Safe from any goroutine.
func (p *Provider) Published() map[string][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]byte, len(p.published))
	for k, v := range p.published {
		out[k] = append([]byte(nil), v...)
	}
	return out
}

// step is one planned action.
type step struct {
	kind    string // leave, init, join, network, label, remove, availability
	role    dswarm.NodeRole
	drain   bool // availability: drain (else active)
	force   bool
	network *hivev1.SwarmNetwork
	nodeID  string
	labels  map[string]string
	obj     svcObject       // secret-create, config-create
	files   []engineFile    // engine
	reload  bool            // engine: daemon.json changed
	svc     *desiredService // service-create, service-update
	text    string
}

type planData struct {
	s         *hivev1.Swarm
	advertise string
	token     string
	managers  []string
	steps     []step
	after     bool     // init/join: networks and labels are planned after it
	drain     []string // members to drain (converge.Env.SwarmDrain)
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{Key: it.Key, Resource: it.Resource}
		out[i] = ch
		if i > 0 {
			ch.Err = fmt.Errorf("%w: only one swarm resource per node (also %s)", ErrInvalid, b.Items[0].Key)
			continue
		}
		s := it.Resource.GetSwarm()
		if s == nil {
			ch.Err = fmt.Errorf("%w: %s is not a swarm resource", ErrInvalid, it.Key)
			continue
		}
		d, err := p.plan(ctx, env, s)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ch.Err = err
			continue
		}
		ch.Data = d
		describe(ch, d)
	}
	return out, nil
}

func describe(ch *converge.Change, d *planData) {
	if len(d.steps) == 0 {
		ch.Summary = "swarm membership as desired"
		return
	}
	lines := make([]string, len(d.steps))
	for i, s := range d.steps {
		lines[i] = s.text
	}
	ch.Needed = true
	ch.Summary = lines[0]
	if len(lines) > 1 {
		ch.Summary += fmt.Sprintf(" (+%d more)", len(lines)-1)
	}
	ch.Diff = strings.Join(lines, "\n") + "\n"
}

func desiredRole(s *hivev1.Swarm) (dswarm.NodeRole, error) {
	switch s.GetRole() {
	case hivev1.SwarmRole_SWARM_ROLE_MANAGER:
		return dswarm.NodeRoleManager, nil
	case hivev1.SwarmRole_SWARM_ROLE_WORKER:
		if s.GetInitializer() {
			return "", fmt.Errorf("%w: the initializer must be a manager", ErrInvalid)
		}
		return dswarm.NodeRoleWorker, nil
	}
	return "", fmt.Errorf("%w: role must be manager or worker", ErrInvalid)
}

func (p *Provider) plan(ctx context.Context, env *converge.Env, s *hivev1.Swarm) (*planData, error) {
	role, err := desiredRole(s)
	if err != nil {
		return nil, err
	}
	d := &planData{s: s, advertise: s.GetAdvertiseAddr(), drain: env.SwarmDrain}
	if d.advertise == "" && len(env.Facts.GetAddresses()) > 0 {
		// Facts may carry "10.0.0.5/24": docker wants the address.
		d.advertise, _, _ = strings.Cut(env.Facts.GetAddresses()[0], "/")
	}
	if d.advertise == "" {
		return nil, fmt.Errorf("%w: no advertise address (set advertise_addr or give the node an address)", ErrInvalid)
	}
	for _, n := range s.GetNetworks() {
		if n.GetName() == "" {
			return nil, fmt.Errorf("%w: network without a name", ErrInvalid)
		}
		if n.GetSubnet() != "" {
			if _, err := netip.ParsePrefix(n.GetSubnet()); err != nil {
				return nil, fmt.Errorf("%w: network %s subnet %q: %v", ErrInvalid, n.GetName(), n.GetSubnet(), err)
			}
		}
	}
	if !s.GetInitializer() {
		p.mu.Lock()
		p.services = nil
		p.mu.Unlock()
	}
	if err := p.planEngine(env, s, d); err != nil {
		return nil, err
	}
	if p.cfg.Sandbox {
		what := "join the swarm as " + string(role)
		if s.GetInitializer() {
			what = "init the swarm"
		}
		d.steps = append(d.steps, step{kind: "sandbox", text: fmt.Sprintf("not observed (sandbox root): would %s advertising %s", what, d.advertise)})
		for _, n := range s.GetNetworks() {
			if s.GetInitializer() {
				d.steps = append(d.steps, step{kind: "sandbox", text: "would create overlay network " + n.GetName()})
			}
		}
		if s.GetInitializer() && len(d.drain) > 0 {
			d.steps = append(d.steps, step{kind: "sandbox", text: "would drain swarm nodes " + strings.Join(d.drain, ",")})
		}
		return d, nil
	}
	info, err := p.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, fmt.Errorf("docker info: %w", err)
	}
	sw := info.Info.Swarm
	for _, a := range s.GetManagerAddrs() {
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(a, fmt.Sprint(p.cfg.ListenPort))
		}
		d.managers = append(d.managers, a)
	}
	join := func(reason string) error {
		if s.GetInitializer() {
			d.steps = append(d.steps, step{kind: "init", text: fmt.Sprintf("%sinit swarm advertising %s", reason, d.advertise)})
			d.after = true
			return nil
		}
		if err := p.joinInputs(env, s, d); err != nil {
			return err
		}
		d.steps = append(d.steps, step{kind: "join", role: role, text: fmt.Sprintf("%sjoin swarm as %s via %s advertising %s", reason, role, strings.Join(d.managers, ","), d.advertise)})
		d.after = role == dswarm.NodeRoleManager
		return nil
	}
	switch sw.LocalNodeState {
	case dswarm.LocalNodeStateInactive:
		if err := join(""); err != nil {
			return nil, err
		}
	case dswarm.LocalNodeStatePending:
		d.steps = append(d.steps, step{kind: "leave", force: true, text: "cancel the pending join"})
		if err := join(""); err != nil {
			return nil, err
		}
	case dswarm.LocalNodeStateActive:
		current := dswarm.NodeRoleWorker
		if sw.ControlAvailable {
			current = dswarm.NodeRoleManager
		}
		if current != role {
			d.steps = append(d.steps, step{kind: "leave", force: current == dswarm.NodeRoleManager, text: fmt.Sprintf("leave the swarm (is %s, must be %s)", current, role)})
			if err := join("then "); err != nil {
				return nil, err
			}
			break
		}
		if current == dswarm.NodeRoleManager {
			if err := p.refreshTokens(ctx); err != nil {
				return nil, err
			}
			if s.GetInitializer() {
				if err := p.planManaged(ctx, env, s, d); err != nil {
					return nil, err
				}
			}
		}
	default:
		return nil, fmt.Errorf("%w: local swarm state is %s: %s", ErrState, sw.LocalNodeState, sw.Error)
	}
	return d, nil
}

// joinInputs checks that a joining node has managers and a token.
func (p *Provider) joinInputs(env *converge.Env, s *hivev1.Swarm, d *planData) error {
	if len(d.managers) == 0 {
		return fmt.Errorf("%w: no manager address rendered yet (the swarm has not been initialised)", ErrNoManager)
	}
	name := s.GetJoinTokenSecret()
	tok := strings.TrimSpace(string(env.Secrets[name]))
	if name == "" || tok == "" {
		return fmt.Errorf("%w: secret %q not published yet by the initializer", ErrNoToken, name)
	}
	d.token = tok
	return nil
}

// planManaged plans what the initializer does for the whole swarm: create
// the declared overlay networks, label member nodes, remove nodes that
// left hive's view and are down.
func (p *Provider) planManaged(ctx context.Context, env *converge.Env, s *hivev1.Swarm, d *planData) error {
	for _, n := range s.GetNetworks() {
		st, err := p.planNetwork(ctx, n)
		if err != nil {
			return err
		}
		if st != nil {
			d.steps = append(d.steps, *st)
		}
	}
	nodes, err := p.cli.NodeList(ctx, client.NodeListOptions{})
	if err != nil {
		return fmt.Errorf("list swarm nodes: %w", err)
	}
	members := s.GetMembers()
	if len(members) == 0 {
		// Only this node is known: label it.
		members = []*hivev1.SwarmMember{{Name: "self", Address: d.advertise, Labels: s.GetLabels()}}
	}
	matched := map[string]bool{}
	for _, m := range members {
		node := findNode(nodes.Items, m.GetAddress())
		if node == nil {
			p.log.Debug("swarm member not joined yet", "member", m.GetName(), "address", m.GetAddress())
			continue
		}
		matched[node.ID] = true
		if missing := missingLabels(node.Spec.Labels, m.GetLabels()); len(missing) > 0 {
			d.steps = append(d.steps, step{kind: "label", nodeID: node.ID, labels: m.GetLabels(),
				text: fmt.Sprintf("label node %s (%s): %s", m.GetName(), m.GetAddress(), strings.Join(missing, ", "))})
		}
		if st := availabilityStep(node, m, slices.Contains(d.drain, m.GetName())); st != nil {
			d.steps = append(d.steps, *st)
		}
	}
	if len(s.GetMembers()) > 0 {
		for _, n := range nodes.Items {
			if !matched[n.ID] && n.Status.State == dswarm.NodeStateDown && n.Spec.Role == dswarm.NodeRoleWorker {
				d.steps = append(d.steps, step{kind: "remove", nodeID: n.ID, text: fmt.Sprintf("remove node %s (%s): down and no longer a member", short(n.ID), n.Status.Addr)})
			}
		}
	}
	return p.planServices(ctx, env, s, d)
}

// DrainedLabel marks a swarm node hive drained (maintenance, a
// coordinated reboot): only such nodes are made active again, so a drain
// an operator set by hand stays.
const DrainedLabel = "hive.drained"

// availabilityStep plans draining a member the coordinators hold out of
// service, or making one hive drained active again; nil when it is as it
// should be.
func availabilityStep(node *dswarm.Node, m *hivev1.SwarmMember, drain bool) *step {
	switch {
	case drain && node.Spec.Availability != dswarm.NodeAvailabilityDrain:
		// (Drained already, by hand: left unmarked, so it stays drained after.)
		return &step{kind: "availability", nodeID: node.ID, drain: true,
			text: fmt.Sprintf("drain node %s (%s): in maintenance or rebooting", m.GetName(), m.GetAddress())}
	case !drain && node.Spec.Labels[DrainedLabel] == "true":
		return &step{kind: "availability", nodeID: node.ID,
			text: fmt.Sprintf("make node %s (%s) active again", m.GetName(), m.GetAddress())}
	}
	return nil
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// findNode matches a member address to a swarm node by its status address
// or, for managers, the address of its manager endpoint.
func findNode(nodes []dswarm.Node, addr string) *dswarm.Node {
	var down *dswarm.Node
	for i := range nodes {
		n := &nodes[i]
		hit := n.Status.Addr == addr
		if !hit && n.ManagerStatus != nil {
			if h, _, err := net.SplitHostPort(n.ManagerStatus.Addr); err == nil && h == addr {
				hit = true
			}
		}
		if !hit {
			continue
		}
		// A node that left and rejoined appears twice; prefer the live one.
		if n.Status.State != dswarm.NodeStateDown {
			return n
		}
		down = n
	}
	return down
}

// missingLabels lists the "k=v" of want that have lacks or holds with
// another value, sorted.
func missingLabels(have, want map[string]string) []string {
	var out []string
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			out = append(out, k+"="+v)
		}
	}
	sort.Strings(out)
	return out
}

func (p *Provider) planNetwork(ctx context.Context, n *hivev1.SwarmNetwork) (*step, error) {
	res, err := p.cli.NetworkInspect(ctx, n.GetName(), client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		desc := "create overlay network " + n.GetName()
		if n.GetSubnet() != "" {
			desc += " " + n.GetSubnet()
		}
		if n.GetAttachable() {
			desc += " attachable"
		}
		if n.GetEncrypted() {
			desc += " encrypted"
		}
		return &step{kind: "network", network: n, text: desc}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect network %s: %w", n.GetName(), err)
	}
	got := res.Network
	var diffs []string
	if got.Driver != "overlay" {
		diffs = append(diffs, fmt.Sprintf("driver %s, want overlay", got.Driver))
	}
	if got.Attachable != n.GetAttachable() {
		diffs = append(diffs, fmt.Sprintf("attachable %v, want %v", got.Attachable, n.GetAttachable()))
	}
	if _, enc := got.Options["encrypted"]; enc != n.GetEncrypted() {
		diffs = append(diffs, fmt.Sprintf("encrypted %v, want %v", enc, n.GetEncrypted()))
	}
	if n.GetSubnet() != "" {
		var subnets []string
		for _, c := range got.IPAM.Config {
			subnets = append(subnets, c.Subnet.String())
		}
		if len(subnets) != 1 || subnets[0] != n.GetSubnet() {
			diffs = append(diffs, fmt.Sprintf("subnets %v, want %s", subnets, n.GetSubnet()))
		}
	}
	if len(diffs) > 0 {
		return nil, fmt.Errorf("%w: %s: %s (remove it by hand to let hive recreate it)", ErrNetworkMismatch, n.GetName(), strings.Join(diffs, "; "))
	}
	return nil, nil
}

func (p *Provider) refreshTokens(ctx context.Context) error {
	res, err := p.cli.SwarmInspect(ctx, client.SwarmInspectOptions{})
	if err != nil {
		return fmt.Errorf("inspect swarm: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published = map[string][]byte{
		PublishedWorkerToken:  []byte(res.Swarm.JoinTokens.Worker),
		PublishedManagerToken: []byte(res.Swarm.JoinTokens.Manager),
	}
	return nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	if p.cfg.Sandbox {
		return ErrSandbox
	}
	for _, ch := range changes {
		d, ok := ch.Data.(*planData)
		if !ok || ch.Err != nil {
			continue
		}
		ch.Err = p.apply(ctx, env, d)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if d.s.GetInitializer() {
			p.refreshServices(ctx)
		}
	}
	return nil
}

func (p *Provider) apply(ctx context.Context, env *converge.Env, d *planData) error {
	for _, st := range d.steps {
		if err := p.do(ctx, env, d, st); err != nil {
			return err
		}
	}
	if !d.after {
		return nil
	}
	// Just initialised or joined as a manager: tokens, and for the
	// initializer networks and labels, now that the swarm exists.
	if err := p.refreshTokens(ctx); err != nil {
		return err
	}
	if !d.s.GetInitializer() {
		return nil
	}
	more := &planData{s: d.s, advertise: d.advertise, drain: d.drain}
	if err := p.planManaged(ctx, env, d.s, more); err != nil {
		return err
	}
	for _, st := range more.steps {
		if err := p.do(ctx, env, more, st); err != nil {
			return err
		}
	}
	return nil
}

func (p *Provider) do(ctx context.Context, env *converge.Env, d *planData, st step) error {
	switch st.kind {
	case "note":
	case "engine":
		return p.applyEngine(ctx, env, st)
	case "leave":
		if _, err := p.cli.SwarmLeave(ctx, client.SwarmLeaveOptions{Force: st.force}); err != nil {
			return fmt.Errorf("leave swarm: %w", err)
		}
		p.forget()
		_ = removeMarker(env)
	case "init":
		// The initializer can change (a new lower-named node with init):
		// never start a second swarm next to one whose manager answers.
		if len(d.managers) > 0 && p.reachable(ctx, d.managers) == nil {
			return fmt.Errorf("%w: a swarm manager already answers at %s; refusing to initialise a second swarm (drop init from this node or let it join)", ErrState, strings.Join(d.managers, ","))
		}
		res, err := p.cli.SwarmInit(ctx, client.SwarmInitOptions{
			ListenAddr:    fmt.Sprintf("0.0.0.0:%d", p.cfg.ListenPort),
			AdvertiseAddr: d.advertise,
		})
		if err != nil {
			return fmt.Errorf("init swarm advertising %s: %w", d.advertise, err)
		}
		p.log.Info("swarm initialised", "node", res.NodeID, "advertise", d.advertise)
		return writeMarker(env, res.NodeID)
	case "join":
		if err := p.reachable(ctx, d.managers); err != nil {
			return err
		}
		_, err := p.cli.SwarmJoin(ctx, client.SwarmJoinOptions{
			ListenAddr:    fmt.Sprintf("0.0.0.0:%d", p.cfg.ListenPort),
			AdvertiseAddr: d.advertise,
			RemoteAddrs:   d.managers,
			JoinToken:     d.token,
		})
		if err != nil {
			// Never leave the engine retrying a join in the background.
			if info, ierr := p.cli.Info(ctx, client.InfoOptions{}); ierr == nil && info.Info.Swarm.LocalNodeState == dswarm.LocalNodeStatePending {
				_, _ = p.cli.SwarmLeave(ctx, client.SwarmLeaveOptions{Force: true})
			}
			return fmt.Errorf("join swarm via %s: %w", strings.Join(d.managers, ","), err)
		}
		info, err := p.cli.Info(ctx, client.InfoOptions{})
		if err != nil {
			return fmt.Errorf("docker info after join: %w", err)
		}
		p.log.Info("swarm joined", "node", info.Info.Swarm.NodeID, "role", st.role, "managers", d.managers)
		return writeMarker(env, info.Info.Swarm.NodeID)
	case "network":
		n := st.network
		opts := client.NetworkCreateOptions{Driver: "overlay", Scope: "swarm", Attachable: n.GetAttachable(), Labels: map[string]string{"hive.managed": "true"}}
		if n.GetEncrypted() {
			opts.Options = map[string]string{"encrypted": ""}
		}
		if n.GetSubnet() != "" {
			pfx, _ := netip.ParsePrefix(n.GetSubnet())
			opts.IPAM = &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: pfx}}}
		}
		if _, err := p.cli.NetworkCreate(ctx, n.GetName(), opts); err != nil {
			return fmt.Errorf("create network %s: %w", n.GetName(), err)
		}
		p.log.Info("swarm network created", "network", n.GetName())
	case "label":
		res, err := p.cli.NodeInspect(ctx, st.nodeID, client.NodeInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect node %s: %w", short(st.nodeID), err)
		}
		spec := res.Node.Spec
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		for k, v := range st.labels {
			spec.Labels[k] = v
		}
		if _, err := p.cli.NodeUpdate(ctx, st.nodeID, client.NodeUpdateOptions{Version: res.Node.Version, Spec: spec}); err != nil {
			return fmt.Errorf("label node %s: %w", short(st.nodeID), err)
		}
	case "availability":
		res, err := p.cli.NodeInspect(ctx, st.nodeID, client.NodeInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect node %s: %w", short(st.nodeID), err)
		}
		spec := res.Node.Spec
		if spec.Labels == nil {
			spec.Labels = map[string]string{}
		}
		if st.drain {
			spec.Availability = dswarm.NodeAvailabilityDrain
			spec.Labels[DrainedLabel] = "true"
		} else {
			spec.Availability = dswarm.NodeAvailabilityActive
			delete(spec.Labels, DrainedLabel)
		}
		if _, err := p.cli.NodeUpdate(ctx, st.nodeID, client.NodeUpdateOptions{Version: res.Node.Version, Spec: spec}); err != nil {
			return fmt.Errorf("set availability of node %s: %w", short(st.nodeID), err)
		}
	case "remove":
		if _, err := p.cli.NodeRemove(ctx, st.nodeID, client.NodeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove node %s: %w", short(st.nodeID), err)
		}
	default:
		return p.doService(ctx, st)
	}
	return nil
}

// reachable fails with ErrNoManager unless one manager accepts a TCP
// connection: joining through an engine whose managers are all down would
// leave it retrying in the background.
func (p *Provider) reachable(ctx context.Context, managers []string) error {
	var errs []string
	for _, m := range managers {
		dctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		c, err := p.cfg.Dial(dctx, "tcp", m)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err.Error())
	}
	return fmt.Errorf("%w: %s", ErrNoManager, strings.Join(errs, "; "))
}

func (p *Provider) forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published = nil
}

type marker struct {
	NodeID string `json:"node_id"`
}

func writeMarker(env *converge.Env, nodeID string) error {
	path, err := env.Path(MarkerPath)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(marker{NodeID: nodeID})
	if err := atomicfile.Write(path, data, atomicfile.Options{Perm: 0o644, MkdirPerm: 0o755}); err != nil {
		return fmt.Errorf("write swarm marker: %w", err)
	}
	return nil
}

func readMarker(env *converge.Env) (string, error) {
	path, err := env.Path(MarkerPath)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read swarm marker: %w", err)
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil {
		return "", fmt.Errorf("read swarm marker %s: %w", path, err)
	}
	return m.NodeID, nil
}

func removeMarker(env *converge.Env) error {
	path, err := env.Path(MarkerPath)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove swarm marker: %w", err)
	}
	return nil
}

// Prune plans leaving the swarm when the node has no swarm resource any
// more (present is empty) and is still the swarm node hive created (the
// marker file names it). A manager leaves with force. Apply carries it
// out. (Optional converge interface: Prune(ctx, env, present).)
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if len(present) > 0 || p.cfg.Sandbox {
		return nil, nil
	}
	id, err := readMarker(env)
	if err != nil || id == "" {
		return nil, err
	}
	info, err := p.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return nil, fmt.Errorf("docker info: %w", err)
	}
	sw := info.Info.Swarm
	if sw.LocalNodeState == dswarm.LocalNodeStateInactive || sw.NodeID != id {
		// Left already, or a swarm hive did not create: nothing to do
		// (Prune must not modify the host; a stale marker names a node
		// that no longer exists and is overwritten by the next join).
		return nil, nil
	}
	st := step{kind: "leave", force: sw.ControlAvailable, text: "leave the swarm (no swarm role any more)"}
	d := &planData{s: &hivev1.Swarm{}, steps: []step{st}}
	ch := &converge.Change{Key: converge.KindSwarm + ":node", Data: d}
	describe(ch, d)
	return []*converge.Change{ch}, nil
}
