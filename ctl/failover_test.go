package ctl

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// dyingCoordinator is one coordinator of a cluster whose state is the
// shared fake: Push answers like the real state machine (content equal to
// the current generation is unchanged before the base is checked) and,
// with dieOnPush set, the coordinator dies in the call: after applying
// the push (applyFirst) or before, its connections cut like a kill -9.
type dyingCoordinator struct {
	*fakeCoordinator
	dieOnPush  atomic.Bool
	applyFirst bool
	pushes     atomic.Int32
	stop       func()
}

func (d *dyingCoordinator) Push(ctx context.Context, req *hivev1.PushRequest) (*hivev1.PushResponse, error) {
	d.pushes.Add(1)
	var resp *hivev1.PushResponse
	var err error
	if !d.dieOnPush.Load() || d.applyFirst {
		d.mu.Lock()
		n := len(d.generations)
		unchanged := n > 0 && d.generations[n-1].GetSha256() == "sha-"+string(req.GetSource())
		d.mu.Unlock()
		if unchanged {
			resp, err = &hivev1.PushResponse{Generation: uint64(n), Sha256: "sha-" + string(req.GetSource()), Unchanged: true}, nil
		} else {
			resp, err = d.fakeCoordinator.Push(ctx, req)
		}
	}
	if d.dieOnPush.Load() {
		d.stop() // the answer is never delivered
		<-ctx.Done()
	}
	return resp, err
}

func serveDying(t *testing.T, f *fakeCoordinator, applyFirst bool) (*dyingCoordinator, string) {
	t.Helper()
	d := &dyingCoordinator{fakeCoordinator: f, applyFirst: applyFirst}
	s := grpc.NewServer()
	hivev1.RegisterCoordinatorServiceServer(s, d)
	healthpb.RegisterHealthServer(s, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	d.stop = func() { go s.Stop() }
	t.Cleanup(s.Stop)
	return d, lis.Addr().String()
}

// TestPushFailover (issue 12): the coordinator hivectl pushes to dies in
// the call. Whether it applied the push first or not, hivectl moves on to
// the next --addr, reports the push as generation 1, and the cluster holds
// exactly one generation: a push sent again is applied at most once, and
// its answer (unchanged at base+1) is read as the first delivery's. A
// forced push is not sent again; hivectl finds it applied by reading the
// history from the next coordinator, or says it was not applied.
func TestPushFailover(t *testing.T) {
	for _, tt := range []struct {
		name        string
		applyFirst  bool
		force       bool
		wantNote    bool  // "applied before the connection was lost"
		wantPushesB int32 // pushes the second coordinator received
		wantErr     string
	}{
		{name: "died before applying", wantPushesB: 1},
		{name: "died after applying", applyFirst: true, wantNote: true, wantPushesB: 1},
		{name: "forced, died after applying", applyFirst: true, force: true, wantNote: true, wantPushesB: 0},
		{name: "forced, died before applying", force: true, wantErr: "the push was not applied, unless it is still in flight"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			f := newFake()
			a, addrA := serveDying(t, f, tt.applyFirst)
			b, addrB := serveDying(t, f, false)
			a.dieOnPush.Store(true)
			args := []string{"push", siteFile(t), "-o", "json", "--dev", "--addr", addrA, "--addr", addrB}
			if tt.force {
				args = append(args, "--force")
			}
			r := run(t, "", args...)
			if tt.wantErr != "" {
				if r.code != 1 || !strings.Contains(r.stderr, tt.wantErr) || strings.Contains(r.stdout, "generation") {
					t.Fatalf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tt.wantErr)
				}
				f.mu.Lock()
				n := len(f.generations)
				f.mu.Unlock()
				if b.pushes.Load() != 0 || n != 0 {
					t.Fatalf("sent again (%d) or applied (%d generations)", b.pushes.Load(), n)
				}
				return
			}
			if r.code != 0 {
				t.Fatalf("push through a dying coordinator: exit %d: %s", r.code, r.stderr)
			}
			var out pushResultJSON
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Generation != 1 || out.Unchanged {
				t.Fatalf("push output %q (%v); want generation 1, not unchanged", r.stdout, err)
			}
			if !strings.Contains(r.stderr, "moved on to "+addrB) {
				t.Errorf("no failover note in %q", r.stderr)
			}
			if got := strings.Contains(r.stderr, "was applied before the connection was lost"); got != tt.wantNote {
				t.Errorf("applied-before note = %v, want %v: %q", got, tt.wantNote, r.stderr)
			}
			if a.pushes.Load() != 1 || b.pushes.Load() != tt.wantPushesB {
				t.Errorf("pushes: a %d, b %d; want 1, %d", a.pushes.Load(), b.pushes.Load(), tt.wantPushesB)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.generations) != 1 {
				t.Fatalf("%d generations after one push; want 1", len(f.generations))
			}
		})
	}
}
