package swarm

// Swarm services, deployed by the initializer (the site's `services:`,
// rendered into Swarm.services). Everything hive creates carries
// LabelManaged; a service also carries LabelSpec, the sha256 of the spec
// hive built for it, so that an unchanged service is never updated (an
// update restarts its tasks); its image and replica count are compared
// too, so that `docker service update --image` or `docker service scale`
// by hand (which keep the labels) are put back. Services,
// secrets and configs without LabelManaged are never touched; a desired
// service whose name is taken by one of them fails with ErrNotHive.
//
// Secrets and configs are immutable in a swarm: each is created under a
// name derived from its content ("hive-NAME-<12 hex of sha256>"), so a
// changed value makes a new one, the service is updated to it, and the old
// one is removed once no desired service uses it.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Labels hive puts on the swarm objects it creates.
const (
	LabelManaged = "hive.managed" // "true"
	LabelSpec    = "hive.spec"    // sha256 of the service spec hive built
	LabelName    = "hive.name"    // the hive secret, or "SERVICE:TARGET" of a config
)

// ErrNotHive is wrapped when a desired service's name is taken by a
// service hive did not create (it is never taken over).
var ErrNotHive = errors.New("swarm service exists and was not created by hive")

// ErrSecret is wrapped when a service's hive secret has no value on the
// node (not set yet with `hivectl secret set`).
var ErrSecret = errors.New("service secret has no value")

// MaxServiceStatus bounds the services Services returns (and the agent
// reports).
const MaxServiceStatus = 256

// svcObject is a secret or config to create.
type svcObject struct {
	name   string
	label  string // LabelName value
	data   []byte
	config bool
}

// desiredService is one service as hive builds it.
type desiredService struct {
	name string
	spec dswarm.ServiceSpec
	hash string
}

func objName(kind, name string, data []byte) string {
	sum := sha256.Sum256(data)
	n := strings.NewReplacer("/", "-", ":", "-").Replace(name)
	if len(n) > 40 {
		n = n[:40]
	}
	return "hive-" + kind + "-" + n + "-" + hex.EncodeToString(sum[:6])
}

// imageRef is the reference the engine pulls: the pinned digest when the
// coordinator resolved one.
func imageRef(s *hivev1.SwarmService) string {
	img := s.GetImage()
	if dg := s.GetDigest(); dg != "" && !strings.Contains(img, "@") {
		return img + "@" + dg
	}
	return img
}

func durPtr(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}

// buildService turns a site service into the engine's spec, with the
// secrets and configs it needs.
func buildService(env *converge.Env, s *hivev1.SwarmService) (*desiredService, []svcObject, error) {
	var objs []svcObject
	cs := &dswarm.ContainerSpec{
		Image:   imageRef(s),
		Command: s.GetEntrypoint(),
		Args:    s.GetCommand(),
		Labels:  map[string]string{LabelManaged: "true"},
	}
	for _, k := range sortedKeys(s.GetEnv()) {
		cs.Env = append(cs.Env, k+"="+s.GetEnv()[k])
	}
	for _, sec := range s.GetSecrets() {
		val, ok := env.Secrets[sec.GetSecret()]
		if !ok {
			return nil, nil, fmt.Errorf("%w: service %s: secret %q (set it with hivectl secret set)", ErrSecret, s.GetName(), sec.GetSecret())
		}
		o := svcObject{name: objName("secret", sec.GetSecret(), val), label: sec.GetSecret(), data: val}
		objs = append(objs, o)
		target, mode := sec.GetTarget(), os.FileMode(sec.GetMode())
		if target == "" {
			target = sec.GetSecret()
		}
		if mode == 0 {
			mode = 0o444
		}
		cs.Secrets = append(cs.Secrets, &dswarm.SecretReference{SecretName: o.name, File: &dswarm.SecretReferenceFileTarget{Name: target, UID: "0", GID: "0", Mode: mode}})
	}
	for _, c := range s.GetConfigs() {
		o := svcObject{name: objName("config", s.GetName()+":"+c.GetTarget(), []byte(c.GetContent())), label: s.GetName() + ":" + c.GetTarget(), data: []byte(c.GetContent()), config: true}
		objs = append(objs, o)
		mode := os.FileMode(c.GetMode())
		if mode == 0 {
			mode = 0o444
		}
		cs.Configs = append(cs.Configs, &dswarm.ConfigReference{ConfigName: o.name, File: &dswarm.ConfigReferenceFileTarget{Name: c.GetTarget(), UID: "0", GID: "0", Mode: mode}})
	}
	for _, m := range s.GetMounts() {
		mt := mount.Mount{Source: m.GetSource(), Target: m.GetTarget(), ReadOnly: m.GetReadOnly()}
		switch m.GetType() {
		case "volume":
			mt.Type = mount.TypeVolume
		case "bind":
			mt.Type = mount.TypeBind
		case "tmpfs":
			mt.Type = mount.TypeTmpfs
		default:
			return nil, nil, fmt.Errorf("%w: service %s: mount type %q", ErrInvalid, s.GetName(), m.GetType())
		}
		cs.Mounts = append(cs.Mounts, mt)
	}
	if h := s.GetHealthcheck(); h != nil && len(h.GetTest()) > 0 {
		cs.Healthcheck = &container.HealthConfig{
			Test: h.GetTest(), Interval: h.GetInterval().AsDuration(), Timeout: h.GetTimeout().AsDuration(),
			StartPeriod: h.GetStartPeriod().AsDuration(), Retries: int(h.GetRetries()),
		}
	}
	task := dswarm.TaskSpec{ContainerSpec: cs}
	if r := s.GetResources(); r != nil {
		task.Resources = &dswarm.ResourceRequirements{}
		if r.GetCpuLimit() > 0 || r.GetMemoryLimit() > 0 {
			task.Resources.Limits = &dswarm.Limit{NanoCPUs: int64(r.GetCpuLimit() * 1e9), MemoryBytes: int64(r.GetMemoryLimit())}
		}
		if r.GetCpuReservation() > 0 || r.GetMemoryReservation() > 0 {
			task.Resources.Reservations = &dswarm.Resources{NanoCPUs: int64(r.GetCpuReservation() * 1e9), MemoryBytes: int64(r.GetMemoryReservation())}
		}
	}
	if rp := s.GetRestart(); rp != nil {
		task.RestartPolicy = &dswarm.RestartPolicy{Condition: dswarm.RestartPolicyCondition(rp.GetCondition()), Delay: durPtr(rp.GetDelay().AsDuration()), Window: durPtr(rp.GetWindow().AsDuration())}
		if n := uint64(rp.GetMaxAttempts()); n > 0 {
			task.RestartPolicy.MaxAttempts = &n
		}
	}
	if len(s.GetConstraints()) > 0 || len(s.GetSpread()) > 0 {
		task.Placement = &dswarm.Placement{Constraints: s.GetConstraints()}
		for _, sp := range s.GetSpread() {
			task.Placement.Preferences = append(task.Placement.Preferences, dswarm.PlacementPreference{Spread: &dswarm.SpreadOver{SpreadDescriptor: sp}})
		}
	}
	for _, n := range s.GetNetworks() {
		task.Networks = append(task.Networks, dswarm.NetworkAttachmentConfig{Target: n})
	}
	spec := dswarm.ServiceSpec{
		Annotations:  dswarm.Annotations{Name: s.GetName(), Labels: map[string]string{}},
		TaskTemplate: task,
	}
	for k, v := range s.GetLabels() {
		spec.Labels[k] = v
	}
	switch s.GetMode() {
	case "global":
		spec.Mode.Global = &dswarm.GlobalService{}
	default:
		n := uint64(s.GetReplicas())
		spec.Mode.Replicated = &dswarm.ReplicatedService{Replicas: &n}
	}
	spec.UpdateConfig = updateConfig(s.GetUpdate())
	spec.RollbackConfig = updateConfig(s.GetRollback())
	if len(s.GetPorts()) > 0 {
		spec.EndpointSpec = &dswarm.EndpointSpec{Mode: dswarm.ResolutionModeVIP}
		for _, p := range s.GetPorts() {
			proto, mode := p.GetProtocol(), p.GetMode()
			if proto == "" {
				proto = "tcp"
			}
			if mode == "" {
				mode = "ingress"
			}
			spec.EndpointSpec.Ports = append(spec.EndpointSpec.Ports, dswarm.PortConfig{
				Protocol: network.IPProtocol(proto), TargetPort: p.GetTarget(), PublishedPort: p.GetPublished(), PublishMode: dswarm.PortConfigPublishMode(mode),
			})
		}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("service %s: encode spec: %w", s.GetName(), err)
	}
	sum := sha256.Sum256(b)
	d := &desiredService{name: s.GetName(), spec: spec, hash: hex.EncodeToString(sum[:])}
	d.spec.Labels[LabelManaged] = "true"
	d.spec.Labels[LabelSpec] = d.hash
	return d, objs, nil
}

func updateConfig(u *hivev1.SwarmServiceUpdate) *dswarm.UpdateConfig {
	if u == nil {
		return nil
	}
	return &dswarm.UpdateConfig{
		Parallelism: uint64(u.GetParallelism()), Delay: u.GetDelay().AsDuration(),
		FailureAction: dswarm.FailureAction(u.GetFailureAction()), Monitor: u.GetMonitor().AsDuration(),
		MaxFailureRatio: float32(u.GetMaxFailureRatio()), Order: dswarm.UpdateOrder(u.GetOrder()),
	}
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// planServices plans the services of the initializer: create what is
// missing, update what hive created whose LabelSpec differs, remove what
// hive created that the site no longer has; secrets and configs first,
// unused hive ones last.
func (p *Provider) planServices(ctx context.Context, env *converge.Env, s *hivev1.Swarm, d *planData) error {
	var want []*desiredService
	objs := map[string]svcObject{}
	for _, svc := range s.GetServices() {
		ds, o, err := buildService(env, svc)
		if err != nil {
			return err
		}
		want = append(want, ds)
		for _, ob := range o {
			objs[ob.name] = ob
		}
	}
	list, err := p.cli.ServiceList(ctx, client.ServiceListOptions{Status: true})
	if err != nil {
		return fmt.Errorf("list swarm services: %w", err)
	}
	p.noteServices(list.Items)
	byName := map[string]dswarm.Service{}
	for _, sv := range list.Items {
		byName[sv.Spec.Name] = sv
	}
	// Secrets and configs.
	secrets, err := p.cli.SecretList(ctx, client.SecretListOptions{})
	if err != nil {
		return fmt.Errorf("list swarm secrets: %w", err)
	}
	configs, err := p.cli.ConfigList(ctx, client.ConfigListOptions{})
	if err != nil {
		return fmt.Errorf("list swarm configs: %w", err)
	}
	have := map[string]bool{}
	var unused []step
	for _, sc := range secrets.Items {
		have[sc.Spec.Name] = true
		if _, ok := objs[sc.Spec.Name]; !ok && sc.Spec.Labels[LabelManaged] == "true" {
			unused = append(unused, step{kind: "secret-remove", nodeID: sc.ID, text: "remove unused swarm secret " + sc.Spec.Name})
		}
	}
	for _, c := range configs.Items {
		have[c.Spec.Name] = true
		if _, ok := objs[c.Spec.Name]; !ok && c.Spec.Labels[LabelManaged] == "true" {
			unused = append(unused, step{kind: "config-remove", nodeID: c.ID, text: "remove unused swarm config " + c.Spec.Name})
		}
	}
	names := make([]string, 0, len(objs))
	for n := range objs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if have[n] {
			continue
		}
		o := objs[n]
		what := "secret"
		if o.config {
			what = "config"
		}
		// The text names the hive secret, never its value.
		d.steps = append(d.steps, step{kind: what + "-create", obj: o, text: fmt.Sprintf("create swarm %s %s (%s)", what, o.name, o.label)})
	}
	wanted := map[string]bool{}
	for _, ds := range want {
		wanted[ds.name] = true
		cur, ok := byName[ds.name]
		switch {
		case !ok:
			d.steps = append(d.steps, step{kind: "service-create", svc: ds, text: fmt.Sprintf("create service %s (%s)", ds.name, ds.spec.TaskTemplate.ContainerSpec.Image)})
		case cur.Spec.Labels[LabelManaged] != "true":
			return fmt.Errorf("%w: %s (remove or rename it by hand, or rename the site's service)", ErrNotHive, ds.name)
		default:
			if what := serviceDiff(cur, ds); what != "" {
				d.steps = append(d.steps, step{kind: "service-update", svc: ds, nodeID: cur.ID, text: fmt.Sprintf("update service %s (%s)", ds.name, what)})
			}
		}
	}
	var gone []string
	for name, sv := range byName {
		if !wanted[name] && sv.Spec.Labels[LabelManaged] == "true" {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		d.steps = append(d.steps, step{kind: "service-remove", nodeID: byName[name].ID, text: "remove service " + name + " (no longer in the site)"})
	}
	d.steps = append(d.steps, unused...)
	return nil
}

// serviceDiff says why a hive service must be updated, or "": its
// LabelSpec differs from the spec hive builds (the site, a secret or a
// config changed), or, with the same label, its image or replica count
// was changed by hand (`docker service update --image`, `docker service
// scale` keep the labels).
func serviceDiff(cur dswarm.Service, ds *desiredService) string {
	want := ds.spec.TaskTemplate.ContainerSpec.Image
	img := ""
	if cs := cur.Spec.TaskTemplate.ContainerSpec; cs != nil {
		img = cs.Image
	}
	if cur.Spec.Labels[LabelSpec] != ds.hash {
		if img != want {
			return "image " + want
		}
		return "spec changed"
	}
	if img != want {
		return fmt.Sprintf("image %s changed by hand, want %s", img, want)
	}
	if r, w := cur.Spec.Mode.Replicated, ds.spec.Mode.Replicated; r != nil && w != nil && r.Replicas != nil && *r.Replicas != *w.Replicas {
		return fmt.Sprintf("scaled by hand to %d, want %d", *r.Replicas, *w.Replicas)
	}
	return ""
}

// doService carries out a service step.
func (p *Provider) doService(ctx context.Context, st step) error {
	switch st.kind {
	case "secret-create":
		_, err := p.cli.SecretCreate(ctx, client.SecretCreateOptions{Spec: dswarm.SecretSpec{
			Annotations: dswarm.Annotations{Name: st.obj.name, Labels: map[string]string{LabelManaged: "true", LabelName: st.obj.label}},
			Data:        st.obj.data,
		}})
		if err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsAlreadyExists(err) {
			return fmt.Errorf("create swarm secret %s: %w", st.obj.name, err)
		}
	case "config-create":
		_, err := p.cli.ConfigCreate(ctx, client.ConfigCreateOptions{Spec: dswarm.ConfigSpec{
			Annotations: dswarm.Annotations{Name: st.obj.name, Labels: map[string]string{LabelManaged: "true", LabelName: st.obj.label}},
			Data:        st.obj.data,
		}})
		if err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsAlreadyExists(err) {
			return fmt.Errorf("create swarm config %s: %w", st.obj.name, err)
		}
	case "service-create":
		if _, err := p.cli.ServiceCreate(ctx, client.ServiceCreateOptions{Spec: st.svc.spec}); err != nil {
			return fmt.Errorf("create service %s: %w", st.svc.name, err)
		}
		p.log.Info("swarm service created", "service", st.svc.name, "image", st.svc.spec.TaskTemplate.ContainerSpec.Image)
	case "service-update":
		cur, err := p.cli.ServiceInspect(ctx, st.nodeID, client.ServiceInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect service %s: %w", st.svc.name, err)
		}
		if _, err := p.cli.ServiceUpdate(ctx, st.nodeID, client.ServiceUpdateOptions{Version: cur.Service.Version, Spec: st.svc.spec}); err != nil {
			return fmt.Errorf("update service %s: %w", st.svc.name, err)
		}
		p.log.Info("swarm service updated", "service", st.svc.name, "image", st.svc.spec.TaskTemplate.ContainerSpec.Image)
	case "service-remove":
		if _, err := p.cli.ServiceRemove(ctx, st.nodeID, client.ServiceRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("remove service %s: %w", short(st.nodeID), err)
		}
		p.log.Info("swarm service removed", "service", st.text)
	case "secret-remove", "config-remove":
		var err error
		if st.kind == "secret-remove" {
			_, err = p.cli.SecretRemove(ctx, st.nodeID, client.SecretRemoveOptions{})
		} else {
			_, err = p.cli.ConfigRemove(ctx, st.nodeID, client.ConfigRemoveOptions{})
		}
		// Still referenced (a task of a removed service shutting down):
		// removed by a later run.
		if err != nil && !cerrdefs.IsNotFound(err) {
			p.log.Debug("swarm object not removed yet", "step", st.text, "err", err)
		}
	default:
		return fmt.Errorf("swarm: unknown step %q", st.kind)
	}
	return nil
}

// noteServices keeps the status of the hive-managed services for
// Services.
func (p *Provider) noteServices(items []dswarm.Service) {
	var out []*hivev1.SwarmServiceStatus
	for _, sv := range items {
		if sv.Spec.Labels[LabelManaged] != "true" {
			continue
		}
		st := &hivev1.SwarmServiceStatus{Name: sv.Spec.Name}
		if sv.ServiceStatus != nil {
			st.Running, st.Desired = uint32(min(sv.ServiceStatus.RunningTasks, 1<<31)), uint32(min(sv.ServiceStatus.DesiredTasks, 1<<31))
		}
		if cs := sv.Spec.TaskTemplate.ContainerSpec; cs != nil {
			st.Image = cs.Image
		}
		if sv.UpdateStatus != nil {
			st.UpdateState = string(sv.UpdateStatus.State)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) > MaxServiceStatus {
		out = out[:MaxServiceStatus]
	}
	p.mu.Lock()
	p.services = out
	p.mu.Unlock()
}

// refreshServices re-reads the services' task counts (after an apply, so
// the report shows the counts of this run).
func (p *Provider) refreshServices(ctx context.Context) {
	list, err := p.cli.ServiceList(ctx, client.ServiceListOptions{Status: true})
	if err == nil {
		p.noteServices(list.Items)
	}
}

// Services returns the hive-managed swarm services and their task counts
// as last observed (on the initializer; nil elsewhere). The agent copies
// them into Report.services. Safe from any goroutine.
func (p *Provider) Services() []*hivev1.SwarmServiceStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.services
}
