// Package drbd is the converge provider of the "drbd" resource kind: DRBD 9
// resources replicated between the nodes of a role.
//
// # Observe, plan, apply
//
// Check validates a hivev1.Drbd for this node (Env.Facts.Name) and settles
// defaults; Spec.Render spells /etc/drbd.d/<name>.res (below Env.Root),
// with one "on" section per peer, named by hive node name, and a
// connection-mesh. The coordinator fills the peers (name, address, stable
// node id) from membership; this node must be among them and every peer
// must have an address, else the resource fails with ErrNotMember.
//
// Plan renders into a temporary file and asks the real tools: `drbdadm
// dump` (the parser; a rejection is ErrRejected), `drbdadm -d adjust`
// (what the kernel state lacks, empty when in sync) and, when the disk is
// not attached yet, `drbdadm dump-md` for existing metadata. A disk without
// metadata gets `drbdadm create-md` only when blkid finds no signature on it
// and its first 64 KiB are zero; otherwise the resource fails with
// ErrHasData: hive never writes metadata over data. Apply re-checks that,
// writes the file atomically and runs `drbdadm adjust` (which brings a
// resource up or adjusts a running one); if adjust fails, the previous file
// is put back. Every drbdadm call gets -c <file> and __DRBD_NODE__=<node
// name>, so the machine's hostname does not matter.
//
// Port and minor clashes with other resources of the run or other
// hive-rendered files on the node fail the resource with ErrClash. Prune
// plans `drbdadm down` plus deletion for hive-rendered files (they start
// with Header) whose resource is no longer desired.
//
// Without the drbd kernel module, Plan still works (drbdadm -d adjust
// prints the full "up" sequence) and Apply fails with ErrNoKernel.
//
// # Concurrency
//
// The provider keeps no state; the engine calls Plan and Apply from one
// goroutine at a time. Plan and Apply block on drbdadm, blkid and dd.
package drbd
