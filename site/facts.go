package site

import (
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TemplateFacts are the host facts a node's agent reports (OS, kernel,
// sizes, interfaces), as templates see them under .Facts, e.g.
// {{ if eq .Facts.OSFamily "rhel" }}. The coordinator checks their form
// and bounds only: they are what the agent says, good for choosing a path
// or a package name, never for trust. A node whose agent reported none
// (an older agent, GetNodeState without a watch) has the zero value.
type TemplateFacts struct {
	// OSFamily is "debian", "rhel" or "" (unknown).
	OSFamily string
	// OSVersion is os-release's VERSION_ID ("12", "9.4").
	OSVersion string
	// Kernel is the kernel release (uname -r).
	Kernel string
	// CPUs is the number of online CPUs; MemoryBytes and MemoryMB the
	// total memory.
	CPUs        uint64
	MemoryBytes uint64
	MemoryMB    uint64
	// Interfaces maps each interface that is up (not loopback) to its
	// addresses with prefix length: {{ index .Facts.Interfaces "eth0" }}.
	Interfaces map[string][]string
}

func newTemplateFacts(f *hivev1.NodeFacts) TemplateFacts {
	tf := TemplateFacts{
		OSFamily:    f.GetOsFamily(),
		OSVersion:   f.GetOsVersion(),
		Kernel:      f.GetKernel(),
		CPUs:        f.GetHardware()["cpus"],
		MemoryBytes: f.GetHardware()["memory_bytes"],
		Interfaces:  map[string][]string{},
	}
	tf.MemoryMB = tf.MemoryBytes >> 20
	for name, addrs := range f.GetInterfaces() {
		tf.Interfaces[name] = strings.Fields(addrs)
	}
	return tf
}
