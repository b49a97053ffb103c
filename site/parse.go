package site

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/kinds"
)

// Parse reads a site file. name is used in error positions. On success the
// Site has every default filled in and its roles and resources in canonical
// order; on failure the error is an ErrorList with every problem found.
func Parse(name string, data []byte) (*hivev1.Site, error) {
	if len(data) > MaxFileSize {
		return nil, ErrorList{{File: name, Line: 1, Col: 1, Msg: fmt.Sprintf("file is %d bytes, larger than the %d-byte limit", len(data), MaxFileSize)}}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{File: name, Line: 1, Col: 1, Msg: "file is empty"}}
		}
		return nil, ErrorList{yamlError(name, data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, ErrorList{{File: name, Line: extra.Line, Col: extra.Column, Msg: "more than one YAML document; a site file holds exactly one"}}
	}
	d := &decoder{file: name, pos: map[string]pos{}, resPath: map[*hivev1.Resource]string{}, selPath: map[*hivev1.Selector]string{}, confirmAt: map[*hivev1.Resource]confirmPos{}}
	s := d.site(&doc)
	if s == nil {
		return nil, d.errs.Err()
	}
	if d.overBudget {
		return nil, d.errs.Err()
	}
	c := &checker{d: d}
	c.check(s)
	if err := d.errs.Err(); err != nil {
		return nil, err
	}
	canonicalize(s)
	return s, nil
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// yamlError turns a yaml.v3 syntax error into a positioned Error. yaml.v3
// reports a parser error at the start of the enclosing block (its
// "context"), not where the problem is; other YAML tools (PyYAML,
// yamllint) point at the problem itself. The problem is the shortest
// prefix of the file that fails with the very same error, found by a
// binary search over lines, then over the columns of the line found: the
// parser reads a prefix exactly as it reads the start of the whole file,
// so from the problem on every prefix fails the same way.
func yamlError(name string, data []byte, err error) *Error {
	msg := err.Error()
	e := &Error{File: name, Line: 1, Col: 1, Msg: "YAML syntax: " + msg}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		if m[1] != "" {
			e.Line, _ = strconv.Atoi(m[1])
		}
		e.Msg = "YAML syntax: " + m[2]
	}
	if line, col, ok := yamlProblem(data, msg); ok {
		e.Line, e.Col = line, col
	}
	return e
}

// maxProblemSearch bounds the files whose syntax error yamlProblem
// locates: the search parses about 20 prefixes (a 4 MiB file takes
// seconds). Larger files get yaml.v3's position.
const maxProblemSearch = 1 << 20

// yamlProblem locates the problem of the syntax error msg in data.
func yamlProblem(data []byte, msg string) (line, col int, ok bool) {
	if len(data) > maxProblemSearch {
		return 0, 0, false
	}
	same := func(prefix []byte) bool {
		err := yaml.NewDecoder(bytes.NewReader(prefix)).Decode(&yaml.Node{})
		return err != nil && err.Error() == msg
	}
	// Line ends: ends[i] is the offset just after line i+1.
	var ends []int
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	i := sort.Search(len(ends), func(i int) bool { return same(data[:ends[i]]) })
	if i == len(ends) {
		return 0, 0, false
	}
	start := 0
	if i > 0 {
		start = ends[i-1]
	}
	n := ends[i] - start
	c := sort.Search(n, func(c int) bool { return same(data[:start+c+1]) })
	if c == n {
		c = n - 1
	}
	// Columns count characters, as in every other position Parse reports.
	return i + 1, utf8.RuneCount(data[start:start+c]) + 1, true
}

func (d *decoder) site(doc *yaml.Node) *hivev1.Site {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		d.errorf(doc, "", "file is empty")
		return nil
	}
	root := resolve(doc.Content[0])
	if isNull(root) {
		d.errorf(root, "", "file is empty")
		return nil
	}
	s := &hivev1.Site{}
	var rolesSeen bool
	ok := d.mapping(root, "",
		field{"site", func(v *yaml.Node, p string) { s.Name = d.str(v, p) }},
		field{"secrets", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				name := d.str(item, ip)
				if d.errPaths[ip] {
					return
				}
				if err := CheckSecretName(name); err != nil {
					d.errorf(item, ip, "%v", err)
					return
				}
				s.Secrets = append(s.Secrets, name)
			})
		}},
		field{"selectors", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				if sel := d.selector(item, ip); sel != nil {
					s.Selectors = append(s.Selectors, sel)
					d.selPath[sel] = ip
				}
			})
		}},
		field{"rollout", func(v *yaml.Node, p string) { s.Rollout = d.rollout(v, p) }},
		field{"webhooks", func(v *yaml.Node, p string) { s.Webhooks = d.webhooks(v, p) }},
		field{"services", func(v *yaml.Node, p string) { s.Services = d.services(v, p) }},
		field{"registry", func(v *yaml.Node, p string) { s.Registry = d.registry(v, p) }},
		field{"roles", func(v *yaml.Node, p string) {
			rolesSeen = true
			d.entries(v, p, func(name string, k, rv *yaml.Node, rp string) {
				if !validName(name) || strings.Contains(name, "/") {
					d.errorf(k, rp, "role name %q: use letters, digits, '.', '_' and '-' only", name)
				}
				s.Roles = append(s.Roles, d.role(name, rv, rp))
			})
		}},
	)
	if ok && !rolesSeen {
		d.errorf(root, "roles", "a site needs at least one role")
	}
	return s
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)

func validName(s string) bool { return len(s) <= 128 && nameRE.MatchString(s) }

func (d *decoder) selector(n *yaml.Node, path string) *hivev1.Selector {
	sel := &hivev1.Selector{}
	if !d.mapping(n, path,
		field{"match", func(v *yaml.Node, p string) { sel.MatchLabels = d.strMap(v, p) }},
		field{"names", func(v *yaml.Node, p string) { sel.Names = d.strList(v, p) }},
		field{"roles", func(v *yaml.Node, p string) { sel.Roles = d.strList(v, p) }},
	) {
		return nil
	}
	if len(sel.Roles) == 0 {
		d.errorf(n, path+".roles", "a selector needs at least one role")
	}
	return sel
}

// common holds the fields every resource has.
type common struct {
	requires []string
	notify   []string
	confirm  uint32     // seconds, 0 when not given
	confirmN *yaml.Node // the confirm value, for the kind check in role
	confirmP string
}

func (d *decoder) commonFields(c *common) []field {
	return []field{
		{"requires", func(v *yaml.Node, p string) { c.requires = d.strList(v, p) }},
		{"notify", func(v *yaml.Node, p string) { c.notify = d.strList(v, p) }},
		{"confirm", func(v *yaml.Node, p string) {
			s := d.str(v, p)
			if s == "" {
				return
			}
			c.confirmN, c.confirmP = v, p
			dur, err := time.ParseDuration(s)
			if err != nil || dur < MinConfirm || dur > MaxConfirm || dur%time.Second != 0 {
				d.errorf(v, p, "confirm window %q: expected whole seconds from 1s to 1h, e.g. \"30s\"", s)
				return
			}
			c.confirm = uint32(dur / time.Second)
		}},
	}
}

// The bounds of a confirm window (`confirm:` on a resource).
const (
	MinConfirm = time.Second
	MaxConfirm = time.Hour
)

func (d *decoder) resource(n *yaml.Node, path string, c *common) *hivev1.Resource {
	res := &hivev1.Resource{
		Requires:       c.requires,
		Notify:         c.notify,
		ConfirmSeconds: c.confirm,
		Source:         fmt.Sprintf("%s:%d:%d", d.file, n.Line, n.Column),
	}
	if c.confirmN != nil {
		d.confirmAt[res] = confirmPos{c.confirmN, c.confirmP}
	}
	return res
}

type confirmPos struct {
	n *yaml.Node
	p string
}

func (d *decoder) role(name string, n *yaml.Node, path string) *hivev1.Role {
	r := &hivev1.Role{Name: name}
	add := func(res *hivev1.Resource, item *yaml.Node, p string) {
		if res == nil {
			return
		}
		res.Key = kinds.Key(res)
		if at, ok := d.confirmAt[res]; ok {
			if k := kinds.Of(res); k != nil && !k.Confirm {
				d.errorf(at.n, at.p, "confirm is not supported on %s (only on %s)", k.Name, strings.Join(confirmKinds(), ", "))
			}
		}
		if v := res.GetVolume(); v != nil && v.ReplicaRole == "" {
			v.ReplicaRole = name // replicas default to the declaring role
		}
		r.Resources = append(r.Resources, res)
		d.resPath[res] = p
	}
	if isNull(n) {
		return r
	}
	fields := []field{{"description", func(v *yaml.Node, p string) { r.Description = d.str(v, p) }}}
	for _, k := range kinds.All {
		decode := siteKinds[k.Name].decode
		if k.Single {
			fields = append(fields, field{k.Section, func(v *yaml.Node, p string) { add(decode(d, v, p), v, p) }})
			continue
		}
		fields = append(fields, field{k.Section, func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) { add(decode(d, item, ip), item, ip) })
		}})
	}
	fields = append(fields, field{"rollout", func(v *yaml.Node, p string) { r.Rollout = d.rollout(v, p) }})
	fields = append(fields, field{"checks", func(v *yaml.Node, p string) { r.Checks = d.healthChecks(v, p) }})
	d.mapping(n, path, fields...)
	return r
}

func (d *decoder) repo(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	r := &hivev1.Repo{Gpgcheck: true}
	var typ string
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { r.Name = d.str(v, p) }},
		field{"type", func(v *yaml.Node, p string) { typ = d.oneOf(v, p, "yum", "apt") }},
		field{"url", func(v *yaml.Node, p string) { r.Url = d.url(v, p) }},
		field{"suite", func(v *yaml.Node, p string) {
			r.Suite = d.str(v, p)
			d.check(v, p, CheckRepoWord("suite", r.Suite))
		}},
		field{"components", func(v *yaml.Node, p string) {
			r.Components = d.strList(v, p)
			for _, c := range r.Components {
				d.check(v, p, CheckRepoWord("component", c))
			}
		}},
		field{"key", func(v *yaml.Node, p string) {
			r.SigningKey = d.str(v, p)
			if r.SigningKey != "" {
				d.check(v, p, CheckSigningKey([]byte(r.SigningKey)))
			}
		}},
		field{"key_url", func(v *yaml.Node, p string) { r.SigningKeyUrl = d.url(v, p) }},
		field{"gpgcheck", func(v *yaml.Node, p string) { r.Gpgcheck = d.boolean(v, p) }},
		field{"architectures", func(v *yaml.Node, p string) {
			r.Architectures = d.strList(v, p)
			for _, a := range r.Architectures {
				d.check(v, p, CheckRepoWord("architecture", a))
			}
		}},
	)...) {
		return nil
	}
	d.required(n, path, "name", r.Name)
	d.required(n, path, "type", typ)
	d.required(n, path, "url", r.Url)
	switch typ {
	case "yum":
		r.Type = hivev1.RepoType_REPO_TYPE_YUM
		if r.Suite != "" || len(r.Components) > 0 {
			d.errorf(n, path, "suite and components are for apt repositories only")
		}
	case "apt":
		r.Type = hivev1.RepoType_REPO_TYPE_APT
		if r.Suite == "" {
			r.Suite = "stable"
		}
		if len(r.Components) == 0 {
			r.Components = []string{"main"}
		}
	}
	if r.Name != "" {
		d.check(n, path+".name", CheckRepoName(r.Name))
	}
	if r.Gpgcheck && r.SigningKey == "" && r.SigningKeyUrl == "" && r.Url != "" {
		d.errorf(n, path, "a signing key is required: give key or key_url, or set gpgcheck: false")
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Repo{Repo: r}
	return res
}

func (d *decoder) url(n *yaml.Node, path string) string {
	s := d.str(n, path)
	if s == "" {
		return ""
	}
	for _, scheme := range []string{"http://", "https://", "file://"} {
		if strings.HasPrefix(s, scheme) && len(s) > len(scheme) {
			d.check(n, path, CheckRepoWord("URL", s))
			return s
		}
	}
	d.errorf(n, path, "%q is not an http, https or file URL", s)
	return s
}

// required reports an empty required field, unless an error about that
// field was already reported (a wrong type, say).
func (d *decoder) required(n *yaml.Node, path, key, val string) {
	if val != "" {
		return
	}
	full := joinPath(path, key)
	if d.errPaths[full] {
		return
	}
	if _, seen := d.pos[full]; seen {
		d.errorf(n, full, "must not be empty")
		return
	}
	d.errorf(n, full, "required")
}

func (d *decoder) pkg(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	p := &hivev1.Package{State: hivev1.PackageState_PACKAGE_STATE_PRESENT}
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		p.Name = n.Value
	} else if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, fp string) { p.Name = d.str(v, fp) }},
		field{"state", func(v *yaml.Node, fp string) {
			if d.oneOf(v, fp, "present", "absent") == "absent" {
				p.State = hivev1.PackageState_PACKAGE_STATE_ABSENT
			}
		}},
		field{"version", func(v *yaml.Node, fp string) {
			p.Version = d.str(v, fp)
			d.check(v, fp, CheckPackageVersion(p.Version))
		}},
		field{"repo", func(v *yaml.Node, fp string) { p.Repo = d.str(v, fp) }},
		field{"hold", func(v *yaml.Node, fp string) { p.Hold = d.boolean(v, fp) }},
	)...) {
		return nil
	}
	d.required(n, path, "name", p.Name)
	if p.Name != "" {
		d.check(n, path+".name", CheckPackageName(p.Name))
	}
	if p.State == hivev1.PackageState_PACKAGE_STATE_ABSENT && p.Version != "" {
		d.errorf(n, path+".version", "a version makes no sense for an absent package")
	}
	if p.State == hivev1.PackageState_PACKAGE_STATE_ABSENT && p.Hold {
		d.errorf(n, path+".hold", "an absent package cannot be held")
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Package{Package: p}
	return res
}

func (d *decoder) fileRes(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	f := &hivev1.File{}
	var state string
	modeSet := false
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"path", func(v *yaml.Node, p string) { f.Path = d.str(v, p) }},
		field{"state", func(v *yaml.Node, p string) { state = d.oneOf(v, p, "file", "directory", "absent") }},
		field{"content", func(v *yaml.Node, p string) {
			if v.Kind == yaml.ScalarNode && isNull(v) {
				return
			}
			if v.Kind != yaml.ScalarNode {
				d.errorf(v, p, "expected a string, got %s", kindName(v))
				return
			}
			f.Content = v.Value
		}},
		field{"template", func(v *yaml.Node, p string) { f.Template = d.boolean(v, p) }},
		field{"mode", func(v *yaml.Node, p string) { f.Mode, modeSet = d.mode(v, p) }},
		field{"owner", func(v *yaml.Node, p string) { f.Owner = d.account(v, p) }},
		field{"group", func(v *yaml.Node, p string) { f.Group = d.account(v, p) }},
	)...) {
		return nil
	}
	d.required(n, path, "path", f.Path)
	if f.Path != "" {
		if msg := checkPath(f.Path); msg != "" {
			d.errorf(n, path+".path", "%s", msg)
		}
	}
	switch state {
	case "", "file":
		f.State = hivev1.FileState_FILE_STATE_FILE
	case "directory":
		f.State = hivev1.FileState_FILE_STATE_DIRECTORY
		if f.Content != "" {
			d.errorf(n, path+".content", "a directory has no content")
		}
	case "absent":
		f.State = hivev1.FileState_FILE_STATE_ABSENT
		if f.Content != "" || modeSet || f.Owner != "" || f.Group != "" {
			d.errorf(n, path, "an absent file takes no content, mode, owner or group")
		}
	}
	if f.State != hivev1.FileState_FILE_STATE_ABSENT {
		if !modeSet {
			f.Mode = 0o644
			if f.State == hivev1.FileState_FILE_STATE_DIRECTORY {
				f.Mode = 0o755
			}
		}
		if f.Owner == "" {
			f.Owner = "root"
		}
		if f.Group == "" {
			f.Group = "root"
		}
	}
	if f.Template {
		secrets, err := templateSecrets(f.Content)
		if err != nil {
			d.errorf(n, path+".content", "template: %v", err)
		}
		f.Secrets = secrets
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_File{File: f}
	return res
}

// checkPath returns why p is not an acceptable absolute, clean path.
func checkPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("path %q must be absolute", p)
	case p == "/":
		return "path / cannot be managed"
	case strings.ContainsRune(p, 0):
		return "path contains a NUL byte"
	case len(p) > 4096:
		return "path longer than 4096 bytes"
	}
	for _, part := range strings.Split(p[1:], "/") {
		switch part {
		case "":
			return fmt.Sprintf("path %q has an empty element (// or a trailing /)", p)
		case ".", "..":
			return fmt.Sprintf("path %q must not contain . or .. elements", p)
		}
	}
	return ""
}

func (d *decoder) mode(n *yaml.Node, path string) (uint32, bool) {
	if !d.scalar(n, path, "an octal mode such as \"0644\"") {
		return 0, false
	}
	s := strings.TrimPrefix(n.Value, "0o")
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 || len(s) < 3 || len(s) > 4 {
		d.errorf(n, path, "invalid mode %q: expected octal permission bits 000-7777, quoted, e.g. \"0644\"", n.Value)
		return 0, true
	}
	return uint32(v), true
}

var accountRE = regexp.MustCompile(`^([a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10})$`)

func (d *decoder) account(n *yaml.Node, path string) string {
	s := d.str(n, path)
	if s != "" && !accountRE.MatchString(s) {
		d.errorf(n, path, "%q is not a valid user or group name or numeric id", s)
	}
	return s
}

var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.@\\-]+$`)

// UnitName adds ".service" to a unit name that has no unit-type suffix.
func UnitName(name string) string { return kinds.UnitName(name) }

func (d *decoder) service(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	s := &hivev1.Service{State: hivev1.ServiceState_SERVICE_STATE_RUNNING}
	var enabled *bool
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		s.Name = n.Value
	} else if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { s.Name = d.str(v, p) }},
		field{"state", func(v *yaml.Node, p string) {
			if d.oneOf(v, p, "running", "stopped") == "stopped" {
				s.State = hivev1.ServiceState_SERVICE_STATE_STOPPED
			}
		}},
		field{"enabled", func(v *yaml.Node, p string) { b := d.boolean(v, p); enabled = &b }},
		field{"reload", func(v *yaml.Node, p string) { s.ReloadOnNotify = d.boolean(v, p) }},
	)...) {
		return nil
	}
	d.required(n, path, "name", s.Name)
	if s.Name != "" && !unitRE.MatchString(s.Name) {
		d.errorf(n, path+".name", "%q is not a valid systemd unit name", s.Name)
	}
	s.Name = UnitName(s.Name)
	if enabled == nil {
		b := s.State == hivev1.ServiceState_SERVICE_STATE_RUNNING
		enabled = &b
	}
	s.Enabled = enabled
	if len(c.notify) > 0 {
		d.errorf(n, path+".notify", "services cannot notify other resources")
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Service{Service: s}
	return res
}

var actions = map[string]hivev1.FirewallAction{
	"accept": hivev1.FirewallAction_FIREWALL_ACTION_ACCEPT,
	"drop":   hivev1.FirewallAction_FIREWALL_ACTION_DROP,
	"reject": hivev1.FirewallAction_FIREWALL_ACTION_REJECT,
	"log":    hivev1.FirewallAction_FIREWALL_ACTION_LOG,
}

func (d *decoder) firewall(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	fw := &hivev1.Firewall{ConfirmSeconds: 30}
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"policies", func(v *yaml.Node, p string) {
			d.entries(v, p, func(chain string, k, pv *yaml.Node, pp string) {
				if chain != "input" && chain != "forward" && chain != "output" {
					d.errorf(k, pp, "policy chain %q is not one of input, forward, output", chain)
					return
				}
				a := d.oneOf(pv, pp, "accept", "drop")
				if a == "" {
					return
				}
				if fw.Policies == nil {
					fw.Policies = map[string]hivev1.FirewallAction{}
				}
				fw.Policies[chain] = actions[a]
			})
		}},
		field{"rules", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				if r := d.rule(item, ip); r != nil {
					fw.Rules = append(fw.Rules, r)
				}
			})
		}},
	)...) {
		return nil
	}
	res := d.resource(n, path, &c)
	// The firewall provider keeps its own window (always on, 30 s unless
	// confirm says otherwise): the value lives in its message.
	if res.ConfirmSeconds > 0 {
		fw.ConfirmSeconds, res.ConfirmSeconds = res.ConfirmSeconds, 0
	}
	res.Kind = &hivev1.Resource_Firewall{Firewall: fw}
	return res
}

func (d *decoder) rule(n *yaml.Node, path string) *hivev1.FirewallRule {
	r := &hivev1.FirewallRule{}
	var action, family string
	if !d.mapping(n, path,
		field{"chain", func(v *yaml.Node, p string) { r.Chain = d.oneOf(v, p, "input", "forward", "output") }},
		field{"proto", func(v *yaml.Node, p string) { r.Protocol = d.oneOf(v, p, "tcp", "udp", "icmp", "icmpv6", "all") }},
		field{"ports", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				if port := d.port(item, ip); port != "" {
					r.Ports = append(r.Ports, port)
				}
			})
		}},
		field{"sources", func(v *yaml.Node, p string) { r.Sources = d.cidrs(v, p) }},
		field{"from_roles", func(v *yaml.Node, p string) { r.SourceRoles = d.strList(v, p) }},
		field{"destinations", func(v *yaml.Node, p string) { r.Destinations = d.cidrs(v, p) }},
		field{"in_interface", func(v *yaml.Node, p string) { r.InInterface = d.iface(v, p) }},
		field{"out_interface", func(v *yaml.Node, p string) { r.OutInterface = d.iface(v, p) }},
		field{"states", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				if s := d.oneOf(item, ip, "new", "established", "related", "invalid", "untracked"); s != "" {
					r.States = append(r.States, s)
				}
			})
		}},
		field{"action", func(v *yaml.Node, p string) { action = d.oneOf(v, p, "accept", "drop", "reject", "log") }},
		field{"comment", func(v *yaml.Node, p string) {
			r.Comment = d.str(v, p)
			if err := CheckComment(r.Comment); err != nil {
				d.check(v, p, err)
			} else if len(r.Comment) > 200 || strings.Contains(r.Comment, "\"") {
				d.errorf(v, p, "comment must be at most 200 characters with no quotes or newlines")
			}
		}},
		field{"family", func(v *yaml.Node, p string) { family = d.oneOf(v, p, "ipv4", "ipv6", "both") }},
	) {
		return nil
	}
	if r.Chain == "" {
		r.Chain = "input"
	}
	if r.Protocol == "" {
		r.Protocol = "all"
		if len(r.Ports) > 0 {
			r.Protocol = "tcp"
		}
	}
	if len(r.Ports) > 0 && r.Protocol != "tcp" && r.Protocol != "udp" {
		d.errorf(n, path+".ports", "ports need proto tcp or udp, not %s", r.Protocol)
	}
	if r.Chain == "input" && r.OutInterface != "" {
		d.errorf(n, path+".out_interface", "the input chain has no outgoing interface")
	}
	if r.Chain == "output" && r.InInterface != "" {
		d.errorf(n, path+".in_interface", "the output chain has no incoming interface")
	}
	if action == "" {
		action = "accept"
	}
	r.Action = actions[action]
	switch family {
	case "ipv4":
		r.Family = hivev1.IPFamily_IP_FAMILY_IPV4
	case "ipv6":
		r.Family = hivev1.IPFamily_IP_FAMILY_IPV6
	default:
		r.Family = hivev1.IPFamily_IP_FAMILY_BOTH
		if fam := cidrFamily(append(append([]string{}, r.Sources...), r.Destinations...)); fam != hivev1.IPFamily_IP_FAMILY_UNSPECIFIED {
			r.Family = fam
		}
	}
	if r.Protocol == "icmp" && r.Family == hivev1.IPFamily_IP_FAMILY_BOTH {
		r.Family = hivev1.IPFamily_IP_FAMILY_IPV4
	}
	if r.Protocol == "icmpv6" && r.Family == hivev1.IPFamily_IP_FAMILY_BOTH {
		r.Family = hivev1.IPFamily_IP_FAMILY_IPV6
	}
	if fam := cidrFamily(append(append([]string{}, r.Sources...), r.Destinations...)); fam == hivev1.IPFamily_IP_FAMILY_BOTH {
		d.errorf(n, path, "sources and destinations mix IPv4 and IPv6 addresses: split the rule in two")
	} else if fam != hivev1.IPFamily_IP_FAMILY_UNSPECIFIED && r.Family != fam {
		d.errorf(n, path+".family", "family %s does not match the addresses given", strings.ToLower(strings.TrimPrefix(r.Family.String(), "IP_FAMILY_")))
	}
	return r
}

func (d *decoder) port(n *yaml.Node, path string) string {
	if !d.scalar(n, path, "a port or range") {
		return ""
	}
	lo, hi, isRange := strings.Cut(n.Value, ":")
	if !isRange {
		lo, hi, isRange = strings.Cut(n.Value, "-")
	}
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b := a
	var err2 error
	if isRange {
		b, err2 = strconv.ParseUint(hi, 10, 16)
	}
	if err1 != nil || err2 != nil || a == 0 || b < a {
		d.errorf(n, path, "invalid port %q: expected 1-65535 or a range like \"8000:8100\"", n.Value)
		return ""
	}
	if isRange {
		return fmt.Sprintf("%d:%d", a, b)
	}
	return strconv.FormatUint(a, 10)
}

func (d *decoder) iface(n *yaml.Node, path string) string {
	s := d.str(n, path)
	d.check(n, path, CheckInterface(s))
	return s
}

func (d *decoder) drbd(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	r := &hivev1.Drbd{Protocol: "C", MetaDisk: "internal"}
	minorSet, portSet := false, false
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { r.Name = d.str(v, p) }},
		field{"minor", func(v *yaml.Node, p string) { r.Minor = d.uint32In(v, p, 0, 1048575); minorSet = true }},
		field{"disk", func(v *yaml.Node, p string) {
			r.Disk = d.str(v, p)
			if r.Disk != "" {
				d.check(v, p, CheckDrbdDevice("disk", r.Disk))
			}
		}},
		field{"meta_disk", func(v *yaml.Node, p string) {
			r.MetaDisk = d.str(v, p)
			if r.MetaDisk != "internal" && r.MetaDisk != "" {
				d.check(v, p, CheckDrbdDevice("meta_disk (\"internal\" or a device path)", r.MetaDisk))
			}
		}},
		field{"port", func(v *yaml.Node, p string) { r.Port = d.uint32In(v, p, 1, 65535); portSet = true }},
		field{"protocol", func(v *yaml.Node, p string) { r.Protocol = d.oneOf(v, p, "A", "B", "C") }},
		field{"peers", func(v *yaml.Node, p string) { r.PeerRole = d.str(v, p) }},
		field{"options", func(v *yaml.Node, p string) {
			r.Options = d.strMap(v, p)
			// Each error at its key or value.
			v = resolve(v)
			if v.Kind != yaml.MappingNode {
				return
			}
			for i := 0; i+1 < len(v.Content); i += 2 {
				k, val := resolve(v.Content[i]), resolve(v.Content[i+1])
				if err := CheckDrbdOptionKey(k.Value); err != nil {
					d.errorf(k, p+"."+k.Value, "%v", err)
				} else if val.Kind == yaml.ScalarNode {
					d.check(val, p+"."+k.Value, CheckDrbdOptionValue(k.Value, val.Value))
				}
			}
		}},
	)...) {
		return nil
	}
	d.required(n, path, "name", r.Name)
	d.required(n, path, "disk", r.Disk)
	d.required(n, path, "peers", r.PeerRole)
	if !minorSet {
		d.errorf(n, path+".minor", "required")
	}
	if !portSet {
		d.errorf(n, path+".port", "required")
	}
	if r.Name != "" {
		d.check(n, path+".name", CheckDrbdName(r.Name))
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Drbd{Drbd: r}
	return res
}

func (d *decoder) swarm(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	s := &hivev1.Swarm{}
	var role string
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"role", func(v *yaml.Node, p string) { role = d.oneOf(v, p, "manager", "worker") }},
		field{"init", func(v *yaml.Node, p string) { s.Init = d.boolean(v, p) }},
		field{"labels", func(v *yaml.Node, p string) {
			s.Labels = d.strMap(v, p)
			// hive.* node labels are hive's own: hive.volume.NAME places
			// a volume's service on its DRBD nodes, hive.drained marks a
			// node hive drained. A site file setting one could pull a
			// database onto a node without its data, or undo a drain.
			d.entries(v, p, func(name string, k, _ *yaml.Node, kp string) {
				if strings.HasPrefix(name, "hive.") {
					d.errorf(k, kp, "labels starting with \"hive.\" are hive's own (hive.volume.NAME, hive.drained)")
				}
			})
		}},
		field{"advertise_addr", func(v *yaml.Node, p string) { s.AdvertiseAddr = d.str(v, p) }},
		field{"networks", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				nw := &hivev1.SwarmNetwork{}
				if !d.mapping(item, ip,
					field{"name", func(v *yaml.Node, p string) { nw.Name = d.str(v, p) }},
					field{"subnet", func(v *yaml.Node, p string) {
						if cs := d.cidrs(v, p); len(cs) == 1 {
							nw.Subnet = cs[0]
						}
					}},
					field{"attachable", func(v *yaml.Node, p string) { nw.Attachable = d.boolean(v, p) }},
					field{"encrypted", func(v *yaml.Node, p string) { nw.Encrypted = d.boolean(v, p) }},
				) {
					return
				}
				d.required(item, ip, "name", nw.Name)
				s.Networks = append(s.Networks, nw)
			})
		}},
	)...) {
		return nil
	}
	d.required(n, path, "role", role)
	switch role {
	case "manager":
		s.Role = hivev1.SwarmRole_SWARM_ROLE_MANAGER
	case "worker":
		s.Role = hivev1.SwarmRole_SWARM_ROLE_WORKER
		if s.Init {
			d.errorf(n, path+".init", "only a manager role can initialise the swarm")
		}
		if len(s.Networks) > 0 {
			d.errorf(n, path+".networks", "networks are created by managers: declare them in a manager role")
		}
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Swarm{Swarm: s}
	return res
}

// confirmKinds lists the kinds that take `confirm:`.
func confirmKinds() []string {
	var out []string
	for _, k := range kinds.All {
		if k.Confirm {
			out = append(out, k.Name)
		}
	}
	return out
}
