package limits

import (
	"fmt"
	"unicode/utf8"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// The bounds on a report's health checks.
const (
	// MaxChecks is the most check results in one report (the site's
	// checks of every role of the node and the built-in ones).
	MaxChecks = 256
	// MaxCheckNameBytes bounds a check's name ("ROLE/NAME").
	MaxCheckNameBytes = 200
	// MaxCheckMessageBytes bounds a check result's message.
	MaxCheckMessageBytes = 512
	// MaxCheckFailures bounds the consecutive failures a result counts.
	MaxCheckFailures = 1 << 20
)

// CheckKinds are the values CheckResult.kind may take.
var CheckKinds = []string{"http", "tcp", "command", "drbd", "swarm"}

// checkChecks checks r.checks and r.health.
func checkChecks(r *hivev1.Report) error {
	if err := checkEnum("report.health", r.GetHealth()); err != nil {
		return err
	}
	if n := len(r.GetChecks()); n > MaxChecks {
		return tooBig("report.checks", n, MaxChecks, "entries")
	}
	for i, c := range r.GetChecks() {
		field := func(f string) string { return fmt.Sprintf("report.checks[%d].%s", i, f) }
		if c.GetName() == "" {
			return bad(field("name"), "is required")
		}
		if err := checkKey(field("name"), c.GetName()); err != nil {
			return err
		}
		if n := len(c.GetName()); n > MaxCheckNameBytes {
			return tooBig(field("name"), n, MaxCheckNameBytes, "bytes")
		}
		if !knownKind(c.GetKind()) {
			return bad(field("kind"), "%q is not one of %v", clip(c.GetKind()), CheckKinds)
		}
		if n := len(c.GetMessage()); n > MaxCheckMessageBytes {
			return tooBig(field("message"), n, MaxCheckMessageBytes, "bytes")
		}
		if !utf8.ValidString(c.GetMessage()) {
			return bad(field("message"), "is not valid UTF-8")
		}
		if c.GetFailures() > MaxCheckFailures {
			return bad(field("failures"), "%d is over %d", c.GetFailures(), MaxCheckFailures)
		}
		if t := c.GetTime(); t != nil {
			if err := t.CheckValid(); err != nil {
				return bad(field("time"), "is not a valid timestamp: %v", err)
			}
		}
	}
	return nil
}

func knownKind(k string) bool {
	for _, x := range CheckKinds {
		if x == k {
			return true
		}
	}
	return false
}

// fitChecks keeps r's checks within the bounds: failing ones first when
// there are too many, long names and messages cut.
func fitChecks(r *hivev1.Report) bool {
	changed := false
	if len(r.Checks) > MaxChecks {
		kept := make([]*hivev1.CheckResult, 0, MaxChecks)
		for _, pass := range []bool{false, true} {
			for _, c := range r.Checks {
				if c.GetPassing() == pass && len(kept) < MaxChecks {
					kept = append(kept, c)
				}
			}
		}
		r.Checks, changed = kept, true
	}
	for _, c := range r.Checks {
		if k, ok := fitKey(c.GetName()); ok {
			c.Name, changed = k, true
		}
		if m, ok := truncateSep(c.GetName(), MaxCheckNameBytes, " "); ok {
			c.Name, changed = m, true
		}
		if !utf8.ValidString(c.Message) {
			c.Message, changed = string([]rune(c.Message)), true
		}
		if m, ok := truncateSep(c.GetMessage(), MaxCheckMessageBytes, " "); ok {
			c.Message, changed = m, true
		}
	}
	return changed
}
