package site

import (
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/kinds"
)

// Check validates a Site built elsewhere (received over the API) with the
// same semantic rules Parse applies: references, duplicates, cycles, port
// clashes, swarm managers, and the field formats Parse enforces. Errors
// carry the resource's recorded source position when it has one.
func Check(s *hivev1.Site) error {
	if s == nil {
		return ErrorList{{Msg: "no site given"}}
	}
	d := &decoder{pos: map[string]pos{}, resPath: map[*hivev1.Resource]string{}, confirmAt: map[*hivev1.Resource]confirmPos{}}
	for _, r := range s.GetRoles() {
		for i, res := range r.GetResources() {
			d.resPath[res] = fmt.Sprintf("roles.%s[%d]", r.GetName(), i)
		}
	}
	c := &checker{d: d, api: true}
	c.check(s)
	return d.errs.Err()
}

// checker runs the whole-site checks, reporting through the decoder so
// errors land on the positions the decoder recorded.
type checker struct {
	d *decoder
	// api is set when checking a Site that did not come from Parse: the
	// per-field format checks Parse does while decoding run here too.
	api bool
}

// at reports an error about a resource.
func (c *checker) at(res *hivev1.Resource, sub, format string, args ...any) {
	p := c.d.resPath[res]
	full := p
	if sub != "" {
		full = p + "." + sub
	}
	if full != "" && c.d.errPaths[full] {
		return // one error per field is enough; the first is the cause
	}
	e := &Error{File: c.d.file, Path: full, Msg: fmt.Sprintf(format, args...)}
	if ps, ok := c.d.pos[full]; ok {
		e.Line, e.Col = ps.line, ps.col
	} else if ps, ok := c.d.pos[p]; ok {
		e.Line, e.Col = ps.line, ps.col
	} else if file, line, col, ok := parseSource(res.GetSource()); ok {
		e.File, e.Line, e.Col = file, line, col
	}
	c.d.add(e)
}

// parseSource splits "file:line:col".
func parseSource(s string) (string, int, int, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", 0, 0, false
	}
	j := strings.LastIndexByte(s[:i], ':')
	if j < 0 {
		return "", 0, 0, false
	}
	line, err1 := strconv.Atoi(s[j+1 : i])
	col, err2 := strconv.Atoi(s[i+1:])
	if err1 != nil || err2 != nil {
		return "", 0, 0, false
	}
	return s[:j], line, col, true
}

// normalizeRef canonicalises a resource reference ("service:nginx" becomes
// "service:nginx.service").
// NotifyReboot is the notify target that names no resource: a resource
// that changes asks for a coordinated reboot of its node
// (converge.NotifyReboot; docs/operations.md, "Reboots").
const NotifyReboot = "reboot"

func normalizeRef(ref string) string {
	kind, name, ok := strings.Cut(ref, ":")
	if ok && kind == "service" {
		return "service:" + UnitName(name)
	}
	return ref
}

func (c *checker) check(s *hivev1.Site) {
	c.checkRollouts(s)
	roles := map[string]*hivev1.Role{}
	var roleNames []string
	for _, r := range s.GetRoles() {
		if r.GetName() == "" {
			c.d.errorAt("roles", "a role has no name")
			continue
		}
		if _, dup := roles[r.GetName()]; dup {
			c.d.errorAt("roles."+r.GetName(), "role %q defined twice", r.GetName())
			continue
		}
		roles[r.GetName()] = r
		roleNames = append(roleNames, r.GetName())
	}
	secrets := map[string]bool{}
	for i, name := range s.GetSecrets() {
		if c.api {
			if err := CheckSecretName(name); err != nil {
				c.d.errorAt(fmt.Sprintf("secrets[%d]", i), "%v", err)
			}
		}
		secrets[name] = true
	}
	c.checkWebhooks(s, secrets)
	c.checkServices(s, secrets)
	if c.api {
		c.checkRoleChecks(s)
	}
	unknownRole := func(pathStr, name string, res *hivev1.Resource, sub string) {
		msg := fmt.Sprintf("unknown role %q", name)
		if sg := suggest(name, roleNames); sg != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", sg)
		}
		if res != nil {
			c.at(res, sub, "%s", msg)
		} else {
			c.d.errorAt(pathStr, "%s", msg)
		}
	}

	// Selectors.
	for i, sel := range s.GetSelectors() {
		p, ok := c.d.selPath[sel]
		if !ok {
			p = fmt.Sprintf("selectors[%d]", i)
		}
		for j, rn := range sel.GetRoles() {
			if roles[rn] == nil {
				pp := fmt.Sprintf("%s.roles[%d]", p, j)
				if _, ok := c.d.pos[pp]; !ok {
					pp = p + ".roles"
				}
				unknownRole(pp, rn, nil, "")
			}
		}
		for _, g := range sel.GetNames() {
			if _, err := path.Match(g, ""); err != nil {
				c.d.errorAt(p+".names", "bad name glob %q: %v", g, err)
			}
		}
		for k := range sel.GetMatchLabels() {
			if !validName(k) {
				c.d.errorAt(p+".match", "label key %q: use letters, digits, '.', '_', '-' and '/' only", k)
			}
		}
	}

	// Every resource key, across roles, and per-role duplicates.
	defs := map[string][]*hivev1.Resource{}
	for _, rn := range roleNames {
		seen := map[string]*hivev1.Resource{}
		for _, res := range roles[rn].GetResources() {
			if c.api {
				c.apiFormat(res)
			}
			key := res.GetKey()
			if prev, dup := seen[key]; dup {
				where := prev.GetSource()
				if where == "" {
					where = c.d.resPath[prev]
				}
				c.at(res, "", "duplicate resource %s in role %q (first defined at %s)", key, rn, where)
				continue
			}
			seen[key] = res
			defs[key] = append(defs[key], res)
		}
	}
	roleOf := map[*hivev1.Resource]string{}
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			roleOf[res] = r.GetName()
		}
	}
	for _, key := range sortedKeys(defs) {
		c.conflicts(key, defs[key], roleOf, s.GetSelectors())
	}

	info := &siteInfo{roles: roles, roleNames: roleNames, secrets: secrets, secretNames: s.GetSecrets()}
	// References, per resource.
	drbdPorts := map[uint32]*hivev1.Resource{}
	drbdMinors := map[uint32]*hivev1.Resource{}
	haveManager, haveWorker := false, false
	var firstWorker *hivev1.Resource
	for _, rn := range roleNames {
		for _, res := range roles[rn].GetResources() {
			for i, ref := range res.GetRequires() {
				c.ref(res, fmt.Sprintf("requires[%d]", i), ref, defs, false)
			}
			for i, ref := range res.GetNotify() {
				c.ref(res, fmt.Sprintf("notify[%d]", i), ref, defs, true)
			}
			if k := kinds.Of(res); k != nil && siteKinds[k.Name].refs != nil {
				siteKinds[k.Name].refs(c, res, info)
			}
			c.hostKindRefs(res, secrets, s.GetSecrets())
			switch k := res.GetKind().(type) {
			case *hivev1.Resource_File:
				for _, sn := range k.File.GetSecrets() {
					if !secrets[sn] {
						msg := fmt.Sprintf("unknown secret %q: declare it under the top-level secrets list", sn)
						if sg := suggest(sn, s.GetSecrets()); sg != "" {
							msg = fmt.Sprintf("unknown secret %q (did you mean %q?)", sn, sg)
						}
						c.at(res, "content", "%s", msg)
					}
				}
			case *hivev1.Resource_Drbd:
				dr := k.Drbd
				if dr.GetPeerRole() != "" && roles[dr.GetPeerRole()] == nil {
					unknownRole("", dr.GetPeerRole(), res, "peers")
				}
				if prev := drbdPorts[dr.GetPort()]; prev != nil && prev.GetDrbd().GetName() != dr.GetName() {
					c.at(res, "port", "DRBD port %d is already used by resource %q (%s)", dr.GetPort(), prev.GetDrbd().GetName(), prev.GetSource())
				} else {
					drbdPorts[dr.GetPort()] = res
				}
				if prev := drbdMinors[dr.GetMinor()]; prev != nil && prev.GetDrbd().GetName() != dr.GetName() {
					c.at(res, "minor", "DRBD minor %d is already used by resource %q (%s)", dr.GetMinor(), prev.GetDrbd().GetName(), prev.GetSource())
				} else {
					drbdMinors[dr.GetMinor()] = res
				}
			case *hivev1.Resource_Firewall:
				for i, rule := range k.Firewall.GetRules() {
					for j, fr := range rule.GetSourceRoles() {
						if roles[fr] == nil {
							unknownRole("", fr, res, fmt.Sprintf("rules[%d].from_roles[%d]", i, j))
						}
					}
				}
			case *hivev1.Resource_Swarm:
				switch k.Swarm.GetRole() {
				case hivev1.SwarmRole_SWARM_ROLE_MANAGER:
					haveManager = true
				case hivev1.SwarmRole_SWARM_ROLE_WORKER:
					haveWorker = true
					if firstWorker == nil {
						firstWorker = res
					}
				}
			case *hivev1.Resource_Package:
				if repo := k.Package.GetRepo(); repo != "" && defs["repo:"+repo] == nil {
					c.at(res, "repo", "unknown repo %q", repo)
				}
			}
		}
	}
	if haveWorker && !haveManager {
		c.at(firstWorker, "role", "swarm workers need a manager: no role declares swarm role manager")
	}
	c.cycles(defs)
}

// ref checks one requires or notify reference.
func (c *checker) ref(res *hivev1.Resource, sub, ref string, defs map[string][]*hivev1.Resource, notify bool) {
	if notify && ref == NotifyReboot {
		return
	}
	kind, name, ok := strings.Cut(ref, ":")
	if !ok || name == "" || kinds.Lookup(kind) == nil {
		c.at(res, sub, "%q is not a resource reference: expected KIND:NAME with KIND one of %s", ref, strings.Join(kinds.Names(), ", "))
		return
	}
	norm := normalizeRef(ref)
	if norm == res.GetKey() {
		c.at(res, sub, "a resource cannot refer to itself")
		return
	}
	if notify && !kinds.Lookup(kind).Notifiable {
		c.at(res, sub, "only services and commands can be notified, not %s", ref)
		return
	}
	if defs[norm] == nil {
		msg := fmt.Sprintf("unknown resource %s", ref)
		if sg := suggest(norm, sortedKeys(defs)); sg != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", sg)
		}
		c.at(res, sub, "%s", msg)
	}
}

// conflicts reports a key defined differently in two roles that one
// selector gives to the same nodes. Additive kinds (firewall rule sets)
// merge instead.
func (c *checker) conflicts(key string, defs []*hivev1.Resource, roleOf map[*hivev1.Resource]string, selectors []*hivev1.Selector) {
	if k := kinds.Lookup(kinds.KindOf(key)); len(defs) < 2 || (k != nil && k.Additive) {
		return
	}
	for i := 1; i < len(defs); i++ {
		a, b := defs[0], defs[i]
		if sameDefinition(a, b) {
			continue
		}
		ra, rb := roleOf[a], roleOf[b]
		for _, sel := range selectors {
			if contains(sel.GetRoles(), ra) && contains(sel.GetRoles(), rb) {
				c.at(b, "", "%s is defined differently in roles %q and %q, which a selector gives to the same nodes", key, ra, rb)
				break
			}
		}
	}
}

func sameDefinition(a, b *hivev1.Resource) bool {
	ca, cb := proto.Clone(a).(*hivev1.Resource), proto.Clone(b).(*hivev1.Resource)
	ca.Source, cb.Source, ca.Role, cb.Role = "", "", "", ""
	return proto.Equal(ca, cb)
}

// cycles rejects dependency cycles through requires and notify edges.
func (c *checker) cycles(defs map[string][]*hivev1.Resource) {
	edges := map[string][]string{}
	for key, rs := range defs {
		for _, r := range rs {
			for _, ref := range r.GetRequires() {
				if n := normalizeRef(ref); n != key { // self-references are reported by ref
					edges[key] = append(edges[key], n)
				}
			}
			for _, ref := range r.GetNotify() {
				// A notified service runs after the notifier.
				if n := normalizeRef(ref); n != key {
					edges[n] = append(edges[n], key)
				}
			}
		}
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	reported := map[string]bool{}
	var visit func(k string)
	visit = func(k string) {
		color[k] = grey
		stack = append(stack, k)
		next := append([]string(nil), edges[k]...)
		sort.Strings(next)
		for _, n := range next {
			if defs[n] == nil {
				continue
			}
			switch color[n] {
			case white:
				visit(n)
			case grey:
				i := len(stack) - 1
				for i >= 0 && stack[i] != n {
					i--
				}
				cycle := append(append([]string(nil), stack[i:]...), n)
				if !reported[n] {
					reported[n] = true
					c.at(defs[n][0], "", "dependency cycle: %s", strings.Join(cycle, " -> "))
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[k] = black
	}
	for _, k := range sortedKeys(defs) {
		if color[k] == white {
			visit(k)
		}
	}
}

// apiFormat re-runs the field checks Parse does while decoding, for a Site
// that arrived over the API, and checks the key by the kind's rule.
func (c *checker) apiFormat(res *hivev1.Resource) {
	k := kinds.Of(res)
	if k == nil {
		c.at(res, "", "resource %q has no kind", res.GetKey())
		return
	}
	siteKinds[k.Name].check(c, res)
	if s := res.GetConfirmSeconds(); s > 0 {
		switch {
		case !k.Confirm || k.Name == "firewall":
			c.at(res, "confirm_seconds", "confirm is not supported on %s (only on %s; the firewall's is Firewall.confirm_seconds)", k.Name, strings.Join(confirmKinds(), ", "))
		case time.Duration(s)*time.Second > MaxConfirm:
			c.at(res, "confirm_seconds", "confirm window %ds is longer than %v", s, MaxConfirm)
		}
	}
	if want := kinds.Key(res); res.GetKey() != want {
		c.at(res, "key", "key %q does not match the resource (want %q)", res.GetKey(), want)
	}
}

// repoFormat checks the fields of a repo resource.
func (c *checker) repoFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_Repo)
	r := k.Repo
	if r.GetType() == hivev1.RepoType_REPO_TYPE_UNSPECIFIED {
		c.at(res, "type", "required")
	}
	c.atErr(res, "name", CheckRepoName(r.GetName()))
	if r.GetUrl() == "" {
		c.at(res, "url", "required")
	}
	c.atErr(res, "url", CheckRepoWord("URL", r.GetUrl()))
	c.atErr(res, "suite", CheckRepoWord("suite", r.GetSuite()))
	for _, w := range r.GetComponents() {
		c.atErr(res, "components", CheckRepoWord("component", w))
	}
	for _, w := range r.GetArchitectures() {
		c.atErr(res, "architectures", CheckRepoWord("architecture", w))
	}
	if r.GetSigningKey() != "" {
		c.atErr(res, "key", CheckSigningKey([]byte(r.GetSigningKey())))
	}
}

// packageFormat checks the fields of a package resource.
func (c *checker) packageFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_Package)
	c.atErr(res, "name", CheckPackageName(k.Package.GetName()))
	c.atErr(res, "version", CheckPackageVersion(k.Package.GetVersion()))
}

// fileFormat checks the fields of a file resource.
func (c *checker) fileFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_File)
	if msg := checkPath(k.File.GetPath()); msg != "" {
		c.at(res, "path", "%s", msg)
	}
	if k.File.GetMode() > 0o7777 {
		c.at(res, "mode", "invalid mode %#o", k.File.GetMode())
	}
	if k.File.GetTemplate() {
		names, err := templateSecrets(k.File.GetContent())
		if err != nil {
			c.at(res, "content", "template: %v", err)
		} else if !equalStrings(names, k.File.GetSecrets()) {
			c.at(res, "secrets", "secrets %v do not match the template's references %v", k.File.GetSecrets(), names)
		}
	}
}

// serviceFormat checks the fields of a service resource.
func (c *checker) serviceFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_Service)
	if !unitRE.MatchString(k.Service.GetName()) {
		c.at(res, "name", "%q is not a valid systemd unit name", k.Service.GetName())
	}
}

// firewallFormat checks the fields of a firewall resource.
func (c *checker) firewallFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_Firewall)
	if s := k.Firewall.GetConfirmSeconds(); time.Duration(s)*time.Second > MaxConfirm {
		c.at(res, "firewall.confirm_seconds", "confirm window %ds is longer than %v", s, MaxConfirm)
	}
	for i, r := range k.Firewall.GetRules() {
		c.atErr(res, fmt.Sprintf("rules[%d].in_interface", i), CheckInterface(r.GetInInterface()))
		c.atErr(res, fmt.Sprintf("rules[%d].out_interface", i), CheckInterface(r.GetOutInterface()))
		c.atErr(res, fmt.Sprintf("rules[%d].comment", i), CheckComment(r.GetComment()))
		for _, cidr := range append(append([]string{}, r.GetSources()...), r.GetDestinations()...) {
			if norm, err := normalizeCIDR(cidr); err != nil || norm != cidr {
				c.at(res, fmt.Sprintf("rules[%d]", i), "bad address %q", cidr)
			}
		}
	}
}

// drbdFormat checks the fields of a drbd resource.
func (c *checker) drbdFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_Drbd)
	dr := k.Drbd
	if dr.GetPort() == 0 || dr.GetPort() > 65535 {
		c.at(res, "port", "port %d out of range 1-65535", dr.GetPort())
	}
	c.atErr(res, "name", CheckDrbdName(dr.GetName()))
	if dr.GetPeerRole() == "" {
		c.at(res, "peers", "required")
	}
	c.atErr(res, "disk", CheckDrbdDevice("disk", dr.GetDisk()))
	if m := dr.GetMetaDisk(); m != "" && m != "internal" {
		c.atErr(res, "meta_disk", CheckDrbdDevice("meta_disk", m))
	}
	for _, key := range sortedKeys(dr.GetOptions()) {
		if err := CheckDrbdOptionKey(key); err != nil {
			c.atErr(res, "options."+key, err)
		} else {
			c.atErr(res, "options."+key, CheckDrbdOptionValue(key, dr.GetOptions()[key]))
		}
	}
}

// swarmFormat checks the fields of a swarm resource.
func (c *checker) swarmFormat(res *hivev1.Resource) {
	k := res.GetKind().(*hivev1.Resource_Swarm)
	if k.Swarm.GetRole() == hivev1.SwarmRole_SWARM_ROLE_UNSPECIFIED {
		c.at(res, "role", "required")
	}
	for i, n := range k.Swarm.GetNetworks() {
		if n.GetName() == "" {
			c.at(res, fmt.Sprintf("networks[%d].name", i), "required")
		}
		if sub := n.GetSubnet(); sub != "" {
			if norm, err := normalizeCIDR(sub); err != nil || norm != sub {
				c.at(res, fmt.Sprintf("networks[%d].subnet", i), "bad subnet %q", sub)
			}
		}
	}
}

// atErr reports err, if any, about a resource.
func (c *checker) atErr(res *hivev1.Resource, sub string, err error) {
	if err != nil {
		c.at(res, sub, "%v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
