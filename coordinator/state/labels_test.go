package state

import (
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestReportedLabelsAreNotTrusted: what an agent reports (NodeRecord.labels,
// which is also what every record written before identities holds) never
// becomes a trusted label; the certificate's and the operator's do, the
// operator's winning.
func TestReportedLabelsAreNotTrusted(t *testing.T) {
	s := New()
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "db"}})
	if l, _ := TrustedLabels(s.Node("web-1")); len(l) != 0 {
		t.Fatalf("reported labels trusted: %v", l)
	}
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "db"},
		Identity: &hivev1.NodeIdentity{Source: SourceCertificate, Labels: map[string]string{"tier": "web", "zone": "a"}, Serial: "01"}})
	l, src := TrustedLabels(s.Node("web-1"))
	if l["tier"] != "web" || src["tier"] != SourceCertificate || len(l) != 2 {
		t.Fatalf("trusted = %v %v", l, src)
	}
	if r := s.LabelNode(t0, &hivev1.NodeLabelCommand{Name: "web-1", Set: map[string]string{"zone": "b"}}); r.GetError() != "" {
		t.Fatal(r)
	}
	// An admin's watch (no identity) keeps the identity and operator labels.
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "db"}, AgentVersion: "2"})
	l, src = TrustedLabels(s.Node("web-1"))
	if l["zone"] != "b" || src["zone"] != SourceOperator || l["tier"] != "web" {
		t.Fatalf("after operator label and admin watch: %v %v", l, src)
	}
	v := s.RegistryVersion()
	if r := s.LabelNode(t0, &hivev1.NodeLabelCommand{Name: "web-1", Set: map[string]string{"zone": "b"}}); !r.GetUnchanged() || s.RegistryVersion() != v {
		t.Fatalf("same label again: %v", r)
	}
	if r := s.LabelNode(t0, &hivev1.NodeLabelCommand{Name: "web-1", Remove: []string{"zone"}}); r.GetError() != "" {
		t.Fatal(r)
	}
	if l, src = TrustedLabels(s.Node("web-1")); l["zone"] != "a" || src["zone"] != SourceCertificate {
		t.Fatalf("after removing the operator label: %v %v", l, src)
	}
	for name, c := range map[string]*hivev1.NodeLabelCommand{
		ReasonNotFound: {Name: "nope", Set: map[string]string{"a": "b"}},
		ReasonInvalid:  {Name: "web-1", Set: map[string]string{"a": "b"}, Remove: []string{"a"}},
	} {
		if r := s.LabelNode(t0, c); r.GetReason() != name {
			t.Errorf("%v: %v, want %s", c, r, name)
		}
	}
}

func TestTokenBinding(t *testing.T) {
	s := New()
	exp := timestamppb.New(t0.Add(time.Hour))
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-1"})
	s.UpsertCoordinator(t0, &hivev1.CoordinatorUpsertCommand{Name: "c1"})
	s.CreateToken(&hivev1.BootstrapTokenCreateCommand{TokenSha256: "any", Expires: exp})
	s.CreateToken(&hivev1.BootstrapTokenCreateCommand{TokenSha256: "pat", NodePattern: "web-*", Expires: exp})
	s.CreateToken(&hivev1.BootstrapTokenCreateCommand{TokenSha256: "c1", Node: "c1", Expires: exp})
	s.CreateToken(&hivev1.BootstrapTokenCreateCommand{TokenSha256: "re", Node: "web-1", Replace: true, Expires: exp})
	for _, c := range []struct {
		sha, node, reason string
	}{
		{"any", "web-9", ReasonTokenNode},    // unbound (an old token): refused
		{"pat", "db-1", ReasonTokenNode},     // pattern does not match
		{"pat", "web-1", ReasonTokenReplace}, // registered node, no replace
		{"c1", "c1", ReasonTokenReplace},     // coordinator name, no replace
		{"pat", "web-2", ""},                 // new node matching the pattern
		{"re", "web-1", ""},                  // replace allowed
	} {
		if _, r := s.CheckToken(t0, c.sha, c.node); r.GetReason() != c.reason {
			t.Errorf("CheckToken(%s, %s) = %v, want %q", c.sha, c.node, r, c.reason)
		}
		if r := s.RedeemToken(t0, &hivev1.BootstrapTokenRedeemCommand{TokenSha256: c.sha, Node: c.node}); r.GetReason() != c.reason {
			t.Errorf("RedeemToken(%s, %s) = %v, want %q", c.sha, c.node, r, c.reason)
		}
	}
}

// TestMatchLabels: MatchLabels is TrustedLabels without the sources, with
// and without operator labels.
func TestMatchLabels(t *testing.T) {
	s := New()
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-1", Labels: map[string]string{"tier": "db"},
		Identity: &hivev1.NodeIdentity{Source: SourceCertificate, Labels: map[string]string{"tier": "web", "zone": "a"}, Serial: "01"}})
	s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: "web-2", Labels: map[string]string{"tier": "db"}})
	check := func(what string) {
		t.Helper()
		for _, n := range []string{"web-1", "web-2"} {
			want, _ := TrustedLabels(s.Node(n))
			got := MatchLabels(s.Node(n))
			if len(got) != len(want) {
				t.Fatalf("%s: %s: MatchLabels %v, TrustedLabels %v", what, n, got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("%s: %s: MatchLabels %v, TrustedLabels %v", what, n, got, want)
				}
			}
		}
	}
	check("identity only")
	if r := s.LabelNode(t0, &hivev1.NodeLabelCommand{Name: "web-1", Set: map[string]string{"zone": "b", "rack": "3"}}); r.GetError() != "" {
		t.Fatal(r)
	}
	check("with operator labels")
}

// TestEachNodeReport: every registered node once, with its last report
// (nil: none), and the walk stops when f returns false.
func TestEachNodeReport(t *testing.T) {
	s := New()
	for _, n := range []string{"a", "b", "c"} {
		s.UpsertNode(t0, &hivev1.NodeUpsertCommand{Name: n})
	}
	s.ApplyReports(&hivev1.ReportBatchCommand{Reports: []*hivev1.Report{{Node: "b", Seq: 1, Finished: timestamppb.New(t0), Generation: 7}}})
	seen := map[string]uint64{}
	s.EachNodeReport(func(rec *hivev1.NodeRecord, r *hivev1.Report) bool {
		if _, dup := seen[rec.GetName()]; dup {
			t.Fatalf("%s twice", rec.GetName())
		}
		seen[rec.GetName()] = r.GetGeneration()
		return true
	})
	if len(seen) != 3 || seen["b"] != 7 || seen["a"] != 0 {
		t.Fatalf("seen %v", seen)
	}
	calls := 0
	s.EachNodeReport(func(*hivev1.NodeRecord, *hivev1.Report) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("%d calls after false", calls)
	}
}
