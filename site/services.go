package site

import (
	"fmt"
	"math"
	"net"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Bounds of the services section.
const (
	// MaxServices bounds the services of a site.
	MaxServices = 256
	// MaxServiceReplicas bounds replicas of one service.
	MaxServiceReplicas = 10000
	// MaxServiceConfigBytes bounds one config's content (swarm's own
	// limit is 500 KiB).
	MaxServiceConfigBytes = 500 << 10
	// MaxServiceList bounds each list of a service (ports, mounts, env,
	// secrets, configs, networks, constraints, labels, command words).
	MaxServiceList = 256
)

var (
	serviceNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	digestRE      = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// services decodes the top-level services mapping:
//
//	services:
//	  web:
//	    image: 10.0.0.5:5000/site/web:v1
//	    replicas: 2
//	    ports: [{target: 8080, published: 80}]
func (d *decoder) services(n *yaml.Node, p string) []*hivev1.SwarmService {
	var out []*hivev1.SwarmService
	d.entries(n, p, func(name string, k, v *yaml.Node, sp string) {
		svc := d.service1(name, v, sp)
		if svc != nil {
			svc.Source = fmt.Sprintf("%s:%d:%d", d.file, k.Line, k.Column)
			out = append(out, svc)
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *decoder) service1(name string, n *yaml.Node, p string) *hivev1.SwarmService {
	s := &hivev1.SwarmService{Name: name}
	ok := d.mapping(n, p,
		field{"image", func(v *yaml.Node, fp string) { s.Image = d.str(v, fp) }},
		field{"mode", func(v *yaml.Node, fp string) { s.Mode = d.oneOf(v, fp, "replicated", "global") }},
		field{"replicas", func(v *yaml.Node, fp string) { s.Replicas = d.uint32In(v, fp, 0, MaxServiceReplicas) }},
		field{"command", func(v *yaml.Node, fp string) { s.Command = d.strList(v, fp) }},
		field{"entrypoint", func(v *yaml.Node, fp string) { s.Entrypoint = d.strList(v, fp) }},
		field{"env", func(v *yaml.Node, fp string) { s.Env = d.strMap(v, fp) }},
		field{"secrets", func(v *yaml.Node, fp string) {
			d.list(v, fp, func(_ int, item *yaml.Node, ip string) {
				sec := &hivev1.SwarmServiceSecret{}
				if it := resolve(item); it.Kind == yaml.ScalarNode {
					sec.Secret = d.str(it, ip)
				} else if !d.mapping(item, ip,
					field{"secret", func(v *yaml.Node, p string) { sec.Secret = d.str(v, p) }},
					field{"target", func(v *yaml.Node, p string) { sec.Target = d.str(v, p) }},
					field{"mode", func(v *yaml.Node, p string) { sec.Mode = d.fileMode(v, p) }},
				) {
					return
				} else {
					d.required(item, ip, "secret", sec.Secret)
				}
				s.Secrets = append(s.Secrets, sec)
			})
		}},
		field{"configs", func(v *yaml.Node, fp string) {
			d.list(v, fp, func(_ int, item *yaml.Node, ip string) {
				c := &hivev1.SwarmServiceConfig{}
				if !d.mapping(item, ip,
					field{"target", func(v *yaml.Node, p string) { c.Target = d.str(v, p) }},
					field{"content", func(v *yaml.Node, p string) { c.Content = d.str(v, p) }},
					field{"mode", func(v *yaml.Node, p string) { c.Mode = d.fileMode(v, p) }},
				) {
					return
				}
				d.required(item, ip, "target", c.Target)
				s.Configs = append(s.Configs, c)
			})
		}},
		field{"ports", func(v *yaml.Node, fp string) {
			d.list(v, fp, func(_ int, item *yaml.Node, ip string) {
				pt := &hivev1.SwarmServicePort{}
				if !d.mapping(item, ip,
					field{"target", func(v *yaml.Node, p string) { pt.Target = d.uint32In(v, p, 1, 65535) }},
					field{"published", func(v *yaml.Node, p string) { pt.Published = d.uint32In(v, p, 1, 65535) }},
					field{"protocol", func(v *yaml.Node, p string) { pt.Protocol = d.oneOf(v, p, "tcp", "udp", "sctp") }},
					field{"mode", func(v *yaml.Node, p string) { pt.Mode = d.oneOf(v, p, "ingress", "host") }},
				) {
					return
				}
				if pt.Target == 0 && !d.errPaths[ip+".target"] {
					d.required(item, ip, "target", "")
				}
				s.Ports = append(s.Ports, pt)
			})
		}},
		field{"mounts", func(v *yaml.Node, fp string) {
			d.list(v, fp, func(_ int, item *yaml.Node, ip string) {
				m := &hivev1.SwarmServiceMount{}
				var kinds []string
				var tmpfs bool
				if !d.mapping(item, ip,
					field{"volume", func(v *yaml.Node, p string) { m.Source = d.str(v, p); kinds = append(kinds, "volume") }},
					field{"bind", func(v *yaml.Node, p string) { m.Source = d.str(v, p); kinds = append(kinds, "bind") }},
					field{"tmpfs", func(v *yaml.Node, p string) {
						if tmpfs = d.boolean(v, p); tmpfs {
							kinds = append(kinds, "tmpfs")
						}
					}},
					field{"target", func(v *yaml.Node, p string) { m.Target = d.str(v, p) }},
					field{"read_only", func(v *yaml.Node, p string) { m.ReadOnly = d.boolean(v, p) }},
				) {
					return
				}
				if len(kinds) != 1 {
					d.errorf(item, ip, "a mount needs exactly one of volume: NAME, bind: PATH or tmpfs: true")
				} else {
					m.Type = kinds[0]
				}
				d.required(item, ip, "target", m.Target)
				s.Mounts = append(s.Mounts, m)
			})
		}},
		field{"networks", func(v *yaml.Node, fp string) { s.Networks = d.strList(v, fp) }},
		field{"placement", func(v *yaml.Node, fp string) {
			d.mapping(v, fp,
				field{"constraints", func(v *yaml.Node, p string) { s.Constraints = d.strList(v, p) }},
				field{"spread", func(v *yaml.Node, p string) { s.Spread = d.strList(v, p) }},
			)
		}},
		field{"resources", func(v *yaml.Node, fp string) {
			r := &hivev1.SwarmServiceResources{}
			if d.mapping(v, fp,
				field{"cpus", func(v *yaml.Node, p string) { r.CpuLimit = d.cpus(v, p) }},
				field{"memory", func(v *yaml.Node, p string) { r.MemoryLimit = d.bytes(v, p) }},
				field{"reserve_cpus", func(v *yaml.Node, p string) { r.CpuReservation = d.cpus(v, p) }},
				field{"reserve_memory", func(v *yaml.Node, p string) { r.MemoryReservation = d.bytes(v, p) }},
			) {
				s.Resources = r
			}
		}},
		field{"healthcheck", func(v *yaml.Node, fp string) {
			h := &hivev1.SwarmServiceHealthcheck{}
			if d.mapping(v, fp,
				field{"test", func(v *yaml.Node, p string) { h.Test = d.strList(v, p) }},
				field{"interval", func(v *yaml.Node, p string) { h.Interval = d.dur(v, p) }},
				field{"timeout", func(v *yaml.Node, p string) { h.Timeout = d.dur(v, p) }},
				field{"retries", func(v *yaml.Node, p string) { h.Retries = d.uint32In(v, p, 0, 100) }},
				field{"start_period", func(v *yaml.Node, p string) { h.StartPeriod = d.dur(v, p) }},
			) {
				s.Healthcheck = h
			}
		}},
		field{"restart", func(v *yaml.Node, fp string) {
			r := &hivev1.SwarmServiceRestart{}
			if d.mapping(v, fp,
				field{"condition", func(v *yaml.Node, p string) { r.Condition = d.oneOf(v, p, "any", "on-failure", "none") }},
				field{"delay", func(v *yaml.Node, p string) { r.Delay = d.dur(v, p) }},
				field{"max_attempts", func(v *yaml.Node, p string) { r.MaxAttempts = d.uint32In(v, p, 0, 1000000) }},
				field{"window", func(v *yaml.Node, p string) { r.Window = d.dur(v, p) }},
			) {
				s.Restart = r
			}
		}},
		field{"update", func(v *yaml.Node, fp string) { s.Update = d.serviceUpdate(v, fp, true) }},
		field{"rollback", func(v *yaml.Node, fp string) { s.Rollback = d.serviceUpdate(v, fp, false) }},
		field{"labels", func(v *yaml.Node, fp string) { s.Labels = d.strMap(v, fp) }},
	)
	if !ok {
		return nil
	}
	d.required(n, p, "image", s.Image)
	if s.Mode == "" {
		s.Mode = "replicated"
	}
	if _, set := d.pos[p+".replicas"]; !set && s.Mode == "replicated" {
		s.Replicas = 1
	}
	return s
}

func (d *decoder) serviceUpdate(n *yaml.Node, p string, update bool) *hivev1.SwarmServiceUpdate {
	u := &hivev1.SwarmServiceUpdate{Parallelism: 1}
	actions := []string{"pause", "continue", "rollback"}
	if !update {
		actions = actions[:2]
	}
	if !d.mapping(n, p,
		field{"parallelism", func(v *yaml.Node, p string) { u.Parallelism = d.uint32In(v, p, 0, MaxServiceReplicas) }},
		field{"delay", func(v *yaml.Node, p string) { u.Delay = d.dur(v, p) }},
		field{"failure_action", func(v *yaml.Node, p string) { u.FailureAction = d.oneOf(v, p, actions...) }},
		field{"monitor", func(v *yaml.Node, p string) { u.Monitor = d.dur(v, p) }},
		field{"max_failure_ratio", func(v *yaml.Node, p string) { u.MaxFailureRatio = d.float(v, p, 0, 1) }},
		field{"order", func(v *yaml.Node, p string) { u.Order = d.oneOf(v, p, "stop-first", "start-first") }},
	) {
		return nil
	}
	return u
}

// registry decodes the top-level registry mapping.
func (d *decoder) registry(n *yaml.Node, p string) *hivev1.ServiceRegistry {
	r := &hivev1.ServiceRegistry{Mirror: true}
	if !d.mapping(n, p,
		field{"address", func(v *yaml.Node, fp string) { r.Address = d.str(v, fp) }},
		field{"mirror", func(v *yaml.Node, fp string) { r.Mirror = d.boolean(v, fp) }},
		field{"insecure", func(v *yaml.Node, fp string) { r.Insecure = d.boolean(v, fp) }},
	) {
		return nil
	}
	rn := resolve(n)
	r.Source = fmt.Sprintf("%s:%d:%d", d.file, rn.Line, rn.Column)
	d.required(n, p, "address", r.Address)
	return r
}

func (d *decoder) dur(n *yaml.Node, p string) *durationpb.Duration {
	v := d.duration(n, p)
	if v == 0 {
		return nil
	}
	return durationpb.New(v)
}

func (d *decoder) fileMode(n *yaml.Node, p string) uint32 {
	s := d.str(n, p)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		d.errorf(n, p, "%q is not a file mode like 0444", s)
		return 0
	}
	return uint32(v)
}

func (d *decoder) float(n *yaml.Node, p string, lo, hi float64) float64 {
	s := d.str(n, p)
	if s == "" {
		return 0
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || v < lo || v > hi {
		d.errorf(n, p, "expected a number from %g to %g, got %q", lo, hi, s)
		return 0
	}
	return v
}

func (d *decoder) cpus(n *yaml.Node, p string) float64 { return d.float(n, p, 0.001, 1024) }

// bytes decodes a size: a number of bytes with an optional K, M, G or T
// suffix (powers of 1024), e.g. "256M".
func (d *decoder) bytes(n *yaml.Node, p string) uint64 {
	s := d.str(n, p)
	if s == "" {
		return 0
	}
	v, err := ParseSize(s)
	if err != nil {
		d.errorf(n, p, "%v", err)
		return 0
	}
	return v
}

// ParseSize reads a size: bytes with an optional K, M, G or T suffix
// (powers of 1024; a trailing "i" or "B" is accepted: "256Mi", "1GB").
func ParseSize(s string) (uint64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(s, "B"), "i")
	mult := uint64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || v == 0 || v > math.MaxUint64/mult {
		return 0, fmt.Errorf("%q is not a size like 512M or 2G", s)
	}
	return v * mult, nil
}

// ServiceImage parses a service's image reference: a named reference with
// a tag or a digest (a reference without either is refused: "latest" is
// never implied, so that what runs is what the site names).
func ServiceImage(image string) (reference.Named, error) {
	if len(image) > 512 {
		return nil, fmt.Errorf("image reference is %d bytes; at most 512", len(image))
	}
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return nil, fmt.Errorf("image %q: %v", image, err)
	}
	_, tagged := ref.(reference.Tagged)
	_, digested := ref.(reference.Digested)
	if !tagged && !digested {
		return nil, fmt.Errorf("image %q has no tag: write the tag (e.g. %s:v1) or a digest", image, image)
	}
	return ref, nil
}

// serviceErr reports an error about a service field (sub may be "").
func (c *checker) serviceErr(svc *hivev1.SwarmService, sub, format string, args ...any) {
	full := "services." + svc.GetName()
	if sub != "" {
		full += "." + sub
	}
	if c.d.errPaths[full] {
		return
	}
	e := &Error{File: c.d.file, Path: full, Msg: fmt.Sprintf(format, args...)}
	found := false
	for p := full; strings.HasPrefix(p, "services."); {
		if ps, ok := c.d.pos[p]; ok {
			e.Line, e.Col, found = ps.line, ps.col, true
			break
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	if file, line, col, ok := parseSource(svc.GetSource()); ok && !found {
		e.File, e.Line, e.Col = file, line, col
	}
	c.d.add(e)
}

// checkServices checks the top-level registry and services (Parse and the
// API alike): names, image references, modes, references to secrets and
// networks, ports, mounts, labels and bounds; and that a swarm exists to
// run them (a manager role with init).
func (c *checker) checkServices(s *hivev1.Site, secrets map[string]bool) {
	if r := s.GetRegistry(); r != nil {
		if r.GetAddress() != "" || c.api {
			if err := checkRegistryAddress(r.GetAddress()); err != nil && !c.d.errPaths["registry.address"] {
				e := &Error{File: c.d.file, Path: "registry.address", Msg: err.Error()}
				if ps, ok := c.d.pos["registry.address"]; ok {
					e.Line, e.Col = ps.line, ps.col
				} else if file, line, col, ok := parseSource(r.GetSource()); ok {
					e.File, e.Line, e.Col = file, line, col
				}
				c.d.add(e)
			}
		}
	}
	svcs := s.GetServices()
	if len(svcs) == 0 {
		return
	}
	if len(svcs) > MaxServices {
		c.d.errorAt("services", "%d services; at most %d", len(svcs), MaxServices)
		return
	}
	hasInit := false
	var swarmNets []string
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			if sw := res.GetSwarm(); sw != nil {
				if sw.GetInit() && sw.GetRole() == hivev1.SwarmRole_SWARM_ROLE_MANAGER {
					hasInit = true
				}
				for _, n := range sw.GetNetworks() {
					swarmNets = append(swarmNets, n.GetName())
				}
			}
		}
	}
	if !hasInit {
		c.d.errorAt("services", "services run on the swarm, and no role initialises one: give a manager role `swarm: {role: manager, init: true}`")
	}
	seen := map[string]bool{}
	for _, svc := range svcs {
		if seen[svc.GetName()] {
			c.serviceErr(svc, "", "service %q defined twice", svc.GetName())
			continue
		}
		seen[svc.GetName()] = true
		c.checkService(svc, secrets, s.GetSecrets(), swarmNets)
		c.checkServiceVolumes(s, svc)
	}
}

func checkRegistryAddress(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port (the address of hive-repo's registry, e.g. 10.0.0.5:5000)", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be 1 to 65535", a)
	}
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("%q: host has a '/' or a space", a)
	}
	return nil
}

func (c *checker) checkService(svc *hivev1.SwarmService, secrets map[string]bool, secretNames, swarmNets []string) {
	if !serviceNameRE.MatchString(svc.GetName()) {
		c.serviceErr(svc, "", "service name %q: use lowercase letters, digits, '_' and '-' (at most 63, starting with a letter or digit)", svc.GetName())
	}
	if svc.GetImage() == "" {
		if c.api {
			c.serviceErr(svc, "image", "required")
		}
	} else if _, err := ServiceImage(svc.GetImage()); err != nil {
		c.serviceErr(svc, "image", "%v", err)
	}
	if dg := svc.GetDigest(); dg != "" && !digestRE.MatchString(dg) {
		c.serviceErr(svc, "digest", "%q is not a sha256 digest", dg)
	}
	if svc.GetMode() == "global" && svc.GetReplicas() > 0 {
		c.serviceErr(svc, "replicas", "a global service runs one task per node: drop replicas or use mode: replicated")
	}
	if m := svc.GetMode(); c.api && m != "" && m != "replicated" && m != "global" {
		c.serviceErr(svc, "mode", "%q is not replicated or global", m)
	}
	if svc.GetReplicas() > MaxServiceReplicas {
		c.serviceErr(svc, "replicas", "%d replicas; at most %d", svc.GetReplicas(), MaxServiceReplicas)
	}
	for what, n := range map[string]int{"command": len(svc.GetCommand()), "entrypoint": len(svc.GetEntrypoint()), "env": len(svc.GetEnv()),
		"secrets": len(svc.GetSecrets()), "configs": len(svc.GetConfigs()), "ports": len(svc.GetPorts()), "mounts": len(svc.GetMounts()),
		"networks": len(svc.GetNetworks()), "placement.constraints": len(svc.GetConstraints()), "placement.spread": len(svc.GetSpread()), "labels": len(svc.GetLabels())} {
		if n > MaxServiceList {
			c.serviceErr(svc, what, "%d entries; at most %d", n, MaxServiceList)
		}
	}
	for _, k := range sortedKeys(svc.GetEnv()) {
		if !envNameRE.MatchString(k) {
			c.serviceErr(svc, "env."+k, "%q is not an environment variable name", k)
		}
	}
	targets := map[string]bool{}
	for i, sec := range svc.GetSecrets() {
		p := fmt.Sprintf("secrets[%d]", i)
		if sec.GetSecret() == "" {
			if c.api {
				c.serviceErr(svc, p+".secret", "required")
			}
			continue
		}
		if !secrets[sec.GetSecret()] {
			msg := fmt.Sprintf("unknown secret %q: declare it under the top-level secrets list", sec.GetSecret())
			if sg := suggest(sec.GetSecret(), secretNames); sg != "" {
				msg = fmt.Sprintf("unknown secret %q (did you mean %q?)", sec.GetSecret(), sg)
			}
			c.serviceErr(svc, p+".secret", "%s", msg)
		}
		t := sec.GetTarget()
		if t == "" {
			t = sec.GetSecret()
		}
		if strings.Contains(t, "/") || t == "." || t == ".." || len(t) > 128 {
			c.serviceErr(svc, p+".target", "%q: a file name below /run/secrets (no '/')", t)
		}
		if targets["/run/secrets/"+t] {
			c.serviceErr(svc, p+".target", "/run/secrets/%s delivered twice", t)
		}
		targets["/run/secrets/"+t] = true
	}
	for i, cf := range svc.GetConfigs() {
		p := fmt.Sprintf("configs[%d]", i)
		t := cf.GetTarget()
		if !path.IsAbs(t) || path.Clean(t) != t || len(t) > 1024 {
			if t != "" || c.api {
				c.serviceErr(svc, p+".target", "%q is not a clean absolute path", t)
			}
		} else if targets[t] {
			c.serviceErr(svc, p+".target", "%s delivered twice", t)
		}
		targets[t] = true
		if len(cf.GetContent()) > MaxServiceConfigBytes {
			c.serviceErr(svc, p+".content", "%d bytes; a swarm config holds at most %d", len(cf.GetContent()), MaxServiceConfigBytes)
		}
	}
	published := map[string]bool{}
	for i, pt := range svc.GetPorts() {
		p := fmt.Sprintf("ports[%d]", i)
		if c.api && (pt.GetTarget() < 1 || pt.GetTarget() > 65535 || pt.GetPublished() > 65535) {
			c.serviceErr(svc, p, "ports are 1 to 65535")
		}
		if c.api && pt.GetProtocol() != "" && pt.GetProtocol() != "tcp" && pt.GetProtocol() != "udp" && pt.GetProtocol() != "sctp" {
			c.serviceErr(svc, p+".protocol", "%q is not tcp, udp or sctp", pt.GetProtocol())
		}
		if c.api && pt.GetMode() != "" && pt.GetMode() != "ingress" && pt.GetMode() != "host" {
			c.serviceErr(svc, p+".mode", "%q is not ingress or host", pt.GetMode())
		}
		if pt.GetPublished() != 0 {
			proto := pt.GetProtocol()
			if proto == "" {
				proto = "tcp"
			}
			k := fmt.Sprintf("%d/%s", pt.GetPublished(), proto)
			if published[k] {
				c.serviceErr(svc, p+".published", "port %s published twice", k)
			}
			published[k] = true
		}
	}
	mounts := map[string]bool{}
	for i, m := range svc.GetMounts() {
		p := fmt.Sprintf("mounts[%d]", i)
		switch m.GetType() {
		case "volume":
			if !validName(m.GetSource()) || strings.Contains(m.GetSource(), "/") {
				c.serviceErr(svc, p+".volume", "%q is not a volume name", m.GetSource())
			}
		case "bind":
			if !path.IsAbs(m.GetSource()) || path.Clean(m.GetSource()) != m.GetSource() {
				c.serviceErr(svc, p+".bind", "%q is not a clean absolute path", m.GetSource())
			}
		case "tmpfs":
			if m.GetSource() != "" {
				c.serviceErr(svc, p, "a tmpfs mount has no source")
			}
		default:
			if c.api {
				c.serviceErr(svc, p, "mount type %q is not volume, bind or tmpfs", m.GetType())
			}
		}
		if t := m.GetTarget(); !path.IsAbs(t) || path.Clean(t) != t {
			if t != "" || c.api {
				c.serviceErr(svc, p+".target", "%q is not a clean absolute path", t)
			}
		} else if mounts[t] {
			c.serviceErr(svc, p+".target", "%s mounted twice", t)
		}
		mounts[m.GetTarget()] = true
	}
	for i, n := range svc.GetNetworks() {
		known := n == "ingress" || n == "host"
		for _, sn := range swarmNets {
			known = known || sn == n
		}
		if !known {
			msg := fmt.Sprintf("unknown network %q: declare it under a manager role's swarm.networks", n)
			if sg := suggest(n, swarmNets); sg != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", sg)
			}
			c.serviceErr(svc, fmt.Sprintf("networks[%d]", i), "%s", msg)
		}
	}
	for i, k := range svc.GetConstraints() {
		if !strings.Contains(k, "==") && !strings.Contains(k, "!=") {
			c.serviceErr(svc, fmt.Sprintf("placement.constraints[%d]", i), "%q is not a constraint like node.labels.tier==front or node.role!=manager", k)
		}
	}
	for i, k := range svc.GetSpread() {
		if !strings.HasPrefix(k, "node.labels.") && !strings.HasPrefix(k, "engine.labels.") {
			c.serviceErr(svc, fmt.Sprintf("placement.spread[%d]", i), "%q: spread over node.labels.NAME or engine.labels.NAME", k)
		}
	}
	for _, k := range sortedKeys(svc.GetLabels()) {
		if strings.HasPrefix(k, "hive.") {
			c.serviceErr(svc, "labels."+k, "labels starting with \"hive.\" are hive's own")
		}
	}
	if h := svc.GetHealthcheck(); h != nil && len(h.GetTest()) > 0 {
		switch h.GetTest()[0] {
		case "CMD", "CMD-SHELL", "NONE":
		default:
			c.serviceErr(svc, "healthcheck.test", "test starts with CMD, CMD-SHELL or NONE, got %q", h.GetTest()[0])
		}
	}
	for _, dd := range []struct {
		what string
		d    *durationpb.Duration
	}{{"healthcheck.interval", svc.GetHealthcheck().GetInterval()}, {"healthcheck.timeout", svc.GetHealthcheck().GetTimeout()},
		{"restart.delay", svc.GetRestart().GetDelay()}, {"update.delay", svc.GetUpdate().GetDelay()}} {
		if dd.d != nil && (dd.d.AsDuration() < 0 || dd.d.AsDuration() > 24*time.Hour) {
			c.serviceErr(svc, dd.what, "must be from 0 to 24h")
		}
	}
}
