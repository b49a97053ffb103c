package coordinator

import (
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/render"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// TestEncodeWatchResponse: the pre-encoded watch message decodes to the
// same message the standard marshaller would have sent.
func TestEncodeWatchResponse(t *testing.T) {
	st := state.New()
	st.Push(time.Now(), &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "x", Site: testSite("1")}})
	st.UpsertNode(time.Now(), &hivev1.NodeUpsertCommand{Name: "lb-1", Labels: map[string]string{"tier": "lb"}, Addresses: []string{"10.0.0.9"}})
	out, err := render.New(nil).Render(st, render.Facts{Name: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []uint64{0, 1, 1 << 40} {
		var got hivev1.WatchNodeStateResponse
		if err := proto.Unmarshal(encodeWatchResponse(out, idx).b, &got); err != nil {
			t.Fatal(err)
		}
		want := &hivev1.WatchNodeStateResponse{State: withIndex(out.State, idx)}
		if !proto.Equal(&got, want) {
			t.Fatalf("index %d: decoded %v\nwant %v", idx, &got, want)
		}
	}
}
