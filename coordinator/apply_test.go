package coordinator

import (
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRetryable pins which commands a forward abandoned on a leader change
// may send again: only those whose second application changes nothing.
func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		c    *hivev1.Command
		want bool
	}{
		{&hivev1.Command{Body: &hivev1.Command_Push{}}, true},
		{&hivev1.Command{Body: &hivev1.Command_ReportBatch{}}, true},
		{&hivev1.Command{Body: &hivev1.Command_SecretSet{}}, true},
		{&hivev1.Command{Body: &hivev1.Command_Rollback{}}, false},
		{&hivev1.Command{Body: &hivev1.Command_SecretDelete{}}, false},
		{&hivev1.Command{Body: &hivev1.Command_BootstrapTokenRedeem{}}, false},
		{&hivev1.Command{Body: &hivev1.Command_BootstrapTokenCreate{}}, false},
	} {
		if got := retryable(tt.c); got != tt.want {
			t.Errorf("retryable(%T) = %v, want %v", tt.c.GetBody(), got, tt.want)
		}
	}
}
