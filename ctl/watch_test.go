package ctl

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// blockingFake is fakeCoordinator with blocking status: the i-th status of
// the script has status_index i+1; a call whose min_index is below the
// last script entry's gets the next entry at once, one at the end of the
// script waits for max_wait (or the caller's end) and answers the last
// entry again. It records the requests.
type blockingFake struct {
	*fakeCoordinator
	mu   sync.Mutex
	reqs []*hivev1.GetStatusRequest
}

func (b *blockingFake) GetStatus(ctx context.Context, req *hivev1.GetStatusRequest) (*hivev1.GetStatusResponse, error) {
	b.mu.Lock()
	b.reqs = append(b.reqs, proto.Clone(req).(*hivev1.GetStatusRequest))
	b.mu.Unlock()
	script := b.fakeCoordinator.statuses
	i := min(int(req.GetMinIndex()), len(script)-1)
	if req.GetMaxWait() == nil {
		i = 0
	}
	if req.GetMaxWait() != nil && req.GetMinIndex() >= uint64(len(script)) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(req.GetMaxWait().AsDuration()):
		}
	}
	resp := proto.Clone(script[i]).(*hivev1.GetStatusResponse)
	resp.StatusIndex = uint64(i + 1)
	return onlyNode(resp, req.GetNode()), nil
}

func (b *blockingFake) requests() []*hivev1.GetStatusRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*hivev1.GetStatusRequest(nil), b.reqs...)
}

func serveBlockingFake(t *testing.T, b *blockingFake) string {
	t.Helper()
	s := grpc.NewServer()
	hivev1.RegisterCoordinatorServiceServer(s, b)
	healthpb.RegisterHealthServer(s, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func progressScript() []*hivev1.GetStatusResponse {
	const (
		pending   = hivev1.Phase_PHASE_PENDING
		applying  = hivev1.Phase_PHASE_APPLYING
		converged = hivev1.Phase_PHASE_CONVERGED
		failed    = hivev1.Phase_PHASE_FAILED
	)
	return []*hivev1.GetStatusResponse{
		{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 0, pending), node("db-1", 0, pending), node("lb-1", 0, pending)}},
		{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, applying), node("db-1", 0, pending), node("lb-1", 1, applying)}},
		{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, converged), node("db-1", 1, applying), node("lb-1", 1, failed, "boom")}},
		{Generation: 1, Nodes: []*hivev1.NodeStatus{node("web-1", 1, converged), node("db-1", 1, converged), node("lb-1", 1, failed, "boom")}},
	}
}

// TestPushWaitBlocking: push --wait reads status with blocking calls, the
// first at once and each next one from the status_index of the last, and
// prints a plain line per change when stdout is not a terminal.
func TestPushWaitBlocking(t *testing.T) {
	clearEnv(t)
	f := newFake()
	f.nodes = []string{"web-1", "db-1", "lb-1"}
	f.statuses = progressScript()
	b := &blockingFake{fakeCoordinator: f}
	addr := serveBlockingFake(t, b)
	r := run(t, "", "push", siteFile(t), "--wait", "--dev", "--addr", addr)
	if r.code != 1 || !strings.Contains(r.stderr, "1 node(s) failed to converge on generation 1") || !strings.Contains(r.stderr, "lb-1: boom") {
		t.Fatalf("push --wait: %+v", r)
	}
	want := "generation 1 (sha256 sha-1) applies to 3 node(s)\n" +
		"generation 1: 0/3 converged, 0 applying, 0 failed, 3 pending\n" +
		"generation 1: 0/3 converged, 2 applying, 0 failed, 1 pending\n" +
		"generation 1: 1/3 converged, 1 applying, 1 failed, 0 pending\n" +
		"generation 1: 2/3 converged, 0 applying, 1 failed, 0 pending\n"
	if !strings.HasSuffix(r.stdout, want[strings.Index(want, "\n")+1:]) || strings.Contains(r.stdout, "\r") || strings.Contains(r.stdout, "[") {
		t.Fatalf("push --wait output (not a terminal: plain lines, no bar):\n%s\nwant lines:\n%s", r.stdout, want)
	}
	reqs := b.requests()
	if len(reqs) != 4 {
		t.Fatalf("%d status calls, want 4 (one per change): %v", len(reqs), reqs)
	}
	if reqs[0].GetMaxWait() != nil {
		t.Fatalf("first status call blocks: %v", reqs[0])
	}
	for i, q := range reqs[1:] {
		if q.GetMinIndex() != uint64(i+1) || q.GetMaxWait().AsDuration() != blockWait {
			t.Fatalf("status call %d: min_index %d, max_wait %v; want %d, %v", i+2, q.GetMinIndex(), q.GetMaxWait().AsDuration(), i+1, blockWait)
		}
	}
}

// TestStatusWatch: status --watch prints the phase counts of every change
// (plain lines off a terminal), waits on the coordinator in between, and
// ends with exit 0 at --timeout; with -o json it prints one document per
// change; with NODE it follows that node.
func TestStatusWatch(t *testing.T) {
	clearEnv(t)
	f := newFake()
	f.statuses = progressScript()
	b := &blockingFake{fakeCoordinator: f}
	addr := serveBlockingFake(t, b)

	r := run(t, "", "status", "--watch", "--timeout", "1500ms", "--dev", "--addr", addr)
	want := "generation 1: 0/3 converged, 0 applying, 0 failed, 3 pending\n" +
		"generation 1: 0/3 converged, 2 applying, 0 failed, 1 pending\n" +
		"generation 1: 1/3 converged, 1 applying, 1 failed, 0 pending\n" +
		"generation 1: 2/3 converged, 0 applying, 1 failed, 0 pending\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("status --watch: code %d, stdout:\n%s\nwant:\n%s", r.code, r.stdout, want)
	}
	// The last call waited on the coordinator (the script was over).
	reqs := b.requests()
	if last := reqs[len(reqs)-1]; last.GetMinIndex() != 4 || last.GetMaxWait() == nil {
		t.Fatalf("last call %v: want a blocking call from status_index 4", last)
	}
	if len(reqs) > 6 {
		t.Fatalf("%d status calls in 1.5s for 4 changes: polling?", len(reqs))
	}

	r = run(t, "", "status", "--watch", "--timeout", "1s", "-o", "json", "--dev", "--addr", addr)
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	var docs []statusJSON
	for {
		var s statusJSON
		if err := dec.Decode(&s); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("status --watch -o json: %v\n%s", err, r.stdout)
		}
		docs = append(docs, s)
	}
	if r.code != 0 || len(docs) != 4 || docs[3].Nodes[1].Phase != "converged" {
		t.Fatalf("status --watch -o json: code %d, %d documents (want 4, one per change):\n%s", r.code, len(docs), r.stdout)
	}

	r = run(t, "", "status", "db-1", "--watch", "--timeout", "1s", "--dev", "--addr", addr)
	want = "generation 1: 0/1 converged, 0 applying, 0 failed, 1 pending\n" +
		"generation 1: 0/1 converged, 1 applying, 0 failed, 0 pending\n" +
		"generation 1: 1/1 converged, 0 applying, 0 failed, 0 pending\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("status db-1 --watch: code %d, stdout:\n%s\nwant:\n%s", r.code, r.stdout, want)
	}
	if r := run(t, "", "status", "--timeout", "1s", "--dev", "--addr", addr); r.code != 1 || !strings.Contains(r.stderr, "only with --watch") {
		t.Fatalf("--timeout without --watch: %+v", r)
	}
}

func TestProgressBar(t *testing.T) {
	for _, c := range []struct {
		c    fleetCounts
		want string
	}{
		{fleetCounts{}, "[..........]"},
		{fleetCounts{converged: 10}, "[==========]"},
		{fleetCounts{converged: 5, applying: 2, failed: 1, pending: 2}, "[=====>>x..]"},
		// One failed node among thousands still shows.
		{fleetCounts{converged: 9998, failed: 1, pending: 1}, "[========x.]"},
		{fleetCounts{applying: 1, pending: 3}, "[>>........]"},
	} {
		if got := c.c.bar(10); got != c.want {
			t.Errorf("%+v.bar(10) = %q, want %q", c.c, got, c.want)
		}
	}
	if got := (fleetCounts{converged: 9, applying: 2, pending: 1}).String(); got != "9/12 converged, 2 applying, 0 failed, 1 pending" {
		t.Errorf("counts text %q", got)
	}
}
