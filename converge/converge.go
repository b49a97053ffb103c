package converge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/kinds"
)

// Resource kinds, the part of a resource key before the colon.
const (
	KindRepo     = "repo"
	KindPackage  = "package"
	KindFile     = "file"
	KindService  = "service"
	KindFirewall = "firewall"
	KindDrbd     = "drbd"
	KindSwarm    = "swarm"
	KindVolume   = "volume"
)

// KindOrder is the order in which providers of one wave are called: the
// order of the kind table (site/kinds). Kinds not listed run after these,
// sorted by name.
var KindOrder = kinds.Names()

// Family is an operating-system family, which decides the package tools.
type Family string

// Families.
const (
	FamilyUnknown Family = ""
	FamilyDebian  Family = "debian"
	FamilyRHEL    Family = "rhel"
)

// Provider converges every resource of one kind. See the package comment
// for the contract.
type Provider interface {
	// Kind is the resource kind handled, e.g. "package".
	Kind() string
	// Plan observes the batch's resources and returns one Change per
	// item, in the same order. It must not modify the host. An error fails
	// the whole batch.
	Plan(ctx context.Context, env *Env, b *Batch) ([]*Change, error)
	// Apply makes the needed changes. Per-resource failures go to
	// Change.Err; a returned error fails every change without an Err.
	Apply(ctx context.Context, env *Env, changes []*Change) error
}

// Linker is implemented by providers that add implicit requirements for
// their resources. Requires returns keys (present in all or not; unknown
// keys are ignored) that r must converge after.
type Linker interface {
	Requires(r *hivev1.Resource, all []*hivev1.Resource) []string
}

// Pruner is implemented by providers that undo what hive created for
// resources no longer in the node state (a repo file, the hive firewall
// chains, swarm membership). After all waves the engine calls Prune once
// per run with the items of the provider's kind that are present (possibly
// none); it returns only needed changes, with keys that may be absent from
// the state, and the engine applies them with Apply (or reports them
// PLANNED in plan mode). A change with Needed false is reported OK with
// its summary and never applied: what a Pruner keeps on purpose (a
// volume removed from the site keeps its data). Prune must not modify
// the host.
type Pruner interface {
	Prune(ctx context.Context, env *Env, present []Item) ([]*Change, error)
}

// Validator is implemented by providers that check their resources before a
// run; an error rejects the whole run.
type Validator interface {
	Validate(r *hivev1.Resource) error
}

// Item is one resource handed to a provider.
type Item struct {
	Key      string
	Resource *hivev1.Resource
	// Notified lists keys of resources that changed in this run and notify
	// this one, sorted. Empty when not notified.
	Notified []string
}

// Batch is what a provider gets for one wave.
type Batch struct {
	Items []Item
	// Changed holds the keys of resources that changed (or would change,
	// in plan mode) earlier in this run.
	Changed map[string]bool
}

// ChangedKind reports whether any resource of the kind changed earlier in
// the run, e.g. ChangedKind("repo").
func (b *Batch) ChangedKind(kind string) bool {
	for k := range b.Changed {
		if KindOf(k) == kind {
			return true
		}
	}
	return false
}

// Change is a provider's plan for one resource.
type Change struct {
	Key      string
	Resource *hivev1.Resource
	// Needed is true when the observed state differs from the desired one.
	Needed bool
	// Summary is a short human description of what is (or would be) done,
	// e.g. "install nginx=1.24.0-1", "write 120 bytes, mode 0644". It
	// never contains secret values, current or past.
	Summary string
	// Diff is a unified diff for files or a list of changed attributes.
	// It never contains secret values, current or past: a provider leaves
	// out what may hold one (the engine's masking of the current values is
	// only a last line of defence; it cannot know a rotated-out value).
	Diff string
	// Err is set when the resource failed (in Plan or Apply).
	Err error
	// Data is provider-private state carried from Plan to Apply.
	Data any
}

// Runner runs external commands. The real one is ExecRunner; tests record
// or replace commands with their own. Implementations must be safe for
// concurrent use.
type Runner interface {
	Run(ctx context.Context, c Cmd) (Output, error)
}

// Cmd is a command to run.
type Cmd struct {
	Name  string
	Args  []string
	Env   []string // added to the runner's environment
	Dir   string
	Stdin []byte
}

// String renders the command for logs and messages.
func (c Cmd) String() string {
	return strings.Join(append([]string{c.Name}, c.Args...), " ")
}

// Output is what a command printed and how it exited.
type Output struct {
	Stdout, Stderr []byte
	ExitCode       int
}

// Env is what a provider gets to work with. The engine builds one per
// provider per run; providers must not keep it beyond the call.
type Env struct {
	// Root is the root prefix of the machine ("/" or "" for the host).
	Root string
	// DryRun is true when Apply will not be called (dry run or plan-only
	// for this provider); it is informational for Plan.
	DryRun bool
	Runner Runner
	Facts  *hivev1.NodeFacts
	// Secrets by name; only those the node's resources reference.
	Secrets map[string][]byte
	Logger  *slog.Logger
	Family  Family
	// SwarmDrain names the swarm members the swarm's initializer drains
	// (NodeState.swarm_drain).
	SwarmDrain []string
}

// HostRoot reports whether Env works on the real host root.
func (e *Env) HostRoot() bool { return e.Root == "" || e.Root == "/" }

// Path resolves an absolute path of the managed machine to a path on the
// host, confined to Root (see SecureJoin).
func (e *Env) Path(p string) (string, error) {
	root := e.Root
	if root == "" {
		root = "/"
	}
	return SecureJoin(root, p)
}

// Mask replaces every current secret value in s by "<secret:name>", for
// plans and logs. Values shorter than 4 bytes are not masked (too likely to
// match ordinary text); multi-line values are masked line by line. It
// cannot mask a value the node no longer has (before a rotation) nor a
// transformed one (upper, quote): providers must not produce text that
// may hold a secret in the first place.
func (e *Env) Mask(s string) string {
	return MaskSecrets(s, e.Secrets)
}

// MaskSecrets is Env.Mask for a given secret set.
func MaskSecrets(s string, secrets map[string][]byte) string {
	if len(secrets) == 0 || s == "" {
		return s
	}
	names := make([]string, 0, len(secrets))
	for n := range secrets {
		names = append(names, n)
	}
	// Longer values first, so a value containing another is masked whole.
	sort.Slice(names, func(i, j int) bool {
		if len(secrets[names[i]]) != len(secrets[names[j]]) {
			return len(secrets[names[i]]) > len(secrets[names[j]])
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		v := string(secrets[n])
		mask := "<secret:" + n + ">"
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, mask)
		}
		if strings.Contains(v, "\n") {
			for _, line := range strings.Split(v, "\n") {
				if len(strings.TrimSpace(line)) >= 4 {
					s = strings.ReplaceAll(s, line, mask)
				}
			}
		}
	}
	return s
}

// KindOf returns the kind part of a resource key ("package" for
// "package:nginx").
func KindOf(key string) string {
	k, _, _ := strings.Cut(key, ":")
	return k
}

// NameOf returns the name part of a resource key.
func NameOf(key string) string {
	_, n, _ := strings.Cut(key, ":")
	return n
}

// ResourceKind returns the kind of r from its oneof, falling back to its key.
func ResourceKind(r *hivev1.Resource) string {
	if k := kinds.Of(r); k != nil {
		return k.Name
	}
	return KindOf(r.GetKey())
}

// Errors returned by Validate and Run.
var (
	// ErrCycle is returned when explicit requires/notify edges form a cycle.
	ErrCycle = errors.New("dependency cycle")
	// ErrUnknownRequire is returned when a resource requires or notifies a
	// key that is not in the node state.
	ErrUnknownRequire = errors.New("requires unknown resource")
	// ErrNoProvider is returned when a resource kind has no provider.
	ErrNoProvider = errors.New("no provider for resource kind")
	// ErrDuplicateKey is returned when two resources have the same key.
	ErrDuplicateKey = errors.New("duplicate resource key")
	// ErrInvalid is returned (wrapped) by provider validators.
	ErrInvalid = errors.New("invalid resource")
)

// ResourceError ties an error to a resource key.
type ResourceError struct {
	Key string
	Err error
}

func (e *ResourceError) Error() string { return fmt.Sprintf("%s: %v", e.Key, e.Err) }
func (e *ResourceError) Unwrap() error { return e.Err }
