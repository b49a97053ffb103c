package coordinator

import (
	"net/netip"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Host facts an agent reports with its watch (WatchNodeStateRequest
// fields 10-14): OS family and version, kernel, CPUs, memory, interfaces.
// They are facts for templates (.Facts) and nothing else: no selector,
// address check, certificate or other trust decision reads them. They are
// checked here, with the rest of the watch, before anything is stored or
// rendered, and refused with InvalidArgument naming the field, the
// (quoted) value and the limit. They live with the watch that reported
// them (its registration) and are rendered into the node's NodeFacts.
const (
	// MaxOSFamilyLen, MaxOSVersionLen and MaxKernelLen bound the strings.
	MaxOSFamilyLen  = 32
	MaxOSVersionLen = 64
	MaxKernelLen    = 128
	// MaxCPUs and MaxMemoryBytes bound the sizes (1 PiB).
	MaxCPUs        = 1 << 16
	MaxMemoryBytes = 1 << 50
	// MaxInterfaces is the most interfaces a node may report, each with
	// at most MaxInterfaceAddrs addresses; MaxInterfaceNameLen is Linux's
	// IFNAMSIZ-1.
	MaxInterfaces       = 32
	MaxInterfaceAddrs   = 16
	MaxInterfaceNameLen = 15
)

// Hardware keys.
const (
	FactCPUs        = "cpus"
	FactMemoryBytes = "memory_bytes"
)

// factWord reports the first character of s outside letters, digits and
// extra, or -1.
func factWord(s, extra string) int {
	for i, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(extra, r)) {
			return i
		}
	}
	return -1
}

// checkHostFacts validates the host facts of a watch and returns them as
// NodeFacts (fields 10-14 only), nil when the agent reported none.
func checkHostFacts(req *hivev1.WatchNodeStateRequest) (*hivev1.NodeFacts, error) {
	for _, f := range []struct {
		name, v, extra string
		max            int
	}{
		{"os_family", req.GetOsFamily(), "._-", MaxOSFamilyLen},
		{"os_version", req.GetOsVersion(), "._-+~", MaxOSVersionLen},
		{"kernel", req.GetKernel(), "._-+~", MaxKernelLen},
	} {
		if len(f.v) > f.max {
			return nil, invalid("%s %s is %d bytes; the limit is %d", f.name, quote(f.v), len(f.v), f.max)
		}
		if i := factWord(f.v, f.extra); i >= 0 {
			return nil, invalid("%s %s has %q at offset %d (allowed: letters, digits, %s)", f.name, quote(f.v), f.v[i], i, strings.Join(strings.Split(f.extra, ""), " "))
		}
	}
	for k, v := range req.GetHardware() {
		switch k {
		case FactCPUs:
			if v < 1 || v > MaxCPUs {
				return nil, invalid("hardware[cpus] %d: want 1 to %d", v, MaxCPUs)
			}
		case FactMemoryBytes:
			if v > MaxMemoryBytes {
				return nil, invalid("hardware[memory_bytes] %d: the limit is %d", v, uint64(MaxMemoryBytes))
			}
		default:
			return nil, invalid("hardware[%s]: unknown key (allowed: cpus, memory_bytes)", quote(k))
		}
	}
	ifs := req.GetInterfaces()
	if len(ifs) > MaxInterfaces {
		return nil, invalid("interfaces: %d interfaces; the limit is %d", len(ifs), MaxInterfaces)
	}
	out := map[string]string{}
	for name, addrs := range ifs {
		if name == "" || len(name) > MaxInterfaceNameLen || factWord(name, "._-@") >= 0 || name == "." || name == ".." {
			return nil, invalid("interfaces[%s]: not an interface name (1 to %d letters, digits, . _ - @)", quote(name), MaxInterfaceNameLen)
		}
		fields := strings.Fields(addrs)
		if len(fields) > MaxInterfaceAddrs {
			return nil, invalid("interfaces[%s]: %d addresses; the limit is %d", name, len(fields), MaxInterfaceAddrs)
		}
		var canon []string
		for _, a := range fields {
			p, err := netip.ParsePrefix(a)
			if err != nil || p.Addr().Zone() != "" {
				return nil, invalid("interfaces[%s] %s: not an address with prefix length (10.0.0.5/24, fe80::1/64)", name, quote(a))
			}
			canon = append(canon, p.String())
		}
		if len(fields) > 0 && strings.Join(fields, " ") != addrs {
			return nil, invalid("interfaces[%s] %s: separate addresses with single spaces", name, quote(addrs))
		}
		out[name] = strings.Join(canon, " ")
	}
	f := &hivev1.NodeFacts{OsFamily: req.GetOsFamily(), OsVersion: req.GetOsVersion(), Kernel: req.GetKernel(), Hardware: req.GetHardware()}
	if len(out) > 0 {
		f.Interfaces = out
	}
	if f.OsFamily == "" && f.OsVersion == "" && f.Kernel == "" && len(f.Hardware) == 0 && len(f.Interfaces) == 0 {
		return nil, nil
	}
	return f, nil
}
