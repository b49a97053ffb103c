package agent

import (
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func TestMarkCauses(t *testing.T) {
	mk := func() []*hivev1.ResourceResult {
		return []*hivev1.ResourceResult{
			{Key: "file:/a", Outcome: hivev1.Outcome_OUTCOME_CHANGED},
			{Key: "file:/b", Outcome: hivev1.Outcome_OUTCOME_OK},
		}
	}
	for _, c := range []struct {
		hash, lastOK string
		want         hivev1.Cause
	}{
		{"h1", "h1", hivev1.Cause_CAUSE_DRIFT},
		{"h2", "h1", hivev1.Cause_CAUSE_CHANGE},
		{"h1", "", hivev1.Cause_CAUSE_CHANGE},
	} {
		rs := mk()
		markCauses(rs, c.hash, c.lastOK)
		if rs[0].Cause != c.want || rs[1].Cause != hivev1.Cause_CAUSE_UNSPECIFIED {
			t.Errorf("hash %s last %q: causes %v %v, want %v", c.hash, c.lastOK, rs[0].Cause, rs[1].Cause, c.want)
		}
	}
}
