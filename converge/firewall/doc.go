// Package firewall is the converge provider of the "firewall" resource kind:
// a node's declarative iptables/ip6tables filter rules.
//
// # What it owns
//
// hive owns three chains of the filter table in both families, HIVE-INPUT,
// HIVE-FORWARD and HIVE-OUTPUT, each jumped to by the first rule of the
// built-in chain of the same name, plus the policies of the built-in chains
// the site declares. Nothing else is ever named in what it feeds to
// iptables-restore --noflush, so chains and rules of other software
// (Docker's DOCKER, DOCKER-USER, ...) are never touched.
//
// # Observe, plan, apply
//
// Render turns a hivev1.Firewall into one Ruleset per family, spelled
// exactly as iptables-save prints rules. Plan reads the current tables with
// iptables-save / ip6tables-save (ParseSave), and Diff computes the
// iptables-restore input that brings the hive chains, the jumps and the
// policies to the desired state in one transaction per family. No
// difference, no restore. After applying, the provider reads the tables
// again and fails (restoring the previous rules) if iptables stored them
// differently than rendered. If the IPv6 restore fails after IPv4 was
// changed, IPv4 is restored too: nothing is half-applied.
//
// # Confirm window
//
// Every applied change opens a Window (Provider.Window) holding the rules as
// they were before. The agent calls Window.Confirm once it has reached a
// coordinator after the change (Window.ConfirmWith runs a probe until it
// succeeds; a window has one prober at a time). If the deadline (resource
// confirm_seconds, default 30 s) passes first, the window's own goroutine
// restores the previous rules and the window ends WindowRolledBack; from
// then on Plan fails the resource with ErrHeldBack (the rollback shows up
// in the node's report) and Apply refuses those rules until they change,
// Config.HoldBack passes or ClearHold is called. A different change made
// while a window is open supersedes it and inherits its snapshot, so a
// rollback always returns to the last confirmed rules; the same rules
// applied again inside their window (drift) keep the window and its
// deadline. With Config.StateFile the window and the hold are on disk
// (written before the tables change); a restarted agent keeps the
// window's deadline and the hold.
//
// # Concurrency
//
// The engine calls Plan and Apply from one goroutine at a time. A Window's
// timer runs the rollback on its own goroutine; the Window methods and the
// Provider accessors (Window, LastWindow, ClearHold) are safe from any
// goroutine. One provider lock (ops) is held for every decision about the
// tables: Plan's observation of both families and the hold, Apply (which
// rolls back an overdue window, checks the hold and plans again under it
// before changing anything), rollbacks, Confirm and ClearHold. Under it the
// tables, the open window, its saved "before" state, the hold and the
// state file change together: no run can apply from a plan made before a
// rollback, or open a window whose snapshot mixes the tables before and
// after one. Only Plan, Apply, Prune and Window.Rollback run iptables and
// block; Confirm never runs iptables (it waits for a change in progress).
package firewall
