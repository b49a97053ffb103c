package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site/sitetest"
)

// TestRealCoordinatorNodeRebootDryRun runs `hivectl node reboot
// --dry-run` against a real coordinator (--dev) with three DRBD peers,
// three swarm managers and two plain nodes, one of them in maintenance:
// the text and JSON plans keep the peers and the managers apart and say
// why, a named selection follows queue order, nothing is queued, and the
// flags that do not go with a dry run are refused before any call.
func TestRealCoordinatorNodeRebootDryRun(t *testing.T) {
	clearEnv(t)
	addr := startCoordinator(t, "--dev", "--name", "c1")
	conn := []string{"--dev", "--addr", addr}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []string{"db-1", "db-2", "db-3", "mgr-1", "mgr-2", "mgr-3", "web-1", "web-2"} {
		w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: n, Labels: map[string]string{"tier": strings.Split(n, "-")[0]}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatalf("watch %s: %v", n, err)
		}
	}
	site := sitetest.QuorumSite("dry")
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: site}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MaintenanceStart(ctx, &hivev1.MaintenanceStartRequest{Node: "web-2", Reason: "psu"}); err != nil {
		t.Fatal(err)
	}

	peers := "db-1 and db-2 are peers of a DRBD resource"
	majority := "2 swarm managers in one wave would leave the 3 managers without a majority (at most 1 per wave)"
	r := run(t, "", append([]string{"node", "reboot", "--all", "--max-parallel", "3", "--dry-run"}, conn...)...)
	want := strings.Join([]string{
		"wave 1: db-1, mgr-1, web-1",
		"wave 2: db-2, mgr-2",
		"wave 3: db-3, mgr-3",
		"db-2 waits: not in wave 1: " + peers,
		"mgr-2 waits: not in wave 1: " + majority,
		"db-3 waits: not in wave 2: db-2 and db-3 are peers of a DRBD resource",
		"mgr-3 waits: not in wave 2: " + majority,
		"skipped web-2: in maintenance",
		"dry run (max parallel 3): nothing was queued",
	}, "\n") + "\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("dry run of all: %+v\nwant stdout:\n%s", r, want)
	}

	r = run(t, "", append([]string{"node", "reboot", "web-1", "db-1", "db-2", "--max-parallel", "2", "--dry-run", "-o", "json"}, conn...)...)
	var plan struct {
		DryRun      bool   `json:"dry_run"`
		MaxParallel uint32 `json:"max_parallel"`
		Waves       []struct {
			Nodes []struct {
				Name  string `json:"name"`
				State string `json:"state"`
				Waits string `json:"waits"`
			} `json:"nodes"`
		} `json:"waves"`
		Skipped []string `json:"skipped"`
		Queue   struct {
			Nodes []any `json:"nodes"`
		} `json:"queue"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &plan) != nil {
		t.Fatalf("json dry run: %+v", r)
	}
	var got []string
	for i, w := range plan.Waves {
		for _, n := range w.Nodes {
			got = append(got, fmt.Sprintf("%d:%s:%s:%s", i+1, n.Name, n.State, n.Waits))
		}
	}
	wantNodes := "1:web-1::|1:db-1::|2:db-2::not in wave 1: max parallel 2: the lock is full"
	if !plan.DryRun || plan.MaxParallel != 2 || strings.Join(got, "|") != wantNodes || len(plan.Skipped) != 0 || len(plan.Queue.Nodes) != 0 {
		t.Fatalf("json dry run: %+v\nnodes %q, want %q", plan, strings.Join(got, "|"), wantNodes)
	}

	// The dry runs queued nothing.
	if r := run(t, "", append([]string{"node", "reboot", "--status"}, conn...)...); r.code != 0 || r.stdout != "no reboots queued\n" {
		t.Fatalf("status after the dry runs: %+v", r)
	}

	// Errors: those of a real start, and flags a dry run does not take.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--status", "--dry-run"}, "it cannot go with --status, --cancel or --wait"},
		{[]string{"--cancel", "--dry-run"}, "it cannot go with --status, --cancel or --wait"},
		{[]string{"db-1", "--wait", "--dry-run"}, "it cannot go with --status, --cancel or --wait"},
		{[]string{"--dry-run"}, "give nodes, --role, --all, --status or --cancel (exactly one)"},
		{[]string{"--role", "db", "--all", "--dry-run"}, "give nodes, --role, --all, --status or --cancel (exactly one)"},
		{[]string{"db-9", "--dry-run"}, `node "db-9" is not registered`},
		{[]string{"--role", "cache", "--dry-run"}, `no registered node outside maintenance has role "cache"`},
		{[]string{"--all", "--max-parallel", "1001", "--dry-run"}, "max_parallel: at most 1000 (got 1001)"},
	} {
		r := run(t, "", append(append([]string{"node", "reboot"}, tc.args...), conn...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("node reboot %v: %+v, want an error with %q", tc.args, r, tc.want)
		}
	}
	if r := run(t, "", append([]string{"node", "reboot", "--status"}, conn...)...); r.code != 0 || r.stdout != "no reboots queued\n" {
		t.Fatalf("status after the refused dry runs: %+v", r)
	}

	// db-1 holds the lock (its agent reported a boot id; it never comes
	// back here) and db-2 is queued behind it: the plan says so.
	if _, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "db-1", Seq: 1, Generation: 1,
		Phase: hivev1.Phase_PHASE_CONVERGED, BootId: "1111-aaaa", Started: timestamppb.Now(), Finished: timestamppb.Now()}}); err != nil {
		t.Fatal(err)
	}
	// The report is applied (reports go through raft in batches) before
	// the start: without a boot id the leader would fail db-1.
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "db-1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(st.GetNodes()) == 1 && st.GetNodes()[0].GetLastReport() != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db-1's report not applied: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := run(t, "", append([]string{"node", "reboot", "db-1", "db-2", "--max-parallel", "1"}, conn...)...); r.code != 0 {
		t.Fatalf("reboot db-1 db-2: %+v", r)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := c.RebootStatus(ctx, &hivev1.RebootStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if n := st.GetQueue().GetNodes(); len(n) > 0 && n[0].GetState() == hivev1.RebootState_REBOOT_STATE_REBOOTING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db-1 not rebooting: %v", st.GetQueue())
		}
		time.Sleep(50 * time.Millisecond)
	}
	r = run(t, "", append([]string{"node", "reboot", "--role", "db", "--dry-run"}, conn...)...)
	want = strings.Join([]string{
		"wave 1: db-1 (rebooting)",
		"wave 2: db-2 (queued)",
		"wave 3: db-3",
		"db-2 waits: not in wave 1: max parallel 1: the lock is full",
		"db-3 waits: not in wave 2: max parallel 1: the lock is full",
		"dry run (max parallel 1): nothing was queued",
	}, "\n") + "\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("dry run behind the queue: %+v\nwant stdout:\n%s", r, want)
	}
}

// rebootFake counts RebootStart calls and answers them with an empty
// response, as a coordinator that dropped dry_run and queued would.
type rebootFake struct {
	hivev1.UnimplementedCoordinatorServiceServer
	mu    sync.Mutex
	calls int
}

func (f *rebootFake) RebootStart(context.Context, *hivev1.RebootStartRequest) (*hivev1.RebootStartResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return &hivev1.RebootStartResponse{Queue: &hivev1.RebootQueue{MaxParallel: 1}}, nil
}

// oldMaintenanceFiles is a descriptor set whose maintenance.proto is the
// one before dry_run: RebootStartRequest without field 6.
func oldMaintenanceFiles(t *testing.T) *protoregistry.Files {
	t.Helper()
	fdp := protodesc.ToFileDescriptorProto(hivev1.File_hive_v1_maintenance_proto)
	for _, m := range fdp.GetMessageType() {
		if m.GetName() != "RebootStartRequest" {
			continue
		}
		var kept []*descriptorpb.FieldDescriptorProto
		for _, f := range m.GetField() {
			if f.GetName() != "dry_run" {
				kept = append(kept, f)
			}
		}
		m.Field = kept
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	files := &protoregistry.Files{}
	for _, f := range []protoreflect.FileDescriptor{timestamppb.File_google_protobuf_timestamp_proto, fd} {
		if err := files.RegisterFile(f); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// TestNodeRebootDryRunOlderCoordinator: a coordinator older than dry_run
// would drop the field and queue the reboots for real, so hivectl asks
// its descriptors first (server reflection) and sends nothing when
// RebootStartRequest has no dry_run, or when it cannot tell; an answer
// without a plan is reported as a possible real start.
func TestNodeRebootDryRunOlderCoordinator(t *testing.T) {
	clearEnv(t)
	serve := func(reflect func(s *grpc.Server)) (string, *rebootFake) {
		f := &rebootFake{}
		s := grpc.NewServer()
		hivev1.RegisterCoordinatorServiceServer(s, f)
		healthpb.RegisterHealthServer(s, health.NewServer())
		if reflect != nil {
			reflect(s)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(lis)
		t.Cleanup(s.Stop)
		return lis.Addr().String(), f
	}
	for _, tc := range []struct {
		name    string
		reflect func(s *grpc.Server)
		calls   int
		want    string
	}{
		{"older", func(s *grpc.Server) {
			rpb.RegisterServerReflectionServer(s, reflection.NewServerV1(reflection.ServerOptions{Services: s, DescriptorResolver: oldMaintenanceFiles(t)}))
		}, 0, "is older than --dry-run (it would take the request as a real start); nothing was sent"},
		{"no reflection", nil, 0, "cannot tell whether the coordinator at"},
		{"no plan", func(s *grpc.Server) { reflection.Register(s) }, 1, "answered no plan: it may have queued the reboots for real"},
	} {
		addr, f := serve(tc.reflect)
		r := run(t, "", "node", "reboot", "db-1", "--dry-run", "--dev", "--addr", addr)
		f.mu.Lock()
		calls := f.calls
		f.mu.Unlock()
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || calls != tc.calls {
			t.Errorf("%s: %+v, %d RebootStart calls; want %q and %d calls", tc.name, r, calls, tc.want, tc.calls)
		}
	}
}
