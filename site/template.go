package site

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

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
	// Facts are the host facts the agent reported (see TemplateFacts).
	Facts TemplateFacts
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
		Facts:     newTemplateFacts(f),
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
// hasRole are bound per rendering; at parse time they are placeholders. b
// bounds the text the functions build; nil (at parse time) bounds nothing
// because nothing runs.
func templateFuncs(secret func(string) (string, error), roles []string, b *budget) template.FuncMap {
	return template.FuncMap{
		"secret":  secret,
		"hasRole": func(r string) bool { return contains(roles, r) },
		"join": func(elems []string, sep string) (string, error) {
			n := len(sep) * max(len(elems)-1, 0)
			for _, e := range elems {
				n += len(e)
			}
			if err := b.reserve("join", n); err != nil {
				return "", err
			}
			return strings.Join(elems, sep), nil
		},
		// Case mapping and quoting can grow invalid UTF-8 up to 3 and 4
		// bytes per input byte.
		"upper": func(s string) (string, error) {
			if err := b.reserve("upper", 3*len(s)); err != nil {
				return "", err
			}
			return strings.ToUpper(s), nil
		},
		"lower": func(s string) (string, error) {
			if err := b.reserve("lower", 3*len(s)); err != nil {
				return "", err
			}
			return strings.ToLower(s), nil
		},
		"quote": func(s string) (string, error) {
			if err := b.reserve("quote", 4*len(s)+2); err != nil {
				return "", err
			}
			return fmt.Sprintf("%q", s), nil
		},
		// The builtins that build text are replaced by bounded ones, so
		// that no single call can allocate without limit (printf "%s%s"
		// $x $x, doubled thirty times, is 2^30 times $x).
		"print": func(args ...any) (string, error) {
			if err := b.reserve("print", argsSize(args)+len(args)); err != nil {
				return "", err
			}
			return fmt.Sprint(args...), nil
		},
		"println": func(args ...any) (string, error) {
			if err := b.reserve("println", argsSize(args)+len(args)+1); err != nil {
				return "", err
			}
			return fmt.Sprintln(args...), nil
		},
		"printf": func(format string, args ...any) (string, error) {
			if err := b.reserve("printf", printfBound(format, args)); err != nil {
				return "", err
			}
			return fmt.Sprintf(format, args...), nil
		},
		"html": func(args ...any) (string, error) {
			if err := b.reserve("html", 6*argsSize(args)); err != nil {
				return "", err
			}
			return template.HTMLEscapeString(fmt.Sprint(args...)), nil
		},
		"js": func(args ...any) (string, error) {
			if err := b.reserve("js", 6*argsSize(args)); err != nil {
				return "", err
			}
			return template.JSEscapeString(fmt.Sprint(args...)), nil
		},
		"urlquery": func(args ...any) (string, error) {
			if err := b.reserve("urlquery", 3*argsSize(args)); err != nil {
				return "", err
			}
			return url.QueryEscape(fmt.Sprint(args...)), nil
		},
		tickFunc: b.tick,
	}
}

// tickFunc is the hidden function prepended to every range body and every
// template body, so that a loop or a recursion checks the budget at each
// turn. The name cannot collide with a user function: parseTemplate
// refuses templates that call it.
const tickFunc = "hive_tick_"

// TemplateLimits bound one rendering of a file template.
type TemplateLimits struct {
	// Timeout bounds the rendering's wall time.
	Timeout time.Duration
	// MaxOutput bounds the rendered file, in bytes; the text functions
	// (printf, join, upper, ...) build is bounded by the same number.
	MaxOutput int
	// MaxIterations bounds range iterations plus template calls.
	MaxIterations int
}

// Template limit defaults; docs/site-file.md documents them.
const (
	DefaultTemplateTimeout       = 2 * time.Second
	DefaultTemplateMaxOutput     = 16 << 20
	DefaultTemplateMaxIterations = 1_000_000
)

// DefaultTemplateLimits returns the limits the agent renders with.
func DefaultTemplateLimits() TemplateLimits {
	return TemplateLimits{Timeout: DefaultTemplateTimeout, MaxOutput: DefaultTemplateMaxOutput, MaxIterations: DefaultTemplateMaxIterations}
}

func (l TemplateLimits) withDefaults() TemplateLimits {
	d := DefaultTemplateLimits()
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = d.MaxOutput
	}
	if l.MaxIterations <= 0 {
		l.MaxIterations = d.MaxIterations
	}
	return l
}

// ErrTemplateLimit is matched (errors.Is) by every rendering error caused
// by a limit (time, output size, iterations, text built) or by the
// rendering's context ending.
var ErrTemplateLimit = errors.New("template limit")

// limitError is a rendering stopped by a limit; its message names it.
type limitError struct{ msg string }

func (e *limitError) Error() string        { return e.msg }
func (e *limitError) Is(target error) bool { return target == ErrTemplateLimit }

func limitErrorf(format string, args ...any) error {
	return &limitError{msg: fmt.Sprintf(format, args...)}
}

// budget is one rendering's allowance. A nil budget allows everything (it
// is used when templates are only parsed, never executed).
type budget struct {
	ctx        context.Context
	lim        TemplateLimits
	iterations int
	built      int
}

func (b *budget) tick() (string, error) {
	if b == nil {
		return "", nil
	}
	b.iterations++
	if b.iterations > b.lim.MaxIterations {
		return "", limitErrorf("more than the limit of %d range iterations and template calls", b.lim.MaxIterations)
	}
	if b.ctx.Err() != nil {
		return "", b.ctxErr()
	}
	return "", nil
}

func (b *budget) ctxErr() error {
	if errors.Is(context.Cause(b.ctx), errRenderTimeout) {
		return limitErrorf("rendering took longer than the %v limit", b.lim.Timeout)
	}
	return limitErrorf("rendering abandoned: %v", context.Cause(b.ctx))
}

var errRenderTimeout = errors.New("template timeout")

// reserve accounts for n bytes a function is about to build.
func (b *budget) reserve(fn string, n int) error {
	if b == nil {
		return nil
	}
	if err := b.ctx.Err(); err != nil {
		return b.ctxErr()
	}
	if n < 0 || n > b.lim.MaxOutput-b.built {
		return limitErrorf("%s would build up to %d more bytes, over the limit of %s of text built by functions per file", fn, n, sizeString(b.lim.MaxOutput))
	}
	b.built += n
	return nil
}

// argsSize bounds the bytes fmt.Sprint prints for args.
func argsSize(args []any) int {
	n := 0
	for _, a := range args {
		n += valueSize(a)
	}
	return n
}

func valueSize(a any) int {
	switch v := a.(type) {
	case string:
		return len(v)
	case []byte:
		return 4 * len(v)
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr, float32, float64:
		return 32
	case complex64, complex128:
		return 64
	}
	// Facts (maps, lists, peers) are bounded by the node state's size;
	// nothing a template can call builds new composite values.
	return len(fmt.Sprint(a))
}

// printfBound is an upper bound of fmt.Sprintf(format, args...)'s length:
// each verb prints at most its width plus its precision plus four times
// the largest argument (% x and %q expand a byte up to 3 and 4 characters;
// explicit indexes can print one argument many times); fmt caps widths and
// precisions at 1e6; unused arguments are printed once more in
// %!(EXTRA ...).
func printfBound(format string, args []any) int {
	maxArg := 0
	for _, a := range args {
		maxArg = max(maxArg, valueSize(a))
	}
	n := len(format) + argsSize(args) + 64*len(args)
	for i := 0; i < len(format); i++ {
		if format[i] != '%' {
			continue
		}
		i++
		num, width := 0, 0
		for ; i < len(format); i++ {
			c := format[i]
			switch {
			case c >= '0' && c <= '9':
				num = min(num*10+int(c-'0'), 1_000_000)
				continue
			case c == '*':
				num = 1_000_000
				continue
			case c == '.' || c == '[' || c == ']' || c == '+' || c == '-' || c == '#' || c == ' ':
				width += num
				num = 0
				continue
			}
			break
		}
		width += num
		n += width + 4*maxArg + 64
	}
	return n
}

// sizeString prints n bytes as MiB when it is a whole number of them.
func sizeString(n int) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d-byte", n)
}

// limitWriter fails once more than max bytes were written.
type limitWriter struct {
	buf bytes.Buffer
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if len(p) > w.max-w.buf.Len() {
		return 0, limitErrorf("output larger than the %s limit", sizeString(w.max))
	}
	return w.buf.Write(p)
}

func parseTemplate(content string, secret func(string) (string, error), roles []string, b *budget) (*template.Template, error) {
	t, err := template.New("file").Option("missingkey=error").Funcs(templateFuncs(secret, roles, b)).Parse(content)
	if err != nil {
		return nil, err
	}
	for _, tt := range t.Templates() {
		if tt.Tree == nil || tt.Tree.Root == nil {
			continue
		}
		if err := instrument(tt.Tree.Root); err != nil {
			return nil, err
		}
		// A template body runs once per call: a recursion is a loop.
		tt.Tree.Root.Nodes = append([]parse.Node{tickNode(tt.Tree.Root.Pos)}, tt.Tree.Root.Nodes...)
	}
	return t, nil
}

// instrument prepends a tick to every range body under n and refuses a
// template that calls the tick function itself.
func instrument(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := instrument(c); err != nil {
				return err
			}
		}
	case *parse.ActionNode:
		return instrument(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			if err := instrument(c); err != nil {
				return err
			}
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			if id, ok := a.(*parse.IdentifierNode); ok && id.Ident == tickFunc {
				return fmt.Errorf("function %q not defined", tickFunc)
			}
			if err := instrument(a); err != nil {
				return err
			}
		}
	case *parse.IfNode:
		return instrumentBranch(&n.BranchNode, false)
	case *parse.WithNode:
		return instrumentBranch(&n.BranchNode, false)
	case *parse.RangeNode:
		return instrumentBranch(&n.BranchNode, true)
	case *parse.TemplateNode:
		return instrument(n.Pipe)
	}
	return nil
}

func instrumentBranch(b *parse.BranchNode, loop bool) error {
	for _, c := range []parse.Node{b.Pipe, b.List, b.ElseList} {
		if c == nil || c == (*parse.ListNode)(nil) || c == (*parse.PipeNode)(nil) {
			continue
		}
		if err := instrument(c); err != nil {
			return err
		}
	}
	if loop {
		if b.List == nil {
			b.List = &parse.ListNode{NodeType: parse.NodeList, Pos: b.Pos}
		}
		b.List.Nodes = append([]parse.Node{tickNode(b.Pos)}, b.List.Nodes...)
	}
	return nil
}

// tickNode is {{hive_tick_}}: it prints nothing, or fails the rendering.
func tickNode(p parse.Pos) parse.Node {
	id := parse.NewIdentifier(tickFunc).SetPos(p)
	return &parse.ActionNode{NodeType: parse.NodeAction, Pos: p, Pipe: &parse.PipeNode{
		NodeType: parse.NodePipe, Pos: p,
		Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand, Pos: p, Args: []parse.Node{id}}},
	}}
}

// templateSecrets parses a template and returns the secret names it
// references, sorted. Only literal names are allowed, so the coordinator can
// tell which secrets a node needs without rendering.
func templateSecrets(content string) ([]string, error) {
	t, err := parseTemplate(content, func(string) (string, error) { return "", nil }, nil, nil)
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
			// A literal count over the iteration limit can only fail on
			// every agent: refuse it here.
			if p := n.Pipe; p != nil && len(p.Cmds) == 1 && len(p.Cmds[0].Args) == 1 {
				if num, ok := p.Cmds[0].Args[0].(*parse.NumberNode); ok && num.IsInt && num.Int64 > DefaultTemplateMaxIterations {
					walkErr = fmt.Errorf("range %s: more than the limit of %d range iterations a template may run", num.Text, DefaultTemplateMaxIterations)
					return
				}
			}
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
// naming it (never its value). The rendering stops with an error wrapping
// ErrTemplateLimit when ctx ends or a limit is reached (zero fields of lim
// take the defaults); it runs in the caller's goroutine, so nothing keeps
// running after it returns.
func RenderTemplate(ctx context.Context, content string, facts *hivev1.NodeFacts, secrets map[string][]byte, lim TemplateLimits) (string, error) {
	lim = lim.withDefaults()
	ctx, cancel := context.WithTimeoutCause(ctx, lim.Timeout, errRenderTimeout)
	defer cancel()
	b := &budget{ctx: ctx, lim: lim}
	t, err := parseTemplate(content, func(name string) (string, error) {
		v, ok := secrets[name]
		if !ok {
			return "", fmt.Errorf("secret %q has no value on this node", name)
		}
		if err := b.reserve("secret", len(v)); err != nil {
			return "", err
		}
		return string(v), nil
	}, facts.GetRoles(), b)
	if err != nil {
		return "", fmt.Errorf("parse template: %w", err)
	}
	w := &limitWriter{max: lim.MaxOutput}
	if err := t.Execute(w, NewTemplateData(facts)); err != nil {
		var le *limitError
		if errors.As(err, &le) {
			// The limit is the news, not the hidden function that
			// noticed it.
			return "", fmt.Errorf("render template: %w", le)
		}
		return "", fmt.Errorf("render template: %w", err)
	}
	return w.buf.String(), nil
}
