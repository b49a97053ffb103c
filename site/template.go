package site

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TemplateData is what a file template sees as its dot. Name, Labels,
// Roles and Peers are trusted (labels bound in certificates or set by an
// operator); Reported holds what the agent said about itself, unchecked
// beyond its character set; Addresses were checked by the coordinator
// against the node's connection or certificate.
type TemplateData struct {
	Name      string
	Labels    map[string]string
	Reported  map[string]string
	Addresses []string
	Roles     []string
	// Peers lists the nodes holding each role, by role name.
	Peers map[string][]TemplatePeer
}

// TemplatePeer is one node in TemplateData.Peers: its trusted labels and
// its first checked address.
type TemplatePeer struct {
	Name    string
	Address string
	Labels  map[string]string
}

// NewTemplateData builds the template dot from a node's facts.
func NewTemplateData(f *hivev1.NodeFacts) TemplateData {
	td := TemplateData{
		Name:      f.GetName(),
		Labels:    f.GetLabels(),
		Reported:  f.GetReportedLabels(),
		Addresses: f.GetAddresses(),
		Roles:     f.GetRoles(),
		Peers:     map[string][]TemplatePeer{},
	}
	for role, pl := range f.GetPeers() {
		for _, p := range pl.GetPeers() {
			td.Peers[role] = append(td.Peers[role], TemplatePeer{Name: p.GetName(), Address: p.GetAddress(), Labels: p.GetLabels()})
		}
		// Sorted by name, so a template renders the same whatever order
		// membership listed the peers in.
		sort.Slice(td.Peers[role], func(i, j int) bool { return td.Peers[role][i].Name < td.Peers[role][j].Name })
	}
	return td
}

// templateFuncs are the functions file templates may call. secret and
// hasRole are bound per rendering; at parse time they are placeholders.
func templateFuncs(secret func(string) (string, error), roles []string) template.FuncMap {
	return template.FuncMap{
		"secret":  secret,
		"hasRole": func(r string) bool { return contains(roles, r) },
		"join":    strings.Join,
		"upper":   strings.ToUpper,
		"lower":   strings.ToLower,
		"quote":   func(s string) string { return fmt.Sprintf("%q", s) },
	}
}

func parseTemplate(content string, secret func(string) (string, error), roles []string) (*template.Template, error) {
	return template.New("file").Option("missingkey=error").Funcs(templateFuncs(secret, roles)).Parse(content)
}

// templateSecrets parses a template and returns the secret names it
// references, sorted. Only literal names are allowed, so the coordinator can
// tell which secrets a node needs without rendering.
func templateSecrets(content string) ([]string, error) {
	t, err := parseTemplate(content, func(string) (string, error) { return "", nil }, nil)
	if err != nil {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "template: "))
	}
	names := map[string]bool{}
	var walkErr error
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			if len(n.Args) > 0 {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "secret" {
					if len(n.Args) != 2 {
						walkErr = fmt.Errorf("secret takes one quoted name")
						return
					}
					s, ok := n.Args[1].(*parse.StringNode)
					if !ok {
						walkErr = fmt.Errorf("secret takes a quoted name, not %s", n.Args[1])
						return
					}
					names[s.Text] = true
				}
			}
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.IfNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.Pipe)
			walk(n.List)
			walk(n.ElseList)
		case *parse.TemplateNode:
			walk(n.Pipe)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	if walkErr != nil {
		return nil, walkErr
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// RenderTemplate evaluates a file template for a node. secrets holds the
// values the node was given; a reference to any other secret is an error
// naming it (never its value).
func RenderTemplate(content string, facts *hivev1.NodeFacts, secrets map[string][]byte) (string, error) {
	t, err := parseTemplate(content, func(name string) (string, error) {
		v, ok := secrets[name]
		if !ok {
			return "", fmt.Errorf("secret %q has no value on this node", name)
		}
		return string(v), nil
	}, facts.GetRoles())
	if err != nil {
		return "", fmt.Errorf("parse template: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, NewTemplateData(facts)); err != nil {
		return "", fmt.Errorf("render template: %w", err)
	}
	return b.String(), nil
}
