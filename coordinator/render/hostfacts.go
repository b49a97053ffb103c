package render

import (
	"fmt"
	"sort"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// hostKey is the part of a node's cache key made of its host facts.
func hostKey(h *hivev1.NodeFacts) string {
	if h == nil {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%q %q %q", h.GetOsFamily(), h.GetOsVersion(), h.GetKernel())
	for _, m := range []map[string]string{hardwareStrings(h.GetHardware()), h.GetInterfaces()} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sb.WriteString("\x00")
		for _, k := range keys {
			fmt.Fprintf(&sb, "%q=%q;", k, m[k])
		}
	}
	return sb.String()
}

func hardwareStrings(m map[string]uint64) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprint(v)
	}
	return out
}
