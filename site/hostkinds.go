package site

// Host-baseline kinds (issue 15): sysctl, kernel_module, mount and command.
// Their YAML decoders and API checks (the siteKinds entries of
// site/kinds.go), and the rules the agents' providers share.

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// FieldProblem is one bad field of a resource: Field is the field's name
// in the site file ("key", "options[1]").
type FieldProblem struct {
	Field string
	Err   error
}

func (p FieldProblem) Error() string { return p.Field + ": " + p.Err.Error() }

// FirstProblem returns the first problem as an error, or nil.
func FirstProblem(ps []FieldProblem) error {
	if len(ps) == 0 {
		return nil
	}
	return ps[0]
}

var (
	sysctlSegRE  = regexp.MustCompile(`^[A-Za-z0-9_@:+/-]+$`)
	moduleNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,55}$`)
	moduleOptRE  = regexp.MustCompile(`^[A-Za-z0-9_-]+(=[^\s#"'\\]+)?$`)
	fstypeRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)
	mountOptRE   = regexp.MustCompile(`^[A-Za-z0-9_=.:/+@%-]+$`)
	commandRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	envNameRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// SysctlPath returns the path under /proc/sys of a dotted sysctl key
// ("net.ipv4.ip_forward" → "net/ipv4/ip_forward"); as in sysctl(8), a '/'
// in the dotted form is a '.' in the path ("net.ipv4.conf.eth0/100.rp_filter").
func SysctlPath(key string) string {
	parts := strings.Split(key, ".")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, "/", ".")
	}
	return strings.Join(parts, "/")
}

// CheckSysctl checks a sysctl resource: a dotted key of at least two parts
// and a one-line value.
func CheckSysctl(s *hivev1.Sysctl) []FieldProblem {
	var ps []FieldProblem
	k := s.GetKey()
	switch {
	case k == "":
		ps = append(ps, FieldProblem{"key", fmt.Errorf("required")})
	case len(k) > 256 || !strings.Contains(k, "."):
		ps = append(ps, FieldProblem{"key", fmt.Errorf("sysctl key %q: want a dotted name such as net.ipv4.ip_forward", k)})
	default:
		for _, seg := range strings.Split(k, ".") {
			p := strings.ReplaceAll(seg, "/", ".")
			if !sysctlSegRE.MatchString(seg) || p == "." || p == ".." || strings.HasPrefix(seg, "/") {
				ps = append(ps, FieldProblem{"key", fmt.Errorf("sysctl key %q: part %q is not a sysctl name (letters, digits, _ @ : + - and / for a dot in an interface name)", k, seg)})
				break
			}
		}
	}
	v := s.GetValue()
	switch {
	case strings.TrimSpace(v) == "":
		ps = append(ps, FieldProblem{"value", fmt.Errorf("required")})
	case len(v) > 4096 || strings.ContainsAny(v, "\n\r\x00"):
		ps = append(ps, FieldProblem{"value", fmt.Errorf("sysctl value must be one line of at most 4096 bytes")})
	}
	return ps
}

// CheckKernelModule checks a module name and its options.
func CheckKernelModule(m *hivev1.KernelModule) []FieldProblem {
	var ps []FieldProblem
	if m.GetName() == "" {
		ps = append(ps, FieldProblem{"name", fmt.Errorf("required")})
	} else if !moduleNameRE.MatchString(m.GetName()) {
		ps = append(ps, FieldProblem{"name", fmt.Errorf("module name %q: letters, digits, _ and - only (at most 55)", m.GetName())})
	}
	for i, o := range m.GetOptions() {
		if !moduleOptRE.MatchString(o) {
			ps = append(ps, FieldProblem{fmt.Sprintf("options[%d]", i), fmt.Errorf("module option %q: want param or param=value, no spaces, quotes, backslashes or #", o)})
		}
	}
	return ps
}

// MountDeviceIsPath reports whether a mount device is a path (not
// UUID=…, LABEL=… or a pseudo-device such as tmpfs).
func MountDeviceIsPath(dev string) bool { return strings.HasPrefix(dev, "/") }

// CheckMount checks a mount resource: fields that go into /etc/fstab must
// hold no whitespace or '#'; mkfs needs a device path.
func CheckMount(m *hivev1.Mount) []FieldProblem {
	var ps []FieldProblem
	add := func(f, format string, args ...any) { ps = append(ps, FieldProblem{f, fmt.Errorf(format, args...)}) }
	if m.GetPath() == "" {
		add("path", "required")
	} else if msg := checkPath(m.GetPath()); msg != "" {
		add("path", "%s", msg)
	} else if strings.ContainsAny(m.GetPath(), " \t#\\") {
		add("path", "mount point %q holds a space, tab, # or backslash, which /etc/fstab cannot", m.GetPath())
	}
	dev := m.GetDevice()
	switch {
	case dev == "":
		add("device", "required")
	case strings.ContainsAny(dev, " \t\n#\\"):
		add("device", "device %q holds whitespace, # or a backslash", dev)
	case MountDeviceIsPath(dev):
		if path.Clean(dev) != dev {
			add("device", "device %q: want a clean absolute path", dev)
		}
	default:
		tag, val, ok := strings.Cut(dev, "=")
		switch {
		case ok && val != "" && (tag == "UUID" || tag == "LABEL" || tag == "PARTUUID" || tag == "PARTLABEL"):
		case !ok && (m.GetFstype() == "tmpfs" || m.GetFstype() == "ramfs"):
		default:
			add("device", "device %q: want a path such as /dev/vdb, or UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=…", dev)
		}
	}
	if m.GetFstype() == "" {
		add("fstype", "required")
	} else if !fstypeRE.MatchString(m.GetFstype()) {
		add("fstype", "filesystem type %q: lower-case letters, digits, . _ - only", m.GetFstype())
	}
	for i, o := range m.GetOptions() {
		if !mountOptRE.MatchString(o) {
			add(fmt.Sprintf("options[%d]", i), "mount option %q: one option per entry, no commas, spaces or #", o)
		}
	}
	if m.GetMkfs() && !MountDeviceIsPath(dev) && dev != "" {
		add("mkfs", "mkfs needs a device path (a blank device has no UUID or LABEL yet), not %q", dev)
	}
	for i, a := range m.GetMkfsArgs() {
		if !m.GetMkfs() {
			add("mkfs_args", "mkfs_args without mkfs: true")
			break
		}
		if a == "" || strings.ContainsAny(a, "\n\x00") {
			add(fmt.Sprintf("mkfs_args[%d]", i), "empty or multi-line argument")
		}
	}
	if m.GetPass() > 2 {
		add("pass", "fsck pass %d: want 0, 1 or 2", m.GetPass())
	}
	if m.GetDump() > 1 {
		add("dump", "dump %d: want 0 or 1", m.GetDump())
	}
	return ps
}

// Command timeouts.
const (
	DefaultCommandTimeout = 300 * time.Second
	MaxCommandTimeout     = 24 * time.Hour
)

// CheckCommand checks a command resource (secret names are checked
// against the site by the checker).
func CheckCommand(c *hivev1.GuardedCommand) []FieldProblem {
	var ps []FieldProblem
	add := func(f, format string, args ...any) { ps = append(ps, FieldProblem{f, fmt.Errorf(format, args...)}) }
	if c.GetName() == "" {
		add("name", "required")
	} else if !commandRE.MatchString(c.GetName()) {
		add("name", "command name %q: a letter or digit, then letters, digits, . _ - (at most 128)", c.GetName())
	}
	switch {
	case len(c.GetArgv()) == 0 && c.GetShell() == "":
		add("argv", "give argv (run directly) or shell (run by /bin/sh -c)")
	case len(c.GetArgv()) > 0 && c.GetShell() != "":
		add("shell", "give argv or shell, not both")
	case len(c.GetArgv()) > 0 && !strings.HasPrefix(c.GetArgv()[0], "/"):
		add("argv[0]", "program %q must be an absolute path (the agent's PATH is not the operator's)", c.GetArgv()[0])
	}
	if c.GetCreates() == "" && c.GetUnless() == "" && c.GetOnlyif() == "" && !c.GetOnNotify() {
		add("creates", "a command needs a guard (creates, unless or onlyif) or on_notify: true, or it would run on every convergence")
	}
	for i, a := range c.GetArgv() {
		if strings.ContainsRune(a, 0) {
			add(fmt.Sprintf("argv[%d]", i), "contains a NUL byte")
		}
	}
	for _, f := range []struct{ name, v string }{{"shell", c.GetShell()}, {"unless", c.GetUnless()}, {"onlyif", c.GetOnlyif()}} {
		if strings.ContainsRune(f.v, 0) {
			add(f.name, "contains a NUL byte")
		}
	}
	if p := c.GetCreates(); p != "" {
		if msg := checkPath(p); msg != "" {
			add("creates", "%s", msg)
		}
	}
	if p := c.GetDir(); p != "" {
		if msg := checkPath(p); msg != "" {
			add("dir", "%s", msg)
		}
	}
	if t := time.Duration(c.GetTimeoutSeconds()) * time.Second; t > MaxCommandTimeout {
		add("timeout", "timeout %s is longer than %s", t, MaxCommandTimeout)
	}
	for i, e := range c.GetEnvironment() {
		n, v, ok := strings.Cut(e, "=")
		if !ok || !envNameRE.MatchString(n) || strings.ContainsRune(v, 0) {
			add(fmt.Sprintf("environment[%d]", i), "%q: want NAME=value with NAME letters, digits and _", n)
		}
	}
	for i, s := range c.GetSecrets() {
		if err := CheckSecretName(s); err != nil {
			add(fmt.Sprintf("secrets[%d]", i), "%v", err)
		}
	}
	return ps
}

// CommandSecretEnv is the environment variable a command's secret is
// exposed in: HIVE_SECRET_ and the name upper-cased, non-alphanumerics as _.
func CommandSecretEnv(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return "HIVE_SECRET_" + string(b)
}

// problems reports a kind's field problems at path.field, unless that
// field already has an error (a wrong type, say).
func (d *decoder) problems(n *yaml.Node, path string, ps []FieldProblem) {
	for _, p := range ps {
		full := joinPath(path, p.Field)
		if d.errPaths[full] {
			continue
		}
		if p.Err.Error() == "required" {
			d.required(n, path, p.Field, "")
			continue
		}
		at := full
		if _, ok := d.pos[at]; !ok {
			// "options[1]" of a scalar list, "environment[0]" of a map:
			// point at the field.
			base, _, _ := strings.Cut(p.Field, "[")
			at = joinPath(path, base)
		}
		if q, ok := d.pos[at]; ok {
			d.add(&Error{File: d.file, Line: q.line, Col: q.col, Path: full, Msg: p.Err.Error()})
			continue
		}
		d.errorf(n, full, "%v", p.Err)
	}
}

func (d *decoder) sysctl(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	s := &hivev1.Sysctl{}
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"key", func(v *yaml.Node, p string) { s.Key = d.str(v, p) }},
		field{"value", func(v *yaml.Node, p string) { s.Value = d.str(v, p) }},
	)...) {
		return nil
	}
	d.problems(n, path, CheckSysctl(s))
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Sysctl{Sysctl: s}
	return res
}

func (d *decoder) kernelModule(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	m := &hivev1.KernelModule{}
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		m.Name = n.Value
	} else if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { m.Name = d.str(v, p) }},
		field{"options", func(v *yaml.Node, p string) { m.Options = d.strList(v, p) }},
	)...) {
		return nil
	}
	d.problems(n, path, CheckKernelModule(m))
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_KernelModule{KernelModule: m}
	return res
}

func (d *decoder) mount(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	m := &hivev1.Mount{}
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"path", func(v *yaml.Node, p string) { m.Path = d.str(v, p) }},
		field{"device", func(v *yaml.Node, p string) { m.Device = d.str(v, p) }},
		field{"fstype", func(v *yaml.Node, p string) { m.Fstype = d.str(v, p) }},
		field{"options", func(v *yaml.Node, p string) { m.Options = d.strList(v, p) }},
		field{"mkfs", func(v *yaml.Node, p string) { m.Mkfs = d.boolean(v, p) }},
		field{"mkfs_args", func(v *yaml.Node, p string) { m.MkfsArgs = d.strList(v, p) }},
		field{"dump", func(v *yaml.Node, p string) { m.Dump = d.uint32In(v, p, 0, 1) }},
		field{"pass", func(v *yaml.Node, p string) { m.Pass = d.uint32In(v, p, 0, 2) }},
	)...) {
		return nil
	}
	d.problems(n, path, CheckMount(m))
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Mount{Mount: m}
	return res
}

func (d *decoder) command(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	cmd := &hivev1.GuardedCommand{}
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { cmd.Name = d.str(v, p) }},
		field{"argv", func(v *yaml.Node, p string) { cmd.Argv = d.strList(v, p) }},
		field{"shell", func(v *yaml.Node, p string) { cmd.Shell = d.str(v, p) }},
		field{"creates", func(v *yaml.Node, p string) { cmd.Creates = d.str(v, p) }},
		field{"unless", func(v *yaml.Node, p string) { cmd.Unless = d.str(v, p) }},
		field{"onlyif", func(v *yaml.Node, p string) { cmd.Onlyif = d.str(v, p) }},
		field{"dir", func(v *yaml.Node, p string) { cmd.Dir = d.str(v, p) }},
		field{"on_notify", func(v *yaml.Node, p string) { cmd.OnNotify = d.boolean(v, p) }},
		field{"secrets", func(v *yaml.Node, p string) { cmd.Secrets = d.strList(v, p) }},
		field{"environment", func(v *yaml.Node, p string) {
			env := d.strMap(v, p)
			for _, k := range sortedKeys(env) {
				cmd.Environment = append(cmd.Environment, k+"="+env[k])
			}
		}},
		field{"timeout", func(v *yaml.Node, p string) {
			s := d.str(v, p)
			if s == "" {
				return
			}
			dur, err := time.ParseDuration(s)
			if err != nil || dur < time.Second || dur > MaxCommandTimeout || dur%time.Second != 0 {
				d.errorf(v, p, "timeout %q: expected whole seconds from 1s to 24h, e.g. \"30s\"", s)
				return
			}
			cmd.TimeoutSeconds = uint32(dur / time.Second)
		}},
	)...) {
		return nil
	}
	if cmd.TimeoutSeconds == 0 {
		cmd.TimeoutSeconds = uint32(DefaultCommandTimeout / time.Second)
	}
	sort.Strings(cmd.Secrets)
	d.problems(n, path, CheckCommand(cmd))
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Command{Command: cmd}
	return res
}

// sysctlFormat, kernelModuleFormat, mountFormat and commandFormat
// re-run, for a resource that arrived over the API, the checks their
// decoders run.
func (c *checker) sysctlFormat(res *hivev1.Resource) { c.problems(res, CheckSysctl(res.GetSysctl())) }
func (c *checker) kernelModuleFormat(res *hivev1.Resource) {
	c.problems(res, CheckKernelModule(res.GetKernelModule()))
}
func (c *checker) mountFormat(res *hivev1.Resource) { c.problems(res, CheckMount(res.GetMount())) }
func (c *checker) commandFormat(res *hivev1.Resource) {
	c.problems(res, CheckCommand(res.GetCommand()))
}

func (c *checker) problems(res *hivev1.Resource, ps []FieldProblem) {
	for _, p := range ps {
		c.atErr(res, p.Field, p.Err)
	}
}

// hostKindRefs checks what host-baseline resources refer to in the site:
// a command's secrets must be declared.
func (c *checker) hostKindRefs(res *hivev1.Resource, secrets map[string]bool, declared []string) {
	cmd := res.GetCommand()
	if cmd == nil {
		return
	}
	for i, sn := range cmd.GetSecrets() {
		if !secrets[sn] {
			msg := fmt.Sprintf("unknown secret %q: declare it under the top-level secrets list", sn)
			if sg := suggest(sn, declared); sg != "" {
				msg = fmt.Sprintf("unknown secret %q (did you mean %q?)", sn, sg)
			}
			c.at(res, fmt.Sprintf("secrets[%d]", i), "%s", msg)
		}
	}
}
