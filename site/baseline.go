package site

import (
	"fmt"
	"math"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Decoders and checks of the host baseline kinds: user, group, hosts,
// hostname, timezone, locale (their entries in siteKinds).

const maxID = math.MaxUint32 - 1 // (uid_t)-1 means "no change" to the tools

func (d *decoder) user(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	u := &hivev1.User{}
	var state string
	var set = map[string]bool{}
	note := func(k string) { set[k] = true }
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		u.Name = n.Value
	} else if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { u.Name = d.str(v, p) }},
		field{"uid", func(v *yaml.Node, p string) { id := d.uint32In(v, p, 0, maxID); u.Uid = &id; note("uid") }},
		field{"group", func(v *yaml.Node, p string) {
			u.Group = d.str(v, p)
			note("group")
			if u.Group != "" {
				d.check(v, p, CheckAccountName("group", u.Group))
			}
		}},
		field{"groups", func(v *yaml.Node, p string) {
			u.Groups = d.strList(v, p)
			note("groups")
			for _, g := range u.Groups {
				d.check(v, p, CheckAccountName("group", g))
			}
		}},
		field{"home", func(v *yaml.Node, p string) {
			u.Home = d.str(v, p)
			note("home")
			if u.Home != "" {
				d.check(v, p, CheckAccountPath("home", u.Home))
			}
		}},
		field{"shell", func(v *yaml.Node, p string) {
			u.Shell = d.str(v, p)
			note("shell")
			if u.Shell != "" {
				d.check(v, p, CheckAccountPath("shell", u.Shell))
			}
		}},
		field{"comment", func(v *yaml.Node, p string) {
			u.Comment = d.str(v, p)
			note("comment")
			d.check(v, p, CheckGecos(u.Comment))
		}},
		field{"system", func(v *yaml.Node, p string) { u.System = d.boolean(v, p); note("system") }},
		field{"password", func(v *yaml.Node, p string) {
			note("password")
			d.mapping(v, p, field{"secret", func(v *yaml.Node, p string) {
				u.PasswordSecret = d.str(v, p)
				d.check(v, p, CheckSecretName(u.PasswordSecret))
			}})
			if u.PasswordSecret == "" && !d.errPaths[p] && !d.errPaths[p+".secret"] {
				d.errorf(v, p+".secret", "required: the name of the secret holding the password hash")
			}
		}},
		field{"authorized_keys", func(v *yaml.Node, p string) {
			note("authorized_keys")
			u.ManageAuthorizedKeys = true
			if isNull(resolve(v)) {
				return
			}
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				if k := d.str(item, ip); k != "" {
					d.check(item, ip, CheckAuthorizedKey(k))
					u.AuthorizedKeys = append(u.AuthorizedKeys, k)
				}
			})
		}},
		field{"sudo", func(v *yaml.Node, p string) { u.Sudo = d.sudo(v, p); note("sudo") }},
		field{"state", func(v *yaml.Node, p string) { state = d.oneOf(v, p, "present", "absent") }},
		field{"remove_home", func(v *yaml.Node, p string) { u.RemoveHome = d.boolean(v, p); note("remove_home") }},
	)...) {
		return nil
	}
	d.required(n, path, "name", u.Name)
	if u.Name != "" {
		d.check(n, path+".name", CheckAccountName("user", u.Name))
	}
	u.Absent = state == "absent"
	if u.Absent {
		for _, k := range []string{"uid", "group", "groups", "home", "shell", "comment", "system", "password", "authorized_keys", "sudo"} {
			if set[k] {
				d.errorf(n, path+"."+k, "an absent user takes only name and remove_home")
				break
			}
		}
	} else if u.RemoveHome {
		d.errorf(n, path+".remove_home", "remove_home is for state: absent")
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_User{User: u}
	return res
}

// sudo decodes a list of sudoers rules.
func (d *decoder) sudo(n *yaml.Node, path string) []string {
	var out []string
	n = resolve(n)
	one := func(v *yaml.Node, p string) {
		if s := d.str(v, p); s != "" || (v.Kind == yaml.ScalarNode && !isNull(v)) {
			d.check(v, p, CheckSudoRule(s))
			out = append(out, s)
		}
	}
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		one(n, path)
		return out
	}
	d.list(n, path, func(_ int, v *yaml.Node, p string) { one(v, p) })
	return out
}

func (d *decoder) group(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	g := &hivev1.Group{}
	var state string
	other := false
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		g.Name = n.Value
	} else if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(v *yaml.Node, p string) { g.Name = d.str(v, p) }},
		field{"gid", func(v *yaml.Node, p string) { id := d.uint32In(v, p, 0, maxID); g.Gid = &id; other = true }},
		field{"system", func(v *yaml.Node, p string) { g.System = d.boolean(v, p); other = true }},
		field{"sudo", func(v *yaml.Node, p string) { g.Sudo = d.sudo(v, p); other = true }},
		field{"state", func(v *yaml.Node, p string) { state = d.oneOf(v, p, "present", "absent") }},
	)...) {
		return nil
	}
	d.required(n, path, "name", g.Name)
	if g.Name != "" {
		d.check(n, path+".name", CheckAccountName("group", g.Name))
	}
	g.Absent = state == "absent"
	if g.Absent && other {
		d.errorf(n, path, "an absent group takes only its name")
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Group{Group: g}
	return res
}

func (d *decoder) hosts(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	h := &hivev1.Hosts{}
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"entries", func(v *yaml.Node, p string) {
			d.list(v, p, func(_ int, item *yaml.Node, ip string) {
				e := &hivev1.Hosts_Entry{}
				if !d.mapping(item, ip,
					field{"address", func(v *yaml.Node, p string) {
						e.Address = d.str(v, p)
						if e.Address != "" {
							d.check(v, p, CheckHostAddress(e.Address))
						}
					}},
					field{"names", func(v *yaml.Node, p string) {
						e.Names = d.strList(v, p)
						for _, nm := range e.Names {
							d.check(v, p, CheckHostName(nm, 0))
						}
					}},
				) {
					return
				}
				d.required(item, ip, "address", e.Address)
				if len(e.Names) == 0 && !d.errPaths[ip+".names"] {
					d.errorf(item, ip+".names", "required: at least one name")
				}
				h.Entries = append(h.Entries, e)
			})
		}},
		field{"from_roles", func(v *yaml.Node, p string) { h.FromRoles = d.strList(v, p) }},
	)...) {
		return nil
	}
	if len(h.Entries) == 0 && len(h.FromRoles) == 0 {
		d.errorf(n, path, "hosts needs entries or from_roles")
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Hosts{Hosts: h}
	return res
}

// nameOnly decodes a kind whose only field is name, given as a scalar or
// as a mapping {name: …}; emptyOK allows an empty mapping.
func (d *decoder) nameOnly(n *yaml.Node, path string, c *common, emptyOK bool) (string, bool) {
	var name string
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		return d.str(n, path), true
	}
	if isNull(n) && emptyOK {
		return "", true
	}
	if !d.mapping(n, path, append(d.commonFields(c),
		field{"name", func(v *yaml.Node, p string) { name = d.str(v, p) }},
	)...) {
		return "", false
	}
	if !emptyOK {
		d.required(n, path, "name", name)
	}
	return name, true
}

func (d *decoder) hostname(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	name, ok := d.nameOnly(n, path, &c, true)
	if !ok {
		return nil
	}
	if name != "" {
		p := path
		if resolve(n).Kind == yaml.MappingNode {
			p += ".name"
		}
		d.check(n, p, CheckHostName(name, 64))
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Hostname{Hostname: &hivev1.Hostname{Name: name}}
	return res
}

func (d *decoder) timezone(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	name, ok := d.nameOnly(n, path, &c, false)
	if !ok {
		return nil
	}
	if name != "" {
		p := path
		if resolve(n).Kind == yaml.MappingNode {
			p += ".name"
		}
		d.check(n, p, CheckTimezone(name))
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Timezone{Timezone: &hivev1.Timezone{Name: name}}
	return res
}

func (d *decoder) locale(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	l := &hivev1.Locale{}
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		l.Lang = d.str(n, path)
		d.check(n, path, CheckLocale("LANG", l.Lang))
	} else if !d.mapping(n, path, append(d.commonFields(&c),
		field{"lang", func(v *yaml.Node, p string) {
			l.Lang = d.str(v, p)
			d.check(v, p, CheckLocale("LANG", l.Lang))
		}},
		field{"variables", func(v *yaml.Node, p string) {
			d.entries(v, p, func(name string, k, val *yaml.Node, vp string) {
				s := d.str(val, vp)
				if d.errPaths[vp] {
					return
				}
				if err := CheckLocale(name, s); err != nil {
					d.errorf(k, vp, "%v", err)
					return
				}
				if l.Variables == nil {
					l.Variables = map[string]string{}
				}
				l.Variables[name] = s
			})
		}},
	)...) {
		return nil
	} else {
		d.required(n, path, "lang", l.Lang)
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Locale{Locale: l}
	return res
}

// Checks of a Site received over the API.

func (c *checker) userFormat(res *hivev1.Resource) {
	u := res.GetUser()
	c.atErr(res, "name", CheckAccountName("user", u.GetName()))
	if u.GetGroup() != "" {
		c.atErr(res, "group", CheckAccountName("group", u.GetGroup()))
	}
	for i, g := range u.GetGroups() {
		c.atErr(res, fmt.Sprintf("groups[%d]", i), CheckAccountName("group", g))
	}
	if u.GetHome() != "" {
		c.atErr(res, "home", CheckAccountPath("home", u.GetHome()))
	}
	if u.GetShell() != "" {
		c.atErr(res, "shell", CheckAccountPath("shell", u.GetShell()))
	}
	c.atErr(res, "comment", CheckGecos(u.GetComment()))
	if u.GetPasswordSecret() != "" {
		c.atErr(res, "password.secret", CheckSecretName(u.GetPasswordSecret()))
	}
	for i, k := range u.GetAuthorizedKeys() {
		c.atErr(res, fmt.Sprintf("authorized_keys[%d]", i), CheckAuthorizedKey(k))
	}
	if len(u.GetAuthorizedKeys()) > 0 && !u.GetManageAuthorizedKeys() {
		c.at(res, "authorized_keys", "keys given without manage_authorized_keys")
	}
	for i, r := range u.GetSudo() {
		c.atErr(res, fmt.Sprintf("sudo[%d]", i), CheckSudoRule(r))
	}
	if u.GetUid() == math.MaxUint32 {
		c.at(res, "uid", "uid %d is reserved", u.GetUid())
	}
	if u.GetAbsent() && (u.Uid != nil || u.GetGroup() != "" || len(u.GetGroups()) > 0 || u.GetHome() != "" || u.GetShell() != "" || u.GetPasswordSecret() != "" || u.GetManageAuthorizedKeys() || len(u.GetSudo()) > 0 || u.GetSystem() || u.GetComment() != "") {
		c.at(res, "", "an absent user takes only name and remove_home")
	}
	if !u.GetAbsent() && u.GetRemoveHome() {
		c.at(res, "remove_home", "remove_home is for state: absent")
	}
}

func (c *checker) groupFormat(res *hivev1.Resource) {
	g := res.GetGroup()
	c.atErr(res, "name", CheckAccountName("group", g.GetName()))
	for i, r := range g.GetSudo() {
		c.atErr(res, fmt.Sprintf("sudo[%d]", i), CheckSudoRule(r))
	}
	if g.GetGid() == math.MaxUint32 {
		c.at(res, "gid", "gid %d is reserved", g.GetGid())
	}
	if g.GetAbsent() && (g.Gid != nil || g.GetSystem() || len(g.GetSudo()) > 0) {
		c.at(res, "", "an absent group takes only its name")
	}
}

func (c *checker) hostsFormat(res *hivev1.Resource) {
	h := res.GetHosts()
	for i, e := range h.GetEntries() {
		c.atErr(res, fmt.Sprintf("entries[%d].address", i), CheckHostAddress(e.GetAddress()))
		if len(e.GetNames()) == 0 {
			c.at(res, fmt.Sprintf("entries[%d].names", i), "required: at least one name")
		}
		for _, nm := range e.GetNames() {
			c.atErr(res, fmt.Sprintf("entries[%d].names", i), CheckHostName(nm, 0))
		}
	}
	if len(h.GetEntries()) == 0 && len(h.GetFromRoles()) == 0 {
		c.at(res, "", "hosts needs entries or from_roles")
	}
}

func (c *checker) hostnameFormat(res *hivev1.Resource) {
	if n := res.GetHostname().GetName(); n != "" {
		c.atErr(res, "name", CheckHostName(n, 64))
	}
}

func (c *checker) timezoneFormat(res *hivev1.Resource) {
	c.atErr(res, "name", CheckTimezone(res.GetTimezone().GetName()))
}

func (c *checker) localeFormat(res *hivev1.Resource) {
	l := res.GetLocale()
	c.atErr(res, "lang", CheckLocale("LANG", l.GetLang()))
	for _, k := range sortedKeys(l.GetVariables()) {
		c.atErr(res, "variables."+k, CheckLocale(k, l.GetVariables()[k]))
	}
}

// Cross-references, for Parse and Check alike.

func (c *checker) userRefs(res *hivev1.Resource, s *siteInfo) {
	if sn := res.GetUser().GetPasswordSecret(); sn != "" {
		s.secret(c, res, "password.secret", sn)
	}
}

func (c *checker) hostsRefs(res *hivev1.Resource, s *siteInfo) {
	for i, r := range res.GetHosts().GetFromRoles() {
		s.role(c, res, fmt.Sprintf("from_roles[%d]", i), r)
	}
}
