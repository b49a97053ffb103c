package coordinator

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func code(err error) codes.Code { return status.Code(err) }

// TestDevServer drives one --dev server over real gRPC: push, unchanged
// push, stale push, watch, report, status, history, diff, rollback,
// secrets, health and metrics.
func TestDevServer(t *testing.T) {
	start := time.Now()
	n := startDev(t)
	t.Logf("dev server ready in %v", time.Since(start))
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A watch before any push gets an empty state (generation 0) at once.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := c.WatchNodeState(wctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}, Addresses: []string{"10.0.0.1"}, AgentVersion: "t"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if first.GetState().GetGeneration() != 0 || len(first.GetState().GetResources()) != 0 {
		t.Fatalf("first state = %v, want empty generation 0", first.GetState())
	}

	// Register an lb node so web's firewall rule has sources.
	lbw, err := c.WatchNodeState(wctx, &hivev1.WatchNodeStateRequest{Node: "lb-1", Labels: map[string]string{"tier": "lb"}, Addresses: []string{"10.0.0.9"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lbw.Recv(); err != nil {
		t.Fatal(err)
	}

	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("s3cret")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "bad/name", Value: []byte("x")}); code(err) != codes.InvalidArgument {
		t.Fatalf("bad secret name: %v", err)
	}

	p1, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("1.0"), Message: "first", SourceName: "site.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if p1.GetGeneration() != 1 || p1.GetUnchanged() || p1.GetSha256() == "" {
		t.Fatalf("push 1 = %v", p1)
	}
	if strings.Join(p1.GetNodes(), ",") != "lb-1,web-1" {
		t.Fatalf("push nodes = %v", p1.GetNodes())
	}

	// The watch delivers generation 1 with the merged, resolved state.
	var st *hivev1.NodeState
	for st.GetGeneration() != 1 {
		m, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		st = m.GetState()
	}
	if got := string(st.GetSecrets()["api-key"]); got != "s3cret" {
		t.Fatalf("secret in state = %q", got)
	}
	var keys []string
	for _, r := range st.GetResources() {
		keys = append(keys, r.GetKey())
		if fw := r.GetFirewall(); fw != nil {
			if got := fw.GetRules()[0].GetSources(); len(got) != 1 || got[0] != "10.0.0.9" {
				t.Fatalf("firewall sources = %v, want the lb node's address", got)
			}
		}
	}
	if strings.Join(keys, " ") != "package:nginx file:/etc/app.conf firewall:filter" {
		t.Fatalf("resources = %v", keys)
	}

	// Identical content: unchanged, no new generation.
	p2, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("1.0"), BaseGeneration: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !p2.GetUnchanged() || p2.GetGeneration() != 1 {
		t.Fatalf("identical push = %v, want unchanged at 1", p2)
	}
	// Stale base refused, forced accepted.
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("2.0"), BaseGeneration: 0}); code(err) != codes.Aborted {
		t.Fatalf("stale push: %v, want Aborted", err)
	}
	p3, err := c.Push(ctx, &hivev1.PushRequest{Site: testSite("2.0"), BaseGeneration: 1, Message: "second"})
	if err != nil || p3.GetGeneration() != 2 {
		t.Fatalf("push 2 = %v, %v", p3, err)
	}
	// Invalid site: rejected whole, nothing changes.
	bad := testSite("3.0")
	bad.Selectors = append(bad.Selectors, &hivev1.Selector{Roles: []string{"nope"}})
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: bad, BaseGeneration: 2}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `unknown role "nope"`) {
		t.Fatalf("invalid push: %v", err)
	}
	// Oversize push.
	big := testSite("3.0")
	big.Roles[0].Description = strings.Repeat("x", DefaultMaxPushBytes)
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: big, BaseGeneration: 2}); code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversize push: %v", err)
	}

	// Report and status.
	if _, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
		Node: "web-1", Generation: 2, Phase: hivev1.Phase_PHASE_FAILED, Seq: 1, Finished: timestamppb.Now(),
		Results: []*hivev1.ResourceResult{
			{Key: "package:nginx", Outcome: hivev1.Outcome_OUTCOME_CHANGED},
			{Key: "file:/etc/app.conf", Outcome: hivev1.Outcome_OUTCOME_FAILED, Message: "permission denied"},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	sr, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if sr.GetGeneration() != 2 || len(sr.GetNodes()) != 2 {
		t.Fatalf("status = %v", sr)
	}
	web := sr.GetNodes()[1]
	if web.GetName() != "web-1" || web.GetPhase() != hivev1.Phase_PHASE_FAILED || web.GetAppliedGeneration() != 2 ||
		web.GetResources().GetFailed() != 1 || web.GetResources().GetChanged() != 1 || len(web.GetErrors()) != 1 ||
		strings.Join(web.GetRoles(), ",") != "web" {
		t.Fatalf("web status = %v", web)
	}
	if lb := sr.GetNodes()[0]; lb.GetPhase() != hivev1.Phase_PHASE_PENDING {
		t.Fatalf("lb status = %v, want pending", lb)
	}
	// Per-resource results only in a one-node answer.
	if r := web.GetResults(); len(r) != 0 {
		t.Fatalf("all-nodes status carries results: %v", r)
	}
	one, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if r := one.GetNodes()[0].GetResults(); len(one.GetNodes()) != 1 || len(r) != 2 || r[1].GetMessage() != "permission denied" {
		t.Fatalf("web-1 status results = %v", r)
	}

	// History, diff, rollback.
	h, err := c.ListGenerations(ctx, &hivev1.ListGenerationsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if h.GetCurrent() != 2 || len(h.GetGenerations()) != 2 || h.GetGenerations()[0].GetNumber() != 2 || h.GetGenerations()[0].GetAuthor() != "dev" {
		t.Fatalf("history = %v", h)
	}
	d, err := c.DiffGenerations(ctx, &hivev1.DiffGenerationsRequest{From: 1, To: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GetChanges()) != 1 || d.GetChanges()[0].GetKey() != "package:nginx" || d.GetChanges()[0].GetKind() != hivev1.ChangeKind_CHANGE_KIND_MODIFIED ||
		!strings.Contains(d.GetChanges()[0].GetDiff(), `-    "version": "1.0"`) || !strings.Contains(d.GetChanges()[0].GetDiff(), `+    "version": "2.0"`) {
		t.Fatalf("diff = %v", d)
	}
	rb, err := c.Rollback(ctx, &hivev1.RollbackRequest{Target: 1, BaseGeneration: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rb.GetGeneration() != 3 || rb.GetSha256() != p1.GetSha256() {
		t.Fatalf("rollback = %v", rb)
	}
	g3, err := c.GetGeneration(ctx, &hivev1.GetGenerationRequest{})
	if err != nil || g3.GetGeneration().GetRollbackOf() != 1 || g3.GetGeneration().GetParent() != 2 {
		t.Fatalf("generation 3 = %v, %v", g3, err)
	}
	if _, err := c.Rollback(ctx, &hivev1.RollbackRequest{Target: 9}); code(err) != codes.NotFound {
		t.Fatalf("rollback to 9: %v", err)
	}

	// Secrets listing never carries values; a secret change reaches the watch.
	ls, err := c.ListSecrets(ctx, &hivev1.ListSecretsRequest{})
	if err != nil || len(ls.GetSecrets()) != 1 || !ls.GetSecrets()[0].GetReferenced() {
		t.Fatalf("list secrets = %v, %v", ls, err)
	}
	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte("rotated")}); err != nil {
		t.Fatal(err)
	}
	for string(st.GetSecrets()["api-key"]) != "rotated" {
		m, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		st = m.GetState()
	}
	if _, err := c.DeleteSecret(ctx, &hivev1.DeleteSecretRequest{Name: "api-key"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecret(ctx, &hivev1.DeleteSecretRequest{Name: "api-key"}); code(err) != codes.NotFound {
		t.Fatalf("second delete: %v", err)
	}

	// Members and peers.
	mem, err := c.ListMembers(ctx, &hivev1.ListMembersRequest{})
	if err != nil || len(mem.GetMembers()) != 3 || mem.GetMembers()[0].GetRaft() != hivev1.RaftRole_RAFT_ROLE_LEADER {
		t.Fatalf("members = %v, %v", mem, err)
	}

	// healthz and metrics.
	resp, err := http.Get("http://" + n.HTTPAddr() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"hive_coordinator_pushes_total", "hive_coordinator_watchers 2", "hive_coordinator_raft_state 2", "hive_coordinator_render_cache_hits_total"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %q", m)
		}
	}
}

// TestRenderErrorInStatus: a site whose roles conflict for a node fails
// that node's watch with the precise error, and status shows it.
func TestRenderErrorInStatus(t *testing.T) {
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := testSite("1.0")
	s.Roles = append(s.Roles, &hivev1.Role{Name: "web2", Resources: []*hivev1.Resource{
		{Key: "package:nginx", Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: "nginx", State: hivev1.PackageState_PACKAGE_STATE_PRESENT, Version: "9.9"}}},
	}})
	s.Selectors = append(s.Selectors, &hivev1.Selector{MatchLabels: map[string]string{"tier": "web"}, Roles: []string{"web2"}})
	if _, err := c.Push(ctx, &hivev1.PushRequest{Site: s}); err != nil {
		t.Fatal(err)
	}
	w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Labels: map[string]string{"tier": "web"}})
	if err == nil {
		_, err = w.Recv()
	}
	if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `resource package:nginx is declared differently by roles "web" and "web2"`) {
		t.Fatalf("watch = %v", err)
	}
	st, err := c.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if errs := st.GetNodes()[0].GetErrors(); len(errs) != 1 || !strings.Contains(errs[0], "declared differently") {
		t.Fatalf("status errors = %v", errs)
	}
}
