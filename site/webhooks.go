package site

import (
	"fmt"
	"net/url"
	"regexp"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// MaxWebhooks bounds the webhooks of a site.
const MaxWebhooks = 16

// webhooks decodes the top-level webhooks list:
//
//	webhooks:
//	  - url: https://hooks.example.com/hive
//	    events: [push, generation.converged, "node.*"]
//	    secret: webhook-hmac
func (d *decoder) webhooks(n *yaml.Node, path string) []*hivev1.Webhook {
	var out []*hivev1.Webhook
	d.list(n, path, func(_ int, item *yaml.Node, ip string) {
		w := &hivev1.Webhook{}
		if !d.mapping(item, ip,
			field{"url", func(v *yaml.Node, p string) { w.Url = d.str(v, p) }},
			field{"events", func(v *yaml.Node, p string) { w.Events = d.strList(v, p) }},
			field{"secret", func(v *yaml.Node, p string) { w.Secret = d.str(v, p) }},
		) {
			return
		}
		d.required(item, ip, "url", w.Url)
		out = append(out, w)
	})
	return out
}

// eventPatternRE is an event kind ("push", "node.phase") or a prefix of
// kinds ("node.", "node.*", "*").
var eventPatternRE = regexp.MustCompile(`^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.|\.?\*)?)$`)

// checkWebhooks checks the webhooks of s: at most MaxWebhooks, each with
// an absolute http(s) URL with a host, event patterns of the event-kind
// syntax, and a secret declared in the top-level secrets list.
func (c *checker) checkWebhooks(s *hivev1.Site, secrets map[string]bool) {
	hooks := s.GetWebhooks()
	if len(hooks) > MaxWebhooks {
		c.d.errorAt("webhooks", "%d webhooks; at most %d", len(hooks), MaxWebhooks)
	}
	for i, w := range hooks {
		p := fmt.Sprintf("webhooks[%d]", i)
		if err := checkWebhookURL(w.GetUrl()); err != nil && w.GetUrl() != "" && !c.d.errPaths[p+".url"] {
			c.d.errorAt(p+".url", "%v", err)
		} else if w.GetUrl() == "" && c.api {
			c.d.errorAt(p+".url", "required")
		}
		for j, e := range w.GetEvents() {
			if !eventPatternRE.MatchString(e) || len(e) > 64 {
				c.d.errorAt(fmt.Sprintf("%s.events[%d]", p, j), "%q is not an event kind (e.g. push, node.phase) or a prefix of kinds (node. or node.*)", e)
			}
		}
		if len(w.GetEvents()) > 64 {
			c.d.errorAt(p+".events", "%d event patterns; at most 64", len(w.GetEvents()))
		}
		if sn := w.GetSecret(); sn != "" && !secrets[sn] {
			msg := fmt.Sprintf("unknown secret %q: declare it under the top-level secrets list", sn)
			if sg := suggest(sn, s.GetSecrets()); sg != "" {
				msg = fmt.Sprintf("unknown secret %q (did you mean %q?)", sn, sg)
			}
			c.d.errorAt(p+".secret", "%s", msg)
		}
	}
}

// checkWebhookURL accepts an absolute http or https URL with a host and
// without user information (credentials belong in the signing secret).
func checkWebhookURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", s)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q carries user information; sign with a secret instead", s)
	}
	if len(s) > 2048 {
		return fmt.Errorf("URL is %d bytes; at most 2048", len(s))
	}
	return nil
}
