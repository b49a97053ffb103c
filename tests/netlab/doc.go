// Package netlabtests holds hive's multi-host scenarios: the real
// hive-coordinator, hive-agent and hivectl binaries, built once per test run,
// run as processes on separate network namespaces (internal/netlab), with
// faults injected by link cuts and kill -9. Each scenario is a test; the
// push-to-all-converged benchmark runs at least 50 agent processes.
//
// The package has no code outside its tests. The tests need root and the ip
// tool: they skip without them on a developer's machine and fail under
// CI=true. See docs/testing.md.
package netlabtests
