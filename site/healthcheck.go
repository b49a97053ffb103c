package site

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Health check defaults and bounds (docs/site-file.md, "checks").
const (
	DefaultCheckInterval = 10 * time.Second
	DefaultCheckTimeout  = 5 * time.Second
	DefaultCheckFailures = 3
	MinCheckInterval     = time.Second
	MaxCheckInterval     = time.Hour
	MaxCheckFailures     = 100
	// MaxChecksPerRole bounds a role's checks (the coordinator also bounds
	// the results a node reports).
	MaxChecksPerRole = 32
	// MaxCheckArgs and MaxCheckField bound a command's argv and the length
	// of any one string of a check.
	MaxCheckArgs  = 64
	MaxCheckField = 1024
)

var checkNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// healthChecks decodes a role's `checks:` list.
func (d *decoder) healthChecks(n *yaml.Node, path string) []*hivev1.HealthCheck {
	var out []*hivev1.HealthCheck
	seen := map[string]bool{}
	d.list(n, path, func(i int, item *yaml.Node, ip string) {
		if i >= MaxChecksPerRole {
			if i == MaxChecksPerRole {
				d.errorf(item, ip, "a role has at most %d checks", MaxChecksPerRole)
			}
			return
		}
		hc := d.healthCheck(item, ip)
		if hc == nil {
			return
		}
		if hc.Name != "" && seen[hc.Name] {
			d.errorf(item, ip+".name", "check %q defined twice in this role", hc.Name)
		}
		seen[hc.Name] = true
		out = append(out, hc)
	})
	return out
}

func (d *decoder) healthCheck(n *yaml.Node, path string) *hivev1.HealthCheck {
	hc := &hivev1.HealthCheck{
		Source: fmt.Sprintf("%s:%d:%d", d.file, n.Line, n.Column),
	}
	var interval, timeout time.Duration
	var intervalSet, timeoutSet bool
	kinds := 0
	if !d.mapping(n, path,
		field{"name", func(v *yaml.Node, p string) { hc.Name = d.str(v, p) }},
		field{"interval", func(v *yaml.Node, p string) { interval, intervalSet = d.duration(v, p), true }},
		field{"timeout", func(v *yaml.Node, p string) { timeout, timeoutSet = d.duration(v, p), true }},
		field{"failures", func(v *yaml.Node, p string) { hc.Failures = d.uint32In(v, p, 1, MaxCheckFailures) }},
		field{"http", func(v *yaml.Node, p string) {
			kinds++
			if h := d.checkHTTP(v, p); h != nil {
				hc.Kind = &hivev1.HealthCheck_Http{Http: h}
			}
		}},
		field{"tcp", func(v *yaml.Node, p string) {
			kinds++
			t := &hivev1.CheckTCP{}
			if d.mapping(v, p, field{"address", func(v *yaml.Node, p string) {
				t.Address = d.str(v, p)
				if t.Address != "" {
					d.check(v, p, CheckTCPAddress(t.Address))
				}
			}}) {
				d.required(v, p, "address", t.Address)
				hc.Kind = &hivev1.HealthCheck_Tcp{Tcp: t}
			}
		}},
		field{"command", func(v *yaml.Node, p string) {
			kinds++
			v = resolve(v)
			if v.Kind != yaml.SequenceNode {
				d.errorf(v, p, "expected the command as a list of arguments (argv, run without a shell), e.g. [\"/usr/local/bin/probe\", \"--quick\"]; for shell syntax write [\"sh\", \"-c\", \"...\"]")
				return
			}
			argv := d.strList(v, p)
			if len(argv) == 0 {
				d.errorf(v, p, "an empty command")
				return
			}
			d.check(v, p, CheckCommandArgv(argv))
			hc.Kind = &hivev1.HealthCheck_Command{Command: &hivev1.CheckCommand{Argv: argv}}
		}},
	) {
		return nil
	}
	d.required(n, path, "name", hc.Name)
	if hc.Name != "" {
		d.check(n, path+".name", CheckHealthCheckName(hc.Name))
	}
	if kinds == 0 {
		d.errorf(n, path, "a check needs one of http, tcp or command")
	} else if kinds > 1 {
		d.errorf(n, path, "a check has exactly one of http, tcp or command")
	}
	if !intervalSet {
		interval = DefaultCheckInterval
	}
	if !timeoutSet {
		timeout = min(DefaultCheckTimeout, interval)
	}
	if intervalSet && interval != 0 && (interval < MinCheckInterval || interval > MaxCheckInterval) {
		d.errorf(n, path+".interval", "interval %v: must be from %v to %v", interval, MinCheckInterval, MaxCheckInterval)
	}
	if timeoutSet && timeout != 0 && timeout > interval && interval != 0 {
		d.errorf(n, path+".timeout", "timeout %v is longer than the interval %v", timeout, interval)
	}
	if timeoutSet && timeout != 0 && timeout < 10*time.Millisecond {
		d.errorf(n, path+".timeout", "timeout %v: must be at least 10ms", timeout)
	}
	hc.IntervalMs = uint32(interval / time.Millisecond)
	hc.TimeoutMs = uint32(timeout / time.Millisecond)
	if hc.Failures == 0 {
		hc.Failures = DefaultCheckFailures
	}
	return hc
}

// duration decodes a Go duration ("10s", "1m30s"); 0 after an error.
func (d *decoder) duration(n *yaml.Node, path string) time.Duration {
	s := d.str(n, path)
	if s == "" {
		return 0
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		d.errorf(n, path, "%q is not a duration like 10s or 1m30s", s)
		return 0
	}
	return v
}

func (d *decoder) checkHTTP(n *yaml.Node, path string) *hivev1.CheckHTTP {
	h := &hivev1.CheckHTTP{}
	if !d.mapping(n, path,
		field{"url", func(v *yaml.Node, p string) {
			h.Url = d.str(v, p)
			if h.Url != "" {
				d.check(v, p, CheckHTTPURL(h.Url))
			}
		}},
		field{"status", func(v *yaml.Node, p string) { h.Status = d.uint32In(v, p, 100, 599) }},
		field{"body", func(v *yaml.Node, p string) {
			h.Body = d.str(v, p)
			if h.Body != "" {
				d.check(v, p, CheckBodyPattern(h.Body))
			}
		}},
	) {
		return nil
	}
	d.required(n, path, "url", h.Url)
	if h.Status == 0 {
		h.Status = 200
	}
	return h
}

// CheckHealthCheckName checks a check's name.
func CheckHealthCheckName(s string) error {
	if len(s) > 64 || !checkNameRE.MatchString(s) {
		return fmt.Errorf("check name %q: use lowercase letters, digits, '.', '_' and '-' (at most 64)", s)
	}
	return nil
}

// CheckHTTPURL checks an http check's URL: http or https, with a host.
func CheckHTTPURL(s string) error {
	if len(s) > MaxCheckField {
		return fmt.Errorf("URL longer than %d bytes", MaxCheckField)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, unwrapURLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: port %q is not from 1 to 65535", s, p)
		}
	}
	if u.User != nil {
		return fmt.Errorf("%q carries credentials; checks are not secret", s)
	}
	return nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// CheckTCPAddress checks a tcp check's "host:port".
func CheckTCPAddress(s string) error {
	if len(s) > MaxCheckField {
		return fmt.Errorf("address longer than %d bytes", MaxCheckField)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port (e.g. 127.0.0.1:5432 or [::1]:80)", s)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not from 1 to 65535", s, port)
	}
	return nil
}

// CheckBodyPattern checks an http check's body pattern (RE2).
func CheckBodyPattern(s string) error {
	if len(s) > MaxCheckField {
		return fmt.Errorf("body pattern longer than %d bytes", MaxCheckField)
	}
	if _, err := regexp.Compile(s); err != nil {
		return fmt.Errorf("body %q is not a regular expression: %v", s, err)
	}
	return nil
}

// CheckCommandArgv checks a command check's argv.
func CheckCommandArgv(argv []string) error {
	if len(argv) > MaxCheckArgs {
		return fmt.Errorf("more than %d arguments", MaxCheckArgs)
	}
	for _, a := range argv {
		if len(a) > MaxCheckField {
			return fmt.Errorf("an argument longer than %d bytes", MaxCheckField)
		}
		for _, c := range a {
			if c == 0 {
				return fmt.Errorf("an argument contains a NUL byte")
			}
		}
	}
	if len(argv) > 0 && argv[0] == "" {
		return fmt.Errorf("an empty program name")
	}
	return nil
}

// CheckHealthCheck validates a check that arrived over the API with the
// rules Parse applies (defaults must already be filled).
func CheckHealthCheck(hc *hivev1.HealthCheck) error {
	if err := CheckHealthCheckName(hc.GetName()); err != nil {
		return err
	}
	iv := time.Duration(hc.GetIntervalMs()) * time.Millisecond
	to := time.Duration(hc.GetTimeoutMs()) * time.Millisecond
	if iv < MinCheckInterval || iv > MaxCheckInterval {
		return fmt.Errorf("check %q: interval %v must be from %v to %v", hc.GetName(), iv, MinCheckInterval, MaxCheckInterval)
	}
	if to < 10*time.Millisecond || to > iv {
		return fmt.Errorf("check %q: timeout %v must be from 10ms to the interval", hc.GetName(), to)
	}
	if hc.GetFailures() < 1 || hc.GetFailures() > MaxCheckFailures {
		return fmt.Errorf("check %q: failures must be from 1 to %d", hc.GetName(), MaxCheckFailures)
	}
	switch k := hc.GetKind().(type) {
	case *hivev1.HealthCheck_Http:
		if err := CheckHTTPURL(k.Http.GetUrl()); err != nil {
			return err
		}
		if s := k.Http.GetStatus(); s < 100 || s > 599 {
			return fmt.Errorf("check %q: status %d is not from 100 to 599", hc.GetName(), s)
		}
		return CheckBodyPattern(k.Http.GetBody())
	case *hivev1.HealthCheck_Tcp:
		return CheckTCPAddress(k.Tcp.GetAddress())
	case *hivev1.HealthCheck_Command:
		if len(k.Command.GetArgv()) == 0 {
			return fmt.Errorf("check %q: an empty command", hc.GetName())
		}
		return CheckCommandArgv(k.Command.GetArgv())
	default:
		return fmt.Errorf("check %q needs one of http, tcp or command", hc.GetName())
	}
}

// checkRoleChecks runs CheckHealthCheck and the per-role rules on a Site
// that arrived over the API.
func (c *checker) checkRoleChecks(s *hivev1.Site) {
	for _, r := range s.GetRoles() {
		if len(r.GetChecks()) > MaxChecksPerRole {
			c.d.errorAt("roles."+r.GetName()+".checks", "a role has at most %d checks", MaxChecksPerRole)
		}
		seen := map[string]bool{}
		for i, hc := range r.GetChecks() {
			p := fmt.Sprintf("roles.%s.checks[%d]", r.GetName(), i)
			err := CheckHealthCheck(hc)
			if err == nil && seen[hc.GetName()] {
				err = fmt.Errorf("check %q defined twice in this role", hc.GetName())
			}
			seen[hc.GetName()] = true
			if err != nil {
				e := &Error{File: c.d.file, Path: p, Msg: err.Error()}
				if file, line, col, ok := parseSource(hc.GetSource()); ok {
					e.File, e.Line, e.Col = file, line, col
				}
				c.d.add(e)
			}
		}
	}
}
