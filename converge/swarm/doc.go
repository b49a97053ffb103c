// Package swarm is the converge provider of the "swarm" resource kind
// ("swarm:node"): Docker swarm membership through the Docker Engine API
// (github.com/moby/moby/client).
//
// # What the coordinator renders
//
// Swarm.initializer marks the one node that runs swarm init (the lowest
// name among the nodes of a role with init set); manager_addrs lists the
// managers to join through; join_token_secret names the secret holding the
// worker or manager join token the initializer published; members (for the
// initializer only) lists every node holding a swarm role with its address
// and labels.
//
// # Observe, plan, apply
//
// Plan reads `docker info`: an inactive engine is initialised (initializer)
// or joined (others: ErrNoManager without manager addresses, ErrNoToken
// without the token); a pending join is cancelled and made again; a node
// whose role differs (worker that must be manager, or the reverse) leaves
// and joins again; a locked or failed engine fails with ErrState. On an
// active manager Plan reads the join tokens (Published) and, on the
// initializer, plans the declared overlay networks (created when missing;
// ErrNetworkMismatch when one exists with other settings: hive never
// recreates a network), the labels of every member node (only managers can
// label swarm nodes; members are matched to swarm nodes by address; labels
// are added or updated, other labels are left alone) and the removal of
// worker nodes that are down and no longer members. Before a join, Apply
// checks that a manager accepts TCP connections, so that a down manager
// yields ErrNoManager at once instead of an engine retrying in the
// background; a failed join is cancelled.
//
// Tokens: after each run on a manager, Published returns the worker and
// manager tokens under PublishedWorkerToken and PublishedManagerToken; the
// agent puts them into Report.published_secrets.
//
// Removal: a node keeps a marker (MarkerPath below Env.Root) naming the
// swarm node hive created; Prune with no swarm resource present makes it
// leave (managers with force) and only then.
//
// # Concurrency
//
// The engine calls Plan, Apply and Prune from one goroutine at a time; they
// block on the Docker API. Published is safe from any goroutine.
package swarm
