package state

import (
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Stored reports keep their resource results encoded.
//
// Every coordinator holds every node's last report, and a report's results
// (one per resource: key, outcome, duration, message, diff) are most of
// it: decoded, each costs about 250 bytes of small heap objects, encoded
// about 60, and a real node reports dozens. Nearly every reader wants the
// rest of the report (phase, generation, health, seq) or only the counts
// by outcome; the results themselves are read for one node's status and
// for a failed node's errors. So the store keeps a report whose results
// field is empty and whose results travel, in their wire encoding, as the
// message's unknown fields (protobuf keeps unknown fields and writes them
// back out as they are): marshaling a stored report — into a snapshot, or
// into an answer — writes the complete report, unmarshaling it gives the
// results back as a normal field, and nothing decodes them on the apply
// path or under the store's lock.
//
// Readers must not use GetResults on a stored report: Results decodes them,
// SummarizeResults counts them by outcome without decoding. Both accept a
// report that was never stored (results in the field) as well.

var (
	reportResults = (&hivev1.Report{}).ProtoReflect().Descriptor().Fields().ByName("results")
	reportSecrets = (&hivev1.Report{}).ProtoReflect().Descriptor().Fields().ByName("published_secrets")
	resultOutcome = (&hivev1.ResourceResult{}).ProtoReflect().Descriptor().Fields().ByName("outcome")
)

// packReport returns the form of r the store keeps: every field of r but
// results and published_secrets (sealed into secrets before they reach the
// log; plaintext is never kept), with the results encoded after r's own
// unknown fields. The copy shares r's other field values, which the store
// never modifies; r itself is not modified.
func packReport(r *hivev1.Report) *hivev1.Report {
	if len(r.GetResults()) == 0 && len(r.GetPublishedSecrets()) == 0 {
		return r
	}
	src := r.ProtoReflect()
	p := &hivev1.Report{}
	dst := p.ProtoReflect()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd != reportResults && fd != reportSecrets {
			dst.Set(fd, v)
		}
		return true
	})
	unknown := src.GetUnknown()
	if rs := r.GetResults(); len(rs) > 0 {
		enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(&hivev1.Report{Results: rs})
		if err != nil {
			// Only an invalid message fails to marshal (a string that is
			// not UTF-8 was refused when the report was decoded): keep the
			// results decoded rather than lose them.
			dst.Set(reportResults, src.Get(reportResults))
		} else {
			unknown = append(unknown[:len(unknown):len(unknown)], enc...)
		}
	}
	dst.SetUnknown(unknown)
	return p
}

// eachEncodedResult calls f with the encoding of each resource result that
// r keeps in its unknown fields.
func eachEncodedResult(r *hivev1.Report, f func([]byte)) {
	b := r.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if num == reportResults.Number() && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return
			}
			f(v)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return
		}
		b = b[m:]
	}
}

// Results returns r's resource results: decoded from the encoding a stored
// report keeps (a new slice of new messages on each call), or r's own
// field for a report that was never stored.
func Results(r *hivev1.Report) []*hivev1.ResourceResult {
	out := r.GetResults()
	if r == nil || len(r.ProtoReflect().GetUnknown()) == 0 {
		return out
	}
	out = out[:len(out):len(out)]
	eachEncodedResult(r, func(b []byte) {
		x := &hivev1.ResourceResult{}
		if proto.Unmarshal(b, x) == nil {
			out = append(out, x)
		}
	})
	return out
}

// SummarizeResults counts r's resource results by outcome without decoding
// them.
func SummarizeResults(r *hivev1.Report) *hivev1.ResourceCounts {
	c := &hivev1.ResourceCounts{}
	add := func(o hivev1.Outcome) {
		c.Total++
		switch o {
		case hivev1.Outcome_OUTCOME_CHANGED:
			c.Changed++
		case hivev1.Outcome_OUTCOME_FAILED:
			c.Failed++
		case hivev1.Outcome_OUTCOME_SKIPPED:
			c.Skipped++
		case hivev1.Outcome_OUTCOME_PLANNED:
			c.Planned++
		}
	}
	for _, x := range r.GetResults() {
		add(x.GetOutcome())
	}
	if r == nil {
		return c
	}
	eachEncodedResult(r, func(b []byte) { add(outcomeOf(b)) })
	return c
}

// outcomeOf reads the outcome field of an encoded ResourceResult (the last
// one wins, as when decoding).
func outcomeOf(b []byte) hivev1.Outcome {
	o := hivev1.Outcome(0)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return o
		}
		b = b[n:]
		if num == resultOutcome.Number() && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return o
			}
			o = hivev1.Outcome(int32(v))
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return o
		}
		b = b[m:]
	}
	return o
}
