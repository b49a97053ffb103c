package limits

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// SummaryKey is the key of the result FitReport adds in place of the
// results it left out.
const SummaryKey = "report:omitted"

// shortMessageBytes is what FitReport shortens messages to when the
// report is still too large without diffs.
const shortMessageBytes = 256

// summaryReserve is room kept for the SummaryKey result.
const summaryReserve = 256

// FitReport changes r in place so that CheckReport accepts it as far as
// sizes go: it truncates keys, messages and diffs over their limits,
// marking each cut ("…[truncated …]"); keeps at most MaxResults results
// (failed first, then changed, drifted, planned, the rest), replacing the
// others by one SummaryKey result that counts them; and, while the whole
// report is over MaxReportBytes, drops diffs, shortens messages and
// leaves out more results, least important first. Published secrets are
// left alone. It reports whether it changed anything.
func FitReport(r *hivev1.Report) bool {
	changed := fitChecks(r)
	if v, ok := fitWord(r.GetAgentVersion(), MaxAgentVersionBytes, versionChar); ok {
		r.AgentVersion, changed = v, true
	}
	if v, ok := fitWord(r.GetTrigger(), MaxTriggerBytes, triggerChar); ok {
		r.Trigger, changed = v, true
	}
	for _, x := range r.GetResults() {
		if k, ok := fitKey(x.GetKey()); ok {
			x.Key, changed = k, true
		}
		if m, ok := truncate(x.GetMessage(), MaxMessageBytes); ok {
			x.Message, changed = m, true
		}
		if d, ok := truncate(x.GetDiff(), MaxDiffBytes); ok {
			x.Diff, changed = d, true
		}
	}

	// order lists result indexes, least important first.
	order := make([]int, len(r.Results))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rank(r.Results[order[a]]) < rank(r.Results[order[b]]) })
	drop := map[int]bool{}
	var omitted []*hivev1.ResourceResult
	for i := 0; len(r.Results)-len(drop) > MaxResults-1 && len(r.Results) > MaxResults; i++ {
		drop[order[i]] = true
		omitted = append(omitted, r.Results[order[i]])
	}

	size := proto.Size(r)
	for _, x := range omitted {
		size -= resultSize(x)
	}
	if len(omitted) == 0 && size <= MaxReportBytes {
		return changed
	}
	size += summaryReserve // room for the summary result
	shrink := func(edit func(x *hivev1.ResourceResult) bool) {
		for _, i := range order {
			if size <= MaxReportBytes {
				return
			}
			x := r.Results[i]
			if drop[i] {
				continue
			}
			before := resultSize(x)
			if edit(x) {
				changed = true
				size -= before - resultSize(x)
			}
		}
	}
	diffGone := fmt.Sprintf("[diff not sent: the report was over %d bytes]", MaxReportBytes)
	shrink(func(x *hivev1.ResourceResult) bool {
		if len(x.GetDiff()) <= len(diffGone) {
			return false
		}
		x.Diff = diffGone
		return true
	})
	shrink(func(x *hivev1.ResourceResult) bool {
		m, ok := truncate(x.GetMessage(), shortMessageBytes)
		x.Message = m
		return ok
	})
	for _, i := range order {
		if size <= MaxReportBytes {
			break
		}
		if !drop[i] {
			drop[i] = true
			omitted = append(omitted, r.Results[i])
			size -= resultSize(r.Results[i])
		}
	}
	if len(omitted) == 0 {
		return changed
	}
	kept := make([]*hivev1.ResourceResult, 0, len(r.Results)-len(drop)+1)
	for i, x := range r.Results {
		if !drop[i] {
			kept = append(kept, x)
		}
	}
	r.Results = append(kept, summary(omitted))
	return true
}

// rank orders results by how much a reader needs them.
func rank(x *hivev1.ResourceResult) int {
	switch {
	case x.GetOutcome() == hivev1.Outcome_OUTCOME_FAILED:
		return 5
	case x.GetOutcome() == hivev1.Outcome_OUTCOME_CHANGED:
		return 4
	case x.GetDrift():
		return 3
	case x.GetOutcome() == hivev1.Outcome_OUTCOME_PLANNED:
		return 2
	case x.GetOutcome() == hivev1.Outcome_OUTCOME_OK:
		return 0
	}
	return 1
}

// summary stands for the omitted results: failed if one of them failed.
func summary(omitted []*hivev1.ResourceResult) *hivev1.ResourceResult {
	counts := map[hivev1.Outcome]int{}
	for _, x := range omitted {
		if x != nil {
			counts[x.GetOutcome()]++
		}
	}
	out := hivev1.Outcome_OUTCOME_OK
	if counts[hivev1.Outcome_OUTCOME_FAILED] > 0 {
		out = hivev1.Outcome_OUTCOME_FAILED
	}
	return &hivev1.ResourceResult{
		Key: SummaryKey, Outcome: out,
		Message: fmt.Sprintf("%d results not sent (report limits: %d results, %d bytes): %d ok, %d changed, %d failed, %d other",
			len(omitted), MaxResults, MaxReportBytes, counts[hivev1.Outcome_OUTCOME_OK], counts[hivev1.Outcome_OUTCOME_CHANGED],
			counts[hivev1.Outcome_OUTCOME_FAILED], len(omitted)-counts[hivev1.Outcome_OUTCOME_OK]-counts[hivev1.Outcome_OUTCOME_CHANGED]-counts[hivev1.Outcome_OUTCOME_FAILED]),
	}
}

// resultSize is what one entry of Report.results adds to the encoding.
func resultSize(x *hivev1.ResourceResult) int {
	return protowire.SizeTag(5) + protowire.SizeBytes(proto.Size(x))
}

// truncate cuts s to at most limit bytes, on a rune boundary, ending with
// a marker that says how long it was.
func truncate(s string, limit int) (string, bool) { return truncateSep(s, limit, "\n") }

func truncateSep(s string, limit int, sep string) (string, bool) {
	if len(s) <= limit {
		return s, false
	}
	m := fmt.Sprintf("%s…[truncated: %d bytes, limit %d]", sep, len(s), limit)
	cut := max(limit-len(m), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + m, true
}

// fitKey truncates a key over MaxKeyBytes and replaces control characters.
func fitKey(k string) (string, bool) {
	out := strings.Map(func(r rune) rune {
		if badKeyRune(r) {
			return '?'
		}
		return r
	}, k)
	if out == "" {
		out = "?"
	}
	out, _ = truncateSep(out, MaxKeyBytes, " ")
	return out, out != k
}

// fitWord truncates v to limit bytes and replaces characters ok refuses.
func fitWord(v string, limit int, ok func(rune) bool) (string, bool) {
	out := strings.Map(func(r rune) rune {
		if ok(r) {
			return r
		}
		return '_'
	}, v)
	if len(out) > limit {
		out = out[:limit]
	}
	return out, out != v
}
