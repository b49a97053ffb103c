package agent

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Host facts the agent reports with every watch (OS family and version,
// kernel, CPUs, memory, interfaces), for templates (.Facts). They are
// gathered anew for each watch, cheaply (a few files under /proc and
// /etc, the interface list), and cut to the coordinator's bounds
// (coordinator/facts.go) so that an honest agent is never refused: at
// most 32 interfaces (sorted by name) of 16 addresses each. The OS is
// read from the managed root (--root), the rest from the host.

// Bounds the agent keeps to (the coordinator's limits).
const (
	factMaxInterfaces   = 32
	factMaxAddrs        = 16
	factMaxIfNameLen    = 15
	factMaxOSVersionLen = 64
	factMaxKernelLen    = 128
)

// hostFacts fills the host facts of a watch request.
func (a *Agent) hostFacts(req *hivev1.WatchNodeStateRequest) {
	root := "/"
	if a.cfg.sandbox() {
		root = a.cfg.Root
	}
	fam, ver := osFacts(root)
	req.OsFamily = string(fam)
	req.OsVersion = ver
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		req.Kernel = cleanFact(string(bytes.TrimSpace(b)), factMaxKernelLen)
	}
	req.Hardware = map[string]uint64{"cpus": uint64(runtime.NumCPU())}
	if m := memTotal(); m > 0 {
		req.Hardware["memory_bytes"] = m
	}
	req.Interfaces = interfaceFacts()
}

// osFacts reads the OS family and VERSION_ID from root's os-release.
func osFacts(root string) (converge.Family, string) {
	var data []byte
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err == nil {
			data = b
			break
		}
	}
	if data == nil {
		return converge.FamilyUnknown, ""
	}
	var ver string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && k == "VERSION_ID" {
			ver = cleanFact(strings.Trim(v, `"'`), factMaxOSVersionLen)
		}
	}
	return converge.FamilyFromOSRelease(data), ver
}

// cleanFact keeps s if it is short and made of letters, digits and
// . _ - + ~ only; otherwise it reports nothing rather than be refused.
func cleanFact(s string, max int) string {
	if len(s) > max {
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-+~", r)) {
			return ""
		}
	}
	return s
}

// memTotal is MemTotal from /proc/meminfo in bytes (0 when unknown).
func memTotal() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// interfaceFacts lists the interfaces that are up, loopback excluded,
// with their addresses (link-local IPv6 zones dropped).
func interfaceFacts() map[string]string {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	sort.Slice(ifs, func(i, j int) bool { return ifs[i].Name < ifs[j].Name })
	out := map[string]string{}
	for _, ifc := range ifs {
		if len(out) == factMaxInterfaces {
			break
		}
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || !ifaceNameOK(ifc.Name) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		var l []string
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok && len(l) < factMaxAddrs {
				l = append(l, n.String())
			}
		}
		out[ifc.Name] = strings.Join(l, " ")
	}
	return out
}

// ifaceNameOK: 1 to 15 letters, digits, . _ - @ (what the coordinator
// accepts; Linux allows more).
func ifaceNameOK(n string) bool {
	if n == "" || len(n) > factMaxIfNameLen || n == "." || n == ".." {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-@", r)) {
			return false
		}
	}
	return true
}
