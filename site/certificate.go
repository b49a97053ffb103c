package site

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The certificate and ca_trust kinds: their YAML form (a role's
// `certificates` list and `ca_trust: true`) and their checks, shared by
// Parse and the coordinator's validation of a pushed site.

// CertificateNodePlaceholder in a certificate's dns_names stands for the
// node's name.
const CertificateNodePlaceholder = "{node}"

// CaTrustKey is the key of the ca_trust resource.
const CaTrustKey = "ca_trust:site"

var certNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)

// CheckCertificateName checks a certificate resource's name: 1 to 64
// letters, digits, '.', '_' and '-', not starting with '.' or '-'.
func CheckCertificateName(n string) error {
	if !certNameRE.MatchString(n) {
		return fmt.Errorf("certificate name %q: use 1 to 64 letters, digits, '.', '_' and '-', not starting with '.' or '-'", n)
	}
	return nil
}

// CheckCertificateDNSName checks one of a certificate's dns_names: a host
// name, optionally with a leading "*." wildcard, in which "{node}" may
// stand for the node's name.
func CheckCertificateDNSName(d string) error {
	sample := strings.ReplaceAll(d, CertificateNodePlaceholder, "node")
	if strings.ContainsAny(sample, "{}") {
		return fmt.Errorf("dns name %q: the only placeholder is %s", d, CertificateNodePlaceholder)
	}
	if strings.Contains(strings.TrimPrefix(sample, "*."), "*") {
		return fmt.Errorf("dns name %q: a wildcard is allowed only as the whole leftmost label (\"*.example.com\")", d)
	}
	return pki.ValidateServiceDNSName(sample)
}

// CheckCertificate checks a certificate resource; each error names its
// field.
func CheckCertificate(c *hivev1.Certificate) []FieldError {
	var errs []FieldError
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, FieldError{Field: field, Err: err})
		}
	}
	add("name", CheckCertificateName(c.GetName()))
	paths := map[string]string{}
	for _, p := range []struct{ field, path string }{{"cert", c.GetCertPath()}, {"key", c.GetKeyPath()}, {"ca", c.GetCaPath()}} {
		if p.path == "" {
			if p.field != "ca" {
				add(p.field, fmt.Errorf("required"))
			}
			continue
		}
		if msg := checkPath(p.path); msg != "" {
			add(p.field, fmt.Errorf("%s", msg))
			continue
		}
		if other, dup := paths[p.path]; dup {
			add(p.field, fmt.Errorf("path %q is also the %s path", p.path, other))
		}
		paths[p.path] = p.field
	}
	if n := len(c.GetDnsNames()); n > pki.MaxServiceDNSNames {
		add("dns_names", fmt.Errorf("%d names; the limit is %d", n, pki.MaxServiceDNSNames))
	}
	for i, d := range c.GetDnsNames() {
		add(fmt.Sprintf("dns_names[%d]", i), CheckCertificateDNSName(d))
	}
	if v := time.Duration(c.GetValiditySeconds()) * time.Second; v != 0 && (v < pki.MinServiceValidity || v > pki.MaxServiceValidity) {
		add("validity", fmt.Errorf("%v is outside %v to %v (%d days)", v, pki.MinServiceValidity, pki.MaxServiceValidity, pki.MaxServiceValidity/(24*time.Hour)))
	}
	if c.GetKeyMode() > 0o7777 {
		add("key_mode", fmt.Errorf("invalid mode %#o", c.GetKeyMode()))
	}
	for _, a := range []struct{ field, v string }{{"owner", c.GetOwner()}, {"group", c.GetGroup()}} {
		if a.v != "" && !accountRE.MatchString(a.v) {
			add(a.field, fmt.Errorf("%q is not a valid user or group name or numeric id", a.v))
		}
	}
	return errs
}

// FieldError is a problem with one field of a resource.
type FieldError struct {
	Field string
	Err   error
}

// certificate decodes one entry of a role's `certificates` list.
func (d *decoder) certificate(n *yaml.Node, path string) *hivev1.Resource {
	var cm common
	c := &hivev1.Certificate{}
	if !d.mapping(n, path, append(d.commonFields(&cm),
		field{"name", func(v *yaml.Node, p string) { c.Name = d.str(v, p) }},
		field{"cert", func(v *yaml.Node, p string) { c.CertPath = d.str(v, p) }},
		field{"key", func(v *yaml.Node, p string) { c.KeyPath = d.str(v, p) }},
		field{"ca", func(v *yaml.Node, p string) { c.CaPath = d.str(v, p) }},
		field{"dns_names", func(v *yaml.Node, p string) { c.DnsNames = d.strList(v, p) }},
		field{"validity", func(v *yaml.Node, p string) {
			s := d.str(v, p)
			dur, err := time.ParseDuration(s)
			if err != nil || dur%time.Second != 0 || dur <= 0 {
				d.errorf(v, p, "invalid validity %q: a positive whole number of seconds as a duration, e.g. \"2160h\"", s)
				return
			}
			c.ValiditySeconds = uint32(min(dur/time.Second, 1<<31))
		}},
		field{"owner", func(v *yaml.Node, p string) { c.Owner = d.account(v, p) }},
		field{"group", func(v *yaml.Node, p string) { c.Group = d.account(v, p) }},
		field{"key_mode", func(v *yaml.Node, p string) { c.KeyMode, _ = d.mode(v, p) }},
	)...) {
		return nil
	}
	d.required(n, path, "name", c.Name)
	d.required(n, path, "cert", c.CertPath)
	d.required(n, path, "key", c.KeyPath)
	if c.KeyMode == 0 {
		c.KeyMode = 0o600
	}
	if c.Owner == "" {
		c.Owner = "root"
	}
	if c.Group == "" {
		c.Group = "root"
	}
	for _, fe := range CheckCertificate(c) {
		p := joinPath(path, fe.Field)
		if d.errPaths[p] || fe.Err.Error() == "required" {
			continue // reported already (a wrong type, or by d.required)
		}
		d.errorf(n, p, "%v", fe.Err)
	}
	res := d.resource(n, path, &cm)
	res.Kind = &hivev1.Resource_Certificate{Certificate: c}
	return res
}

// caTrust decodes a role's `ca_trust: true` (nil for false).
func (d *decoder) caTrust(n *yaml.Node, path string) *hivev1.Resource {
	if !d.boolean(n, path) {
		return nil
	}
	res := d.resource(n, path, &common{})
	res.Kind = &hivev1.Resource_CaTrust{CaTrust: &hivev1.CaTrust{}}
	return res
}

// certificateFormat re-runs the certificate field checks for a resource
// received over the API.
func (c *checker) certificateFormat(res *hivev1.Resource) {
	for _, fe := range CheckCertificate(res.GetCertificate()) {
		c.atErr(res, fe.Field, fe.Err)
	}
}

// caTrustFormat: ca_trust has no fields.
func (c *checker) caTrustFormat(*hivev1.Resource) {}
