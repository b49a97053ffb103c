package site

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// pos is a position in the file.
type pos struct{ line, col int }

// decoder walks a yaml.Node tree, collecting every error instead of
// stopping at the first, and remembering the position of each field path so
// that later semantic checks can point at the right place.
type decoder struct {
	file string
	errs ErrorList
	pos  map[string]pos
	// resPath is the field path of each resource built, for checks that
	// run on the finished model.
	resPath map[*hivev1.Resource]string
	// confirmAt is where each resource built with `confirm:` has it.
	confirmAt map[*hivev1.Resource]confirmPos
	// selPath is the field path of each selector built.
	selPath map[*hivev1.Selector]string

	visited    int
	overBudget bool
	// errPaths holds the paths that already have an error.
	errPaths map[string]bool
}

// add records an error, remembering its path.
func (d *decoder) add(e *Error) {
	if d.errPaths == nil {
		d.errPaths = map[string]bool{}
	}
	d.errPaths[e.Path] = true
	d.errs = append(d.errs, e)
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	e := &Error{File: d.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if p, ok := d.pos[path]; ok && n != nil && n.Kind == yaml.MappingNode {
		// An error about a field, reported with its parent mapping:
		// point at the field.
		e.Line, e.Col = p.line, p.col
	} else if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	d.add(e)
}

// check reports err, if any, as an error about n at path.
func (d *decoder) check(n *yaml.Node, path string, err error) {
	if err != nil {
		d.errorf(n, path, "%v", err)
	}
}

// errorAt reports an error at the recorded position of path.
func (d *decoder) errorAt(path, format string, args ...any) {
	p := d.pos[path]
	d.add(&Error{File: d.file, Line: p.line, Col: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// maxNodes bounds the nodes one file may make the decoder visit, so that
// aliases cannot expand a small file into an enormous one ("billion laughs").
const maxNodes = 200_000

// exhausted reports whether the node budget is spent; the first time, it
// records an error.
func (d *decoder) exhausted(n *yaml.Node) bool {
	if d.visited <= maxNodes {
		return false
	}
	if !d.overBudget {
		d.overBudget = true
		d.errorf(n, "", "document too large or too many alias expansions (over %d nodes)", maxNodes)
	}
	return true
}

func (d *decoder) mark(n *yaml.Node, path string) {
	d.visited++
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = pos{n.Line, n.Column}
	}
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unexpected node"
}

// field describes one key of a mapping.
type field struct {
	name string
	fn   func(v *yaml.Node, path string)
}

// mapping decodes a mapping with a fixed set of keys. Unknown and repeated
// keys are errors; unknown keys get a did-you-mean. It reports whether n was
// a mapping.
func (d *decoder) mapping(n *yaml.Node, path string, fields ...field) bool {
	n = resolve(n)
	d.mark(n, path)
	if d.exhausted(n) {
		return false
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return false
	}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		key := k.Value
		sub := joinPath(path, key)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain strings")
			continue
		}
		if seen[key] {
			d.errorf(k, sub, "key %q repeated", key)
			continue
		}
		seen[key] = true
		var fn func(*yaml.Node, string)
		for _, f := range fields {
			if f.name == key {
				fn = f.fn
				break
			}
		}
		if fn == nil {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := suggest(key, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += fmt.Sprintf(" (allowed: %s)", strings.Join(names, ", "))
			}
			d.errorf(k, sub, "%s", msg)
			continue
		}
		d.mark(k, sub)
		fn(resolve(v), sub)
	}
	return true
}

// entries decodes a mapping of user-chosen names (e.g. roles) in file order.
func (d *decoder) entries(n *yaml.Node, path string, fn func(name string, k, v *yaml.Node, path string)) {
	n = resolve(n)
	d.mark(n, path)
	if d.exhausted(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain strings")
			continue
		}
		sub := joinPath(path, k.Value)
		if seen[k.Value] {
			d.errorf(k, sub, "%q defined twice", k.Value)
			continue
		}
		seen[k.Value] = true
		d.mark(k, sub)
		fn(k.Value, k, v, sub)
	}
}

// list decodes a sequence, calling fn for each item. A null is an empty list.
func (d *decoder) list(n *yaml.Node, path string, fn func(i int, v *yaml.Node, path string)) {
	n = resolve(n)
	d.mark(n, path)
	if isNull(n) || d.exhausted(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", kindName(n))
		return
	}
	for i, v := range n.Content {
		if d.exhausted(v) {
			return
		}
		sub := fmt.Sprintf("%s[%d]", path, i)
		v = resolve(v)
		d.mark(v, sub)
		fn(i, v, sub)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// scalar checks that n is a non-null scalar.
func (d *decoder) scalar(n *yaml.Node, path, want string) bool {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		d.errorf(n, path, "expected %s, got %s", want, kindName(n))
		return false
	}
	switch n.Tag {
	case "", "!", "!!str", "!!int", "!!bool", "!!float":
		return true
	}
	d.errorf(n, path, "unsupported YAML tag %q", n.Tag)
	return false
}

func (d *decoder) str(n *yaml.Node, path string) string {
	if !d.scalar(n, path, "a string") {
		return ""
	}
	return n.Value
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	if !d.scalar(n, path, "true or false") {
		return false
	}
	switch n.Value {
	case "true", "True", "TRUE", "yes", "on":
		return true
	case "false", "False", "FALSE", "no", "off":
		return false
	}
	d.errorf(n, path, "expected true or false, got %q", n.Value)
	return false
}

// uint32In decodes an integer in [lo, hi].
func (d *decoder) uint32In(n *yaml.Node, path string, lo, hi uint64) uint32 {
	if !d.scalar(n, path, "a number") {
		return 0
	}
	v, err := strconv.ParseUint(n.Value, 10, 64)
	if err != nil || v < lo || v > hi || v > math.MaxUint32 {
		d.errorf(n, path, "expected a whole number from %d to %d, got %q", lo, hi, n.Value)
		return 0
	}
	return uint32(v)
}

// strList decodes a list of scalars; a single scalar is a list of one.
func (d *decoder) strList(n *yaml.Node, path string) []string {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		return []string{n.Value}
	}
	var out []string
	d.list(n, path, func(_ int, v *yaml.Node, p string) {
		if s := d.str(v, p); s != "" {
			out = append(out, s)
		} else if v.Kind == yaml.ScalarNode && !isNull(v) {
			d.errorf(v, p, "empty string")
		}
	})
	return out
}

// strMap decodes a mapping of scalars.
func (d *decoder) strMap(n *yaml.Node, path string) map[string]string {
	out := map[string]string{}
	d.entries(n, path, func(name string, _, v *yaml.Node, p string) {
		if v.Kind != yaml.ScalarNode || isNull(v) {
			d.errorf(v, p, "expected a string value, got %s", kindName(v))
			return
		}
		out[name] = v.Value
	})
	if len(out) == 0 {
		return nil
	}
	return out
}

// oneOf decodes a scalar that must be one of the allowed words.
func (d *decoder) oneOf(n *yaml.Node, path string, allowed ...string) string {
	s := d.str(n, path)
	if s == "" {
		return ""
	}
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	msg := fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", "))
	if sg := suggest(s, allowed); sg != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", sg)
	}
	d.errorf(n, path, "%s", msg)
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// cidrs decodes a list of addresses or CIDR prefixes, normalised ("10.0.0.1"
// becomes "10.0.0.1/32").
func (d *decoder) cidrs(n *yaml.Node, path string) []string {
	var out []string
	n = resolve(n)
	check := func(v *yaml.Node, p string) {
		s := d.str(v, p)
		if s == "" {
			return
		}
		norm, err := normalizeCIDR(s)
		if err != nil {
			d.errorf(v, p, "%v", err)
			return
		}
		out = append(out, norm)
	}
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		check(n, path)
		return out
	}
	d.list(n, path, func(_ int, v *yaml.Node, p string) { check(v, p) })
	return out
}
