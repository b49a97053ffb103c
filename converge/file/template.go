package file

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/template"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// ErrUnknownSecret is returned when a template references a secret the
// node state does not carry.
var ErrUnknownSecret = errors.New("unknown secret")

// Peer is a node holding a role, as templates see it.
type Peer struct {
	Name    string
	Address string
	Labels  map[string]string
}

// Data is what a template sees as ".".
type Data struct {
	Name      string
	Labels    map[string]string
	Addresses []string
	Roles     []string
	// Peers by role name, sorted by name.
	Peers map[string][]Peer
}

// TemplateData builds the template data from node facts.
func TemplateData(f *hivev1.NodeFacts) Data {
	d := Data{Name: f.GetName(), Labels: f.GetLabels(), Addresses: f.GetAddresses(), Roles: f.GetRoles(), Peers: map[string][]Peer{}}
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	for role, pl := range f.GetPeers() {
		var ps []Peer
		for _, p := range pl.GetPeers() {
			ps = append(ps, Peer{Name: p.GetName(), Address: p.GetAddress(), Labels: p.GetLabels()})
		}
		sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
		d.Peers[role] = ps
	}
	return d
}

func parseTemplate(name, text string, facts *hivev1.NodeFacts, secrets map[string][]byte) (*template.Template, error) {
	funcs := template.FuncMap{
		"secret": func(n string) (string, error) {
			v, ok := secrets[n]
			if !ok {
				return "", fmt.Errorf("%w %q", ErrUnknownSecret, n)
			}
			return string(v), nil
		},
		"join": strings.Join,
		"hasRole": func(r string) bool {
			for _, x := range facts.GetRoles() {
				if x == r {
					return true
				}
			}
			return false
		},
	}
	t, err := template.New(name).Option("missingkey=error").Funcs(funcs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	return t, nil
}

// render executes the template text with the node's facts and secrets.
func render(name, text string, facts *hivev1.NodeFacts, secrets map[string][]byte) ([]byte, error) {
	t, err := parseTemplate(name, text, facts, secrets)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, TemplateData(facts)); err != nil {
		return nil, fmt.Errorf("render template: %w", err)
	}
	return buf.Bytes(), nil
}

// Secrets returns the names of the secrets a template references through
// `secret "name"` with a literal name, sorted, for the site parser.
func Secrets(text string) ([]string, error) {
	t, err := parseTemplate("t", text, nil, nil)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	walkSecrets(t.Tree.Root, seen)
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}
