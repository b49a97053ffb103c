// Package converge is the engine that brings a machine to the desired state
// described by a hivev1.NodeState, through providers that each own one kind
// of resource (repo, package, file, service, firewall, drbd, swarm).
//
// # The provider contract
//
// A Provider handles every resource of one kind. For each wave of the
// dependency graph (see below) the engine calls, for every provider with
// resources in that wave, exactly once:
//
//	Plan(ctx, env, batch)  observe the current state of every resource of
//	                       the batch and return one *Change per resource,
//	                       saying whether and how it differs from the
//	                       desired state. Plan must not modify the host.
//	Apply(ctx, env, chs)   make the needed changes (only changes with
//	                       Needed set are passed), all in one go where the
//	                       tool allows it (one apt/dnf transaction per call).
//
// Plan without Apply is the dry run: the engine calls Apply only when neither
// RunOptions.DryRun nor the provider's plan-only option is set, so plan mode
// never touches the host. A provider must be idempotent: after a successful
// Apply, a new Plan reports nothing needed. Per-resource failures are
// reported by setting Change.Err (in Plan or Apply); an error returned by
// Apply fails every passed change that has no Err of its own. Providers
// honour ctx: a cancelled context ends Plan/Apply promptly with ctx.Err().
//
// Providers receive everything they need through *Env (root prefix, command
// Runner, node facts, secrets, logger, OS family, dry-run flags); they keep
// no global state. A Runner replaces os/exec so tests can record or fake
// commands; paths on the host are always Env.Path(p), confined to Env.Root.
//
// Providers that create things a later state may no longer mention
// implement Pruner: after all waves the engine asks them, once per run,
// what to undo given the resources of their kind still present, and
// applies (or, in plan mode, reports) those changes; their results follow
// the state's results in the report.
//
// # Ordering
//
// Resources form a graph with explicit edges (Resource.requires and
// Resource.notify: a notifier converges before the service it notifies)
// and implicit edges added by the engine (see ImplicitRequires):
// repo → package (its repo, or every repo when none is named),
// package → file (files under /etc/<package>/ or named /etc/<package>.conf),
// directory → file below it, file → service (unit files and drop-ins of the
// unit), package → service of the same name; providers can add more through
// the Linker interface. An implicit edge that would close a cycle is
// dropped; an explicit cycle, a require of an unknown key or a resource
// kind without a provider is rejected by Validate before anything runs.
//
// The graph is cut into waves (Kahn levels: a resource's wave is one more
// than the deepest of its requirements). Within a wave providers run in the
// fixed order of KindOrder, one call each, so independent packages are
// installed in one transaction. A failed resource fails only its
// dependents: they are reported OUTCOME_SKIPPED with the reason; everything
// else still converges.
//
// # Notifications
//
// When a resource changes (or, in plan mode, would change) every key in its
// notify list is marked notified (Item.Notified); the service provider then
// restarts, or reloads with reload_on_notify, that unit in the same run,
// and the command provider runs that command (site files may notify
// services and commands only). Batch.Changed
// lists every key that changed earlier in the run, so providers can react to
// upstream changes (daemon-reload after a unit file changed, metadata
// refresh after a repo changed).
//
// # Determinism, concurrency, blocking
//
// For the same NodeState and the same machine state a run makes the same
// calls in the same order and returns results in NodeState order. Run is
// safe to call from any goroutine but runs are serialised (one at a time per
// Engine); providers are called from the goroutine that called Run, never
// concurrently with each other, so they need no locking of their own state
// between Plan and Apply. Plan and Apply may block on external tools (they
// get ctx); nothing else in the engine blocks. A no-op run of 100 file
// resources takes well under 20 ms (BenchmarkNoopFiles in converge/file).
package converge
