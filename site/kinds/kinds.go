// Package kinds is the one table of resource kinds. The site parser
// (package site: which role section declares a kind, the key rule), the
// server's validation (site.Check: references, notify targets, conflicts),
// the renderer's merge of roles (coordinator/render: order and merge rule)
// and the converge engine (provider order, the --root sandbox) all read
// this table, so a new kind is one entry here, its message in the
// Resource.kind oneof of proto/hive/v1/site.proto (the oneof field is named
// after the kind), its decoder and field checks in package site, and its
// provider. See docs/adding-a-provider.md.
//
// The table is fixed at compile time; nothing here blocks or has state.
package kinds

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Kind describes one resource kind.
type Kind struct {
	// Name is the kind: the part of a resource key before the colon, and
	// the name of the Resource.kind oneof field that holds its message.
	Name string
	// Section is the key under a role in the site file that declares
	// resources of this kind ("packages").
	Section string
	// Single is set when a role declares at most one resource of the kind,
	// as a mapping (firewall, swarm), instead of a list.
	Single bool
	// ID returns the name part of the key from the kind's message. Nil
	// when the key is fixed: Name + ":" + FixedID.
	ID      func(m proto.Message) string
	FixedID string
	// Notifiable is set for the kinds that notify may name (services,
	// which restart or reload, and commands, which run).
	Notifiable bool
	// Merge combines the definition from of a second role into into (a
	// clone the renderer owns) when one node gets both; an error says why
	// they cannot be combined. Nil: the definitions must be equal.
	Merge func(into, from proto.Message) error
	// Additive is set when definitions in several roles always add up
	// (firewall rules), so the site check never reports them as
	// conflicting; Merge must be set.
	Additive bool
	// InRoot is set when the provider acts inside a --root sandbox (it
	// writes files under the root); the others are only planned there.
	InRoot bool
	// Confirm is set for the kinds that take `confirm:` (a confirm window
	// after a change, see docs/resources.md): the firewall, whose provider
	// keeps its own window, and the kinds whose provider can snapshot and
	// restore a resource (converge.Snapshotter).
	Confirm bool
}

// All is every kind, in the implicit dependency order: when explicit
// requires allow, resources converge kind by kind in this order, and a
// role's sections are listed in it.
var All = []*Kind{
	{Name: "repo", Section: "repos", ID: func(m proto.Message) string { return m.(*hivev1.Repo).GetName() }, InRoot: true},
	{Name: "package", Section: "packages", ID: func(m proto.Message) string { return m.(*hivev1.Package).GetName() }},
	// Accounts are only planned under the agent's --root sandbox (which
	// runs without root): shadow-utils need root to chroot.
	{Name: "group", Section: "groups", ID: func(m proto.Message) string { return m.(*hivev1.Group).GetName() }},
	{Name: "user", Section: "users", ID: func(m proto.Message) string { return m.(*hivev1.User).GetName() }},
	{Name: "hostname", Section: "hostname", Single: true, FixedID: "node", InRoot: true},
	{Name: "timezone", Section: "timezone", Single: true, FixedID: "system", InRoot: true},
	{Name: "locale", Section: "locale", Single: true, FixedID: "system", InRoot: true},
	{Name: "hosts", Section: "hosts", Single: true, FixedID: "block", Merge: mergeHosts, Additive: true, InRoot: true, Confirm: true},
	{Name: "file", Section: "files", ID: func(m proto.Message) string { return m.(*hivev1.File).GetPath() }, InRoot: true, Confirm: true},
	{Name: "service", Section: "services", ID: func(m proto.Message) string { return UnitName(m.(*hivev1.Service).GetName()) }, Notifiable: true},
	{Name: "firewall", Section: "firewall", Single: true, FixedID: "filter", Merge: mergeFirewall, Additive: true, Confirm: true},
	{Name: "drbd", Section: "drbd", ID: func(m proto.Message) string { return m.(*hivev1.Drbd).GetName() }},
	{Name: "swarm", Section: "swarm", Single: true, FixedID: "node", Merge: mergeSwarm},
	// DRBD-backed volumes (converge/volume): after drbd, whose resource
	// files and numbers they share, and after swarm (the Docker engine).
	{Name: "volume", Section: "volumes", ID: func(m proto.Message) string { return m.(*hivev1.Volume).GetName() }},
	// Host baseline: modules before the sysctls they bring, mounts before
	// commands; all act on the running kernel, so none is InRoot.
	{Name: "kernel_module", Section: "kernel_modules", ID: func(m proto.Message) string { return m.(*hivev1.KernelModule).GetName() }},
	{Name: "sysctl", Section: "sysctls", ID: func(m proto.Message) string { return m.(*hivev1.Sysctl).GetKey() }, Confirm: true},
	{Name: "mount", Section: "mounts", ID: func(m proto.Message) string { return m.(*hivev1.Mount).GetPath() }},
	{Name: "command", Section: "commands", ID: func(m proto.Message) string { return m.(*hivev1.GuardedCommand).GetName() }, Notifiable: true},
	{Name: "certificate", Section: "certificates", ID: func(m proto.Message) string { return m.(*hivev1.Certificate).GetName() }, InRoot: true},
	{Name: "ca_trust", Section: "ca_trust", Single: true, FixedID: "site"},
}

var (
	oneof  = (&hivev1.Resource{}).ProtoReflect().Descriptor().Oneofs().ByName("kind")
	byName = map[string]*Kind{}
	rank   = map[string]int{}
)

func init() {
	for i, k := range All {
		if oneof.Fields().ByName(protoreflect.Name(k.Name)) == nil {
			panic(fmt.Sprintf("kinds: %q is not a field of the Resource.kind oneof", k.Name))
		}
		if (k.ID == nil) == (k.FixedID == "") {
			panic(fmt.Sprintf("kinds: %q needs exactly one of ID and FixedID", k.Name))
		}
		if k.Additive && k.Merge == nil {
			panic(fmt.Sprintf("kinds: %q is additive without a Merge", k.Name))
		}
		byName[k.Name] = k
		rank[k.Name] = i
	}
}

// Lookup returns the kind named name, or nil.
func Lookup(name string) *Kind { return byName[name] }

// Names returns the kind names in table order.
func Names() []string {
	out := make([]string, len(All))
	for i, k := range All {
		out[i] = k.Name
	}
	return out
}

// Of returns the kind of r from its oneof, or nil when it has none.
func Of(r *hivev1.Resource) *Kind {
	fd := which(r)
	if fd == nil {
		return nil
	}
	return byName[string(fd.Name())]
}

// Payload returns the kind message of r (a *hivev1.Repo, …), or nil.
func Payload(r *hivev1.Resource) proto.Message {
	fd := which(r)
	if fd == nil {
		return nil
	}
	return r.ProtoReflect().Get(fd).Message().Interface()
}

func which(r *hivev1.Resource) protoreflect.FieldDescriptor {
	if r == nil {
		return nil
	}
	return r.ProtoReflect().WhichOneof(oneof)
}

// KeyOf returns the key of a resource of kind k whose message is m.
func (k *Kind) KeyOf(m proto.Message) string {
	if k.ID == nil {
		return k.Name + ":" + k.FixedID
	}
	return k.Name + ":" + k.ID(m)
}

// Key returns the key the kind's rule gives r ("package:nginx",
// "service:nginx.service", "firewall:filter"), ignoring r.Key; "" when r
// has no kind.
func Key(r *hivev1.Resource) string {
	k := Of(r)
	if k == nil {
		return ""
	}
	return k.KeyOf(Payload(r))
}

// Rank is the position of kind in All; unknown kinds come after all known
// ones.
func Rank(kind string) int {
	if i, ok := rank[kind]; ok {
		return i
	}
	return len(All)
}

// KindOf returns the kind part of a resource key.
func KindOf(key string) string {
	k, _, _ := strings.Cut(key, ":")
	return k
}

// unitSuffixes are systemd unit types.
var unitSuffixes = []string{".service", ".socket", ".timer", ".mount", ".path", ".target", ".slice", ".automount", ".swap"}

// UnitName adds ".service" to a unit name that has no unit-type suffix.
func UnitName(name string) string {
	for _, s := range unitSuffixes {
		if strings.HasSuffix(name, s) {
			return name
		}
	}
	return name + ".service"
}
