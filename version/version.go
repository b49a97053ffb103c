// Package version holds the build version of the hive binaries, set at link
// time with -ldflags "-X github.com/hivefleet/hive/version.Version=...".
package version

// Version is the release version, or "dev" for an unreleased build.
var Version = "dev"
