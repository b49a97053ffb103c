package state

import (
	"unicode/utf8"

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
// The FSM does not decode them either: UnmarshalCommand decodes a report
// batch from the raft log with each report's results left encoded, so a
// follower applying a report builds none of the per-result messages that
// the store would throw away.
//
// Readers must not use GetResults on a stored report (nor on a report of a
// decoded command): Results decodes them, ResultsWhere decodes those of
// some outcomes, SummarizeResults counts them by outcome without decoding.
// All accept a report whose results are in the field as well.

var (
	reportResults = (&hivev1.Report{}).ProtoReflect().Descriptor().Fields().ByName("results")
	reportSecrets = (&hivev1.Report{}).ProtoReflect().Descriptor().Fields().ByName("published_secrets")
	resultOutcome = (&hivev1.ResourceResult{}).ProtoReflect().Descriptor().Fields().ByName("outcome")
	resultCause   = (&hivev1.ResourceResult{}).ProtoReflect().Descriptor().Fields().ByName("cause")
	commandBatch  = (&hivev1.Command{}).ProtoReflect().Descriptor().Fields().ByName("report_batch")
	batchReports  = (&hivev1.ReportBatchCommand{}).ProtoReflect().Descriptor().Fields().ByName("reports")
)

// UnmarshalCommand decodes a command from its encoding (a raft log entry)
// as proto.Unmarshal does, except that the results of a report batch's
// reports stay encoded in each report's unknown fields, the form the store
// keeps. The encoded results are checked as decoding would check them
// (well-formed, strings UTF-8); anything else decodes normally, and
// malformed input fails as with proto.Unmarshal.
func UnmarshalCommand(data []byte, c *hivev1.Command) error {
	stripped, results, ok := splitBatch(data)
	if !ok {
		return proto.Unmarshal(data, c)
	}
	if err := proto.Unmarshal(stripped, c); err != nil {
		return err
	}
	reports := c.GetReportBatch().GetReports()
	if len(reports) != len(results) {
		// A second body in the oneof replaced the batch: decode as is.
		proto.Reset(c)
		return proto.Unmarshal(data, c)
	}
	for i, r := range reports {
		if len(results[i]) == 0 {
			continue
		}
		m := r.ProtoReflect()
		if u := m.GetUnknown(); len(u) > 0 {
			m.SetUnknown(append(u[:len(u):len(u)], results[i]...))
		} else {
			m.SetUnknown(results[i]) // splitReport's own copy
		}
	}
	return nil
}

// The loops below that walk encoded fields are written out each time: a
// shared walker (an iterator, or a function per field) made applying a
// report 25-40 % slower in BenchmarkStoreReports, the calls per field not
// being inlined.

// splitBatch returns the encoding of a command without its report batch's
// results and, by report position, each report's results (the field
// entries, copied). ok is false when data holds no report batch or is not
// well-formed.
func splitBatch(data []byte) (stripped []byte, results [][]byte, ok bool) {
	stripped = make([]byte, 0, len(data))
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, false
		}
		if num != commandBatch.Number() || typ != protowire.BytesType {
			stripped = append(stripped, b[:n+m]...)
			b = b[n+m:]
			continue
		}
		body, _ := protowire.ConsumeBytes(b[n:])
		var nb []byte
		for len(body) > 0 {
			num, typ, n := protowire.ConsumeTag(body)
			if n < 0 {
				return nil, nil, false
			}
			m := protowire.ConsumeFieldValue(num, typ, body[n:])
			if m < 0 {
				return nil, nil, false
			}
			if num != batchReports.Number() || typ != protowire.BytesType {
				nb = append(nb, body[:n+m]...)
				body = body[n+m:]
				continue
			}
			rep, _ := protowire.ConsumeBytes(body[n:])
			sr, res, good := splitReport(rep)
			if !good {
				return nil, nil, false
			}
			nb = protowire.AppendTag(nb, num, typ)
			nb = protowire.AppendBytes(nb, sr)
			results = append(results, res)
			body = body[n+m:]
		}
		stripped = protowire.AppendTag(stripped, num, typ)
		stripped = protowire.AppendBytes(stripped, nb)
		ok = true
		b = b[n+m:]
	}
	return stripped, results, ok
}

// splitReport separates an encoded report's results field entries (copied
// into res) from its other fields.
func splitReport(rep []byte) (rest, res []byte, ok bool) {
	for b := rep; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, false
		}
		if num == reportResults.Number() && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			if !validEncoding(reportResults.Message(), v, 0) {
				return nil, nil, false
			}
			res = append(res, b[:n+m]...)
		} else {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	return rest, res, true
}

// validEncoding reports whether b is a well-formed encoding of a message
// of type md whose strings are UTF-8: what proto.Unmarshal would accept.
func validEncoding(md protoreflect.MessageDescriptor, b []byte, depth int) bool {
	if depth > 8 {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		if fd := md.Fields().ByNumber(num); fd != nil && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			switch fd.Kind() {
			case protoreflect.StringKind:
				if !utf8.Valid(v) {
					return false
				}
			case protoreflect.MessageKind:
				if fd.IsMap() || !validEncoding(fd.Message(), v, depth+1) {
					return false
				}
			}
		}
		b = b[m:]
	}
	return true
}

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

// Results returns r's resource results, decoded from the encoding a stored
// report keeps (new messages on each call) after any in r's own field.
func Results(r *hivev1.Report) []*hivev1.ResourceResult { return ResultsWhere(r, All) }

// ResultsWhere returns those of r's resource results for which keep,
// given their outcome and cause, is true; only those are decoded.
func ResultsWhere(r *hivev1.Report, keep func(hivev1.Outcome, hivev1.Cause) bool) []*hivev1.ResourceResult {
	var out []*hivev1.ResourceResult
	for _, x := range r.GetResults() {
		if keep(x.GetOutcome(), x.GetCause()) {
			out = append(out, x)
		}
	}
	if r == nil {
		return out
	}
	eachEncodedResult(r, func(b []byte) {
		if !keep(outcomeOf(b)) {
			return
		}
		x := &hivev1.ResourceResult{}
		if proto.Unmarshal(b, x) == nil {
			out = append(out, x)
		}
	})
	return out
}

// All selects every result (ResultsWhere).
func All(hivev1.Outcome, hivev1.Cause) bool { return true }

// Failed selects failed results (ResultsWhere).
func Failed(o hivev1.Outcome, _ hivev1.Cause) bool { return o == hivev1.Outcome_OUTCOME_FAILED }

// DriftRepaired selects results that changed because the machine drifted
// from an unchanged desired state (ResultsWhere).
func DriftRepaired(o hivev1.Outcome, c hivev1.Cause) bool {
	return o == hivev1.Outcome_OUTCOME_CHANGED && c == hivev1.Cause_CAUSE_DRIFT
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
	eachEncodedResult(r, func(b []byte) {
		o, _ := outcomeOf(b)
		add(o)
	})
	return c
}

// outcomeOf reads the outcome and cause fields of an encoded
// ResourceResult (the last of each wins, as when decoding).
func outcomeOf(b []byte) (hivev1.Outcome, hivev1.Cause) {
	var o hivev1.Outcome
	var c hivev1.Cause
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == resultOutcome.Number() || num == resultCause.Number()) {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				break
			}
			if num == resultOutcome.Number() {
				o = hivev1.Outcome(int32(v))
			} else {
				c = hivev1.Cause(int32(v))
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			break
		}
		b = b[m:]
	}
	return o, c
}
