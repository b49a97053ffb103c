package events

// Event kinds of maintenance and coordinated reboots (docs/operations.md,
// "Maintenance" and "Reboots").
const (
	KindNodeMaintenance = "node.maintenance"
	KindNodeResumed     = "node.resumed"
	KindRebootQueued    = "reboot.queued"
	KindRebootStep      = "reboot.step"
	KindRebootCancelled = "reboot.cancelled"
)
