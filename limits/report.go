// Package limits holds the bounds on what an agent sends a coordinator in
// a Report: sizes, counts, character sets and timestamps, as named
// constants. The coordinator refuses a report outside them (CheckReport,
// before anything reaches the report batcher or raft); the agent keeps its
// own reports inside them (FitReport), so that an honest agent, however
// large its site, is never refused.
//
// Both functions are pure: no I/O, no locks, safe for concurrent use on
// different reports. The package imports only proto and pki, so the agent
// and the coordinator can share it without importing each other.
package limits

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The bounds on one Report.
const (
	// MaxReportBytes is the largest encoded Report. The agent keeps its
	// reports within it by truncating and dropping results (FitReport).
	MaxReportBytes = 1 << 20
	// MaxResults is the most per-resource results in one report.
	MaxResults = 5000
	// MaxMessageBytes bounds one result's message.
	MaxMessageBytes = 4 << 10
	// MaxDiffBytes bounds one result's diff.
	MaxDiffBytes = 16 << 10
	// MaxKeyBytes bounds a resource key: the longest Linux path (4,095
	// bytes) with a kind prefix fits.
	MaxKeyBytes = 4096 + 64
	// MaxAgentVersionBytes bounds agent_version ([0-9A-Za-z.+_~-]).
	MaxAgentVersionBytes = 64
	// MaxTriggerBytes bounds trigger ([a-z-]).
	MaxTriggerBytes = 32
	// MaxBootIDBytes bounds boot_id: the kernel's boot id (a UUID), "/"
	// and the agent's start in unix nanoseconds ([0-9a-f/-]).
	MaxBootIDBytes = 64
	// StateHashLen is the length of state_hash when set: the hex sha256
	// of the rendered state.
	StateHashLen = 64
	// MaxPublishedSecrets is the most values one report publishes.
	MaxPublishedSecrets = 16
	// MaxPublishedSecretBytes bounds one published value (the
	// coordinator's secret limit).
	MaxPublishedSecretBytes = 64 << 10
	// MaxServices is the most swarm services one report lists (the
	// initializer's; see converge/swarm.MaxServiceStatus), MaxServiceName
	// bounds a name and MaxServiceImage an image reference.
	MaxServices     = 256
	MaxServiceName  = 63
	MaxServiceImage = 600
	// MaxClockSkew is how far in the future of the coordinator's clock a
	// report's started or finished time may lie.
	MaxClockSkew = time.Hour
)

// minTime is the earliest started or finished time accepted.
var minTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Error is a report outside one of the bounds. Field names the report's
// field ("report.results[3].message"); Size and Limit are in the unit
// the message says (bytes, entries), or zero for a shape error.
type Error struct {
	Field       string
	Size, Limit int
	Msg         string
}

func (e *Error) Error() string { return e.Field + " " + e.Msg }

func tooBig(field string, size, limit int, unit string) *Error {
	return &Error{Field: field, Size: size, Limit: limit, Msg: fmt.Sprintf("is %d %s; the limit is %d %s", size, unit, limit, unit)}
}

func bad(field, format string, args ...any) *Error {
	return &Error{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// CheckReport returns the first bound r breaks, as an *Error, or nil. now
// is the coordinator's clock. It does not check that the caller may act as
// r.node, nor the published secrets' names (the coordinator does both).
func CheckReport(r *hivev1.Report, now time.Time) error {
	if r == nil {
		return bad("report", "is required")
	}
	if size := proto.Size(r); size > MaxReportBytes {
		return tooBig("report", size, MaxReportBytes, "bytes")
	}
	if r.GetNode() == "" {
		return bad("report.node", "is required")
	}
	if err := pki.ValidateName(r.GetNode()); err != nil {
		return bad("report.node", "%v", err)
	}
	if h := r.GetStateHash(); h != "" && (len(h) != StateHashLen || strings.IndexFunc(h, notLowerHex) >= 0) {
		return bad("report.state_hash", "must be %d lowercase hex digits, not %q", StateHashLen, clip(h))
	}
	if err := checkEnum("report.phase", r.GetPhase()); err != nil {
		return err
	}
	if err := checkWord("report.agent_version", r.GetAgentVersion(), MaxAgentVersionBytes, versionChar, "letters, digits, . + _ ~ -"); err != nil {
		return err
	}
	if err := checkWord("report.trigger", r.GetTrigger(), MaxTriggerBytes, triggerChar, "a-z and -"); err != nil {
		return err
	}
	if err := checkWord("report.boot_id", r.GetBootId(), MaxBootIDBytes, bootIDChar, "0-9 a-f - /"); err != nil {
		return err
	}
	if err := checkDuration("report.uptime", r.GetUptime()); err != nil {
		return err
	}
	var started, finished time.Time
	for _, t := range []struct {
		field string
		ts    *timestamppb.Timestamp
		out   *time.Time
	}{
		{"report.started", r.GetStarted(), &started},
		{"report.finished", r.GetFinished(), &finished},
	} {
		if t.ts == nil {
			continue
		}
		if err := t.ts.CheckValid(); err != nil {
			return bad(t.field, "is not a valid timestamp: %v", err)
		}
		at := t.ts.AsTime()
		if at.Before(minTime) {
			return bad(t.field, "%s is before %s", at.Format(time.RFC3339), minTime.Format(time.RFC3339))
		}
		if at.After(now.Add(MaxClockSkew)) {
			return bad(t.field, "%s is more than %v ahead of the coordinator's clock (%s)", at.Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339))
		}
		*t.out = at
	}
	if !started.IsZero() && !finished.IsZero() && finished.Before(started) {
		return bad("report.finished", "%s is before report.started %s", finished.Format(time.RFC3339Nano), started.Format(time.RFC3339Nano))
	}
	if n := len(r.GetResults()); n > MaxResults {
		return tooBig("report.results", n, MaxResults, "entries")
	}
	for i, x := range r.GetResults() {
		if err := checkResult(x); err != nil {
			err.Field = fmt.Sprintf("report.results[%d].%s", i, err.Field)
			return err
		}
	}
	if err := checkChecks(r); err != nil {
		return err
	}
	if n := len(r.GetServices()); n > MaxServices {
		return tooBig("report.services", n, MaxServices, "entries")
	}
	for i, sv := range r.GetServices() {
		if n := len(sv.GetName()); n == 0 || n > MaxServiceName {
			return bad(fmt.Sprintf("report.services[%d].name", i), "must have 1 to %d bytes", MaxServiceName)
		}
		if n := len(sv.GetImage()); n > MaxServiceImage {
			return tooBig(fmt.Sprintf("report.services[%d].image", i), n, MaxServiceImage, "bytes")
		}
		if n := len(sv.GetUpdateState()); n > MaxTriggerBytes {
			return tooBig(fmt.Sprintf("report.services[%d].update_state", i), n, MaxTriggerBytes, "bytes")
		}
	}
	if n := len(r.GetPublishedSecrets()); n > MaxPublishedSecrets {
		return tooBig("report.published_secrets", n, MaxPublishedSecrets, "entries")
	}
	names := make([]string, 0, len(r.GetPublishedSecrets()))
	for n := range r.GetPublishedSecrets() {
		names = append(names, n)
	}
	slices.Sort(names) // the same report always names the same field
	for _, n := range names {
		if size := len(r.GetPublishedSecrets()[n]); size > MaxPublishedSecretBytes {
			return tooBig(fmt.Sprintf("report.published_secrets[%q]", clip(n)), size, MaxPublishedSecretBytes, "bytes")
		}
	}
	return nil
}

// checkResult checks one result; the error's Field is relative ("key").
// (The field's full name is only formatted for an error: the check runs
// for every report.)
func checkResult(x *hivev1.ResourceResult) *Error {
	if err := checkKey("key", x.GetKey()); err != nil {
		return err
	}
	if err := checkEnum("outcome", x.GetOutcome()); err != nil {
		return err
	}
	if err := checkEnum("cause", x.GetCause()); err != nil {
		return err
	}
	if n := len(x.GetMessage()); n > MaxMessageBytes {
		return tooBig("message", n, MaxMessageBytes, "bytes")
	}
	if n := len(x.GetDiff()); n > MaxDiffBytes {
		return tooBig("diff", n, MaxDiffBytes, "bytes")
	}
	return checkDuration("duration", x.GetDuration())
}

func checkEnum(field string, e interface {
	Descriptor() protoreflect.EnumDescriptor
	Number() protoreflect.EnumNumber
}) *Error {
	if e.Descriptor().Values().ByNumber(e.Number()) == nil {
		return bad(field, "%d is not a known value", e.Number())
	}
	return nil
}

func checkDuration(field string, d *durationpb.Duration) *Error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return bad(field, "is not a valid duration: %v", err)
	}
	if d.AsDuration() < 0 {
		return bad(field, "%v is negative", d.AsDuration())
	}
	return nil
}

// checkKey: 1 to MaxKeyBytes bytes, no control characters.
func checkKey(field, k string) *Error {
	if k == "" {
		return bad(field, "is required")
	}
	if len(k) > MaxKeyBytes {
		return tooBig(field, len(k), MaxKeyBytes, "bytes")
	}
	if i := strings.IndexFunc(k, badKeyRune); i >= 0 {
		r, _ := utf8.DecodeRuneInString(k[i:])
		return bad(field, "has %q at offset %d (control characters are not allowed)", r, i)
	}
	return nil
}

func checkWord(field, v string, limit int, ok func(rune) bool, allowed string) *Error {
	if len(v) > limit {
		return tooBig(field, len(v), limit, "bytes")
	}
	for i, r := range v {
		if !ok(r) {
			return bad(field, "has %q at offset %d (allowed: %s)", r, i, allowed)
		}
	}
	return nil
}

func notLowerHex(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') }

func badKeyRune(r rune) bool { return unicode.IsControl(r) }

func versionChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".+_~-", r)
}

func bootIDChar(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-' || r == '/'
}

func triggerChar(r rune) bool { return r >= 'a' && r <= 'z' || r == '-' }

// clip shortens a value quoted in an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
