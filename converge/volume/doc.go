// Package volume is the converge provider of the "volume" resource kind:
// a DRBD-replicated volume on a thin logical volume, formatted once and
// published as a Docker volume (issue 16, docs/workloads.md).
//
// # On each replica node (a peer not in diskless_peers)
//
//  1. Pool: when the volume group is missing, the pool disk must be blank
//     (mount.CheckBlank: no blkid signature, first MiB zero), checked in
//     Plan and again right before pvcreate; then pvcreate, vgcreate and a
//     thin pool (lvcreate --type thin-pool -l 90%FREE). A disk holding
//     anything fails the volume with mount.ErrNotBlank.
//  2. Logical volume: a thin LV of size_bytes. A smaller LV is extended
//     (lvextend), then `drbdadm resize` and, on the node where the volume
//     is Primary (in use), the filesystem grown (resize2fs, xfs_growfs).
//     An LV larger than the size (rounded up to the extent size) fails with
//     ErrShrink: shrinking is refused.
//  3. DRBD: the resource is planned and applied by the drbd provider
//     (drbd.Provider.PlanSpec: the same rendering, parser check, create-md
//     only on a blank disk, adjust, port and minor clash check against
//     every hive-rendered file), with options quorum majority and
//     on-no-quorum io-error unless the volume sets them. Its file records
//     owner=volume, so the drbd provider never prunes it.
//  4. First filesystem, on initial_primary only, once: skipped when the
//     state file (StateDir/NAME.json) records it; otherwise only when the
//     resource was never promoted anywhere (drbdsetup status: local disk
//     Inconsistent, every peer connected, none Primary, none UpToDate) and
//     /dev/drbdN is blank; then `drbdadm primary --force`, mkfs.FSTYPE,
//     the state file, `drbdadm secondary` (Docker mounts promote it).
//     While a peer is not connected the volume fails with ErrWaiting.
//
// Diskless nodes get only the resource (their "on" section has disk
// none). Every node of the volume publishes it as a Docker volume (local
// driver, device=/dev/drbdN, type=FSTYPE, label hive.volume=NAME) when a
// Docker engine answers; a same-named volume with other options fails
// with ErrDockerConflict (hive never recreates it).
//
// # Removal
//
// A volume no longer in the node state is kept: Prune reports it (Needed
// false, so the engine reports it OK without applying anything) and
// deletes nothing. A volume with absent set (state: absent with its
// confirmation) is taken down: Docker volume removed, `drbdadm down`,
// resource file deleted, LV removed, state file deleted.
//
// # Concurrency
//
// The provider keeps no state between calls besides its Docker client; the
// engine calls Plan, Apply and Prune from one goroutine at a time. They
// block on lvm2, drbdadm, blkid, mkfs and the Docker API.
package volume
