package converge

import (
	"fmt"
	"path"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Graph is the validated dependency graph of a node state.
type Graph struct {
	// Resources in NodeState order.
	Resources []*hivev1.Resource
	// Requires maps a key to the keys it converges after (explicit and
	// implicit), sorted.
	Requires map[string][]string
	// Waves lists keys by wave, each wave in NodeState order.
	Waves [][]string
	index map[string]int
}

// BuildGraph checks the resources (unique keys, known requires and
// notify targets, no explicit cycle) and adds the implicit edges of
// ImplicitRequires plus those of the Linker providers in links.
func BuildGraph(rs []*hivev1.Resource, links map[string]Linker) (*Graph, error) {
	g := &Graph{Resources: rs, Requires: map[string][]string{}, index: map[string]int{}}
	for i, r := range rs {
		if r.GetKey() == "" {
			return nil, fmt.Errorf("resource %d: empty key: %w", i, ErrInvalid)
		}
		if _, dup := g.index[r.GetKey()]; dup {
			return nil, fmt.Errorf("%s: %w", r.GetKey(), ErrDuplicateKey)
		}
		g.index[r.GetKey()] = i
	}
	edges := map[string]map[string]bool{}
	add := func(from, to string) { // from converges after to
		if edges[from] == nil {
			edges[from] = map[string]bool{}
		}
		edges[from][to] = true
	}
	for _, r := range rs {
		for _, req := range r.GetRequires() {
			if _, ok := g.index[req]; !ok {
				return nil, &ResourceError{Key: r.GetKey(), Err: fmt.Errorf("%w %q", ErrUnknownRequire, req)}
			}
			add(r.GetKey(), req)
		}
		for _, n := range r.GetNotify() {
			if n == NotifyReboot {
				continue // not a resource: the agent asks for a reboot (Report.reboot_required)
			}
			if _, ok := g.index[n]; !ok {
				return nil, &ResourceError{Key: r.GetKey(), Err: fmt.Errorf("notifies unknown resource %q: %w", n, ErrUnknownRequire)}
			}
			add(n, r.GetKey())
		}
	}
	if cyc := findCycle(rs, edges); cyc != nil {
		return nil, fmt.Errorf("%w: %s", ErrCycle, strings.Join(cyc, " → "))
	}
	// Implicit edges, in a fixed order; one that would close a cycle is
	// dropped (explicit intent wins).
	for _, r := range rs {
		imp := ImplicitRequires(r, rs)
		if l := links[ResourceKind(r)]; l != nil {
			imp = append(imp, l.Requires(r, rs)...)
		}
		for _, to := range imp {
			if _, ok := g.index[to]; !ok || to == r.GetKey() || edges[r.GetKey()][to] {
				continue
			}
			if reaches(edges, to, r.GetKey()) {
				continue
			}
			add(r.GetKey(), to)
		}
	}
	for from, tos := range edges {
		l := make([]string, 0, len(tos))
		for to := range tos {
			l = append(l, to)
		}
		sort.Strings(l)
		g.Requires[from] = l
	}
	// Waves: level = 1 + max level of requirements.
	level := map[string]int{}
	var depth func(k string) int
	depth = func(k string) int {
		if d, ok := level[k]; ok {
			return d
		}
		d := 0
		for _, req := range g.Requires[k] {
			if x := depth(req) + 1; x > d {
				d = x
			}
		}
		level[k] = d
		return d
	}
	for _, r := range rs {
		d := depth(r.GetKey())
		for len(g.Waves) <= d {
			g.Waves = append(g.Waves, nil)
		}
		g.Waves[d] = append(g.Waves[d], r.GetKey())
	}
	return g, nil
}

// Resource returns the resource with key k, or nil.
func (g *Graph) Resource(k string) *hivev1.Resource {
	i, ok := g.index[k]
	if !ok {
		return nil
	}
	return g.Resources[i]
}

func reaches(edges map[string]map[string]bool, from, to string) bool {
	seen := map[string]bool{}
	stack := []string{from}
	for len(stack) > 0 {
		k := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if k == to {
			return true
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		for n := range edges[k] {
			stack = append(stack, n)
		}
	}
	return false
}

// findCycle returns one cycle (keys in order, first repeated at the end) or nil.
func findCycle(rs []*hivev1.Resource, edges map[string]map[string]bool) []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(k string) bool
	visit = func(k string) bool {
		color[k] = grey
		stack = append(stack, k)
		next := make([]string, 0, len(edges[k]))
		for n := range edges[k] {
			next = append(next, n)
		}
		sort.Strings(next)
		for _, n := range next {
			switch color[n] {
			case grey:
				for i, s := range stack {
					if s == n {
						found = append(append([]string(nil), stack[i:]...), n)
					}
				}
				return true
			case white:
				if visit(n) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[k] = black
		return false
	}
	for _, r := range rs {
		if color[r.GetKey()] == white && visit(r.GetKey()) {
			return found
		}
	}
	return nil
}

// UnitName returns the systemd unit name of a service resource name:
// ".service" is appended when it has no unit suffix.
func UnitName(name string) string {
	for _, s := range []string{".service", ".socket", ".timer", ".target", ".mount", ".path", ".slice", ".scope", ".swap", ".automount", ".device"} {
		if strings.HasSuffix(name, s) {
			return name
		}
	}
	return name + ".service"
}

// unitDirs are where unit files and drop-ins live.
var unitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"}

// IsUnitPath reports whether p is a systemd unit file or drop-in, and for
// which unit.
func IsUnitPath(p string) (unit string, ok bool) {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	for _, d := range unitDirs {
		if dir == d {
			return base, true
		}
		if path.Dir(dir) == d && strings.HasSuffix(dir, ".d") {
			return strings.TrimSuffix(path.Base(dir), ".d"), true
		}
	}
	return "", false
}

// ImplicitRequires returns the keys r converges after by the engine's
// built-in rules (keys may be absent from rs; they are then ignored):
//
//   - package → every repo it may come from (its Package.repo, or every
//     repo when none is named);
//   - file → package P when the path is under /etc/P/ or is /etc/P.conf or
//     /etc/default/P;
//   - file → the file resources of its parent directories;
//   - file → the user and group resources that own it ("user:OWNER",
//     "group:GROUP", and "user:GROUP" for a user's own group, which
//     useradd makes), and the user whose home holds it, so an account
//     declared in the state exists before a file names it (see
//     accountRequires);
//   - service → file resources that are its unit file or drop-ins;
//   - service → the package of the same name.
func ImplicitRequires(r *hivev1.Resource, rs []*hivev1.Resource) []string {
	var out []string
	switch k := r.GetKind().(type) {
	case *hivev1.Resource_Package:
		for _, o := range rs {
			if repo := o.GetRepo(); repo != nil {
				if want := k.Package.GetRepo(); want == "" || want == repo.GetName() {
					out = append(out, o.GetKey())
				}
			}
		}
	case *hivev1.Resource_File:
		p := k.File.GetPath()
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			out = append(out, KindFile+":"+d)
		}
		if rest, ok := strings.CutPrefix(p, "/etc/"); ok {
			first, _, _ := strings.Cut(rest, "/")
			out = append(out, KindPackage+":"+strings.TrimSuffix(first, ".conf"))
			if d, ok := strings.CutPrefix(rest, "default/"); ok {
				out = append(out, KindPackage+":"+d)
			}
		}
		out = append(out, accountRequires(k.File, rs)...)
	case *hivev1.Resource_Service:
		unit := UnitName(k.Service.GetName())
		for _, o := range rs {
			if f := o.GetFile(); f != nil {
				if u, ok := IsUnitPath(f.GetPath()); ok && u == unit {
					out = append(out, o.GetKey())
				}
			}
		}
		out = append(out, KindPackage+":"+strings.TrimSuffix(k.Service.GetName(), ".service"))
	}
	return out
}

// Account kinds (their providers live in converge/users).
const (
	kindUser  = "user"
	kindGroup = "group"
)

// accountRequires returns the account resources a file converges after:
// its owner and group (a group may be a user's own group, made by
// useradd), and a present user whose home directory (Home, or /home/NAME
// for a non-system account) holds the path.
func accountRequires(f *hivev1.File, rs []*hivev1.Resource) []string {
	var out []string
	if o := f.GetOwner(); o != "" && !isNumeric(o) {
		out = append(out, kindUser+":"+o)
	}
	if g := f.GetGroup(); g != "" && !isNumeric(g) {
		out = append(out, kindGroup+":"+g, kindUser+":"+g)
	}
	for _, r := range rs {
		u := r.GetUser()
		if u == nil || u.GetAbsent() {
			continue
		}
		home := u.GetHome()
		if home == "" && !u.GetSystem() {
			home = "/home/" + u.GetName()
		}
		if home != "" && home != "/" && strings.HasPrefix(f.GetPath(), strings.TrimSuffix(home, "/")+"/") {
			out = append(out, r.GetKey())
		}
	}
	return out
}

func isNumeric(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
