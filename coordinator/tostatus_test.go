package coordinator

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
)

// TestToStatusNotApplied: UNAVAILABLE answers carry hivev1.ReasonNotApplied
// only when the write was certainly not appended, which is what lets
// hivectl send a non-idempotent write to the next coordinator (issue 12).
func TestToStatusNotApplied(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{ErrNoLeader, true},
		{fmt.Errorf("%w: context deadline exceeded", ErrNoLeader), true},
		{ErrNotLeader, true},
		{ErrUncertain, false},
		// A forward abandoned on a leader change may have been appended.
		{fmt.Errorf("%w: leader c1 replaced while forwarding (%w)", ErrNotLeader, errMaybeApplied), false},
		{fmt.Errorf("%w: deadline (%w)", ErrNoLeader, errMaybeApplied), false},
		{errStopping, false},
	} {
		st := toStatus(tt.err)
		if status.Code(st) != codes.Unavailable {
			t.Errorf("toStatus(%v) = %v; want UNAVAILABLE", tt.err, st)
		}
		if got := client.NotApplied(st); got != tt.want {
			t.Errorf("NotApplied(toStatus(%v)) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
