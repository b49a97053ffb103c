package ctl

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRealCoordinatorNodeRevokeRemove runs `hivectl node revoke` and
// `hivectl node remove` against a real TLS coordinator: a certificate
// made offline (which the coordinator never saw) is refused once its node
// is revoked, a bad name or serial is rejected before anything changes,
// and a removed node leaves status.
func TestRealCoordinatorNodeRevokeRemove(t *testing.T) {
	p := startTLSCoordinator(t, []string{"tls", "cert", "create", "--agent", "web-2"})
	admin := []string{"--cert", p("alice.pem"), "--key", p("alice-key.pem")}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent := func(name string) *client.Conn {
		c, err := client.Dial(ctx, client.Config{Addrs: []string{os.Getenv(envAddr)}, CA: p("ca.pem"), Cert: p(name + ".pem"), Key: p(name + "-key.pem")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, n := range []string{"web-1", "web-2"} {
		if _, err := agent(n).Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: n, Seq: 1, Phase: hivev1.Phase_PHASE_CONVERGED}}); err != nil {
			t.Fatal(err)
		}
	}

	for _, bad := range [][]string{
		{"node", "revoke", "web/1"},
		{"node", "revoke", "web-1", "--serial", "xyz"},
		{"node", "revoke", "web-1", "-o", "yaml"},
	} {
		if r := run(t, "", append(bad, admin...)...); r.code == 0 || r.stderr == "" {
			t.Fatalf("%v accepted: %+v", bad, r)
		}
	}
	if r := run(t, "", "node", "revoke", "web-1", "--cert", p("web-2.pem"), "--key", p("web-2-key.pem")); r.code != 1 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("an agent revoked a node: %+v", r)
	}
	// Nothing was revoked by the refused attempts.
	if _, err := agent("web-1").GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-1"}); err != nil {
		t.Fatalf("web-1 after refused revocations: %v", err)
	}

	r := run(t, "", append([]string{"node", "revoke", "web-1", "--reason", "stolen laptop", "-o", "json"}, admin...)...)
	var rev struct {
		Node   string     `json:"node"`
		Cutoff *time.Time `json:"cutoff"`
		Author string     `json:"author"`
		Reason string     `json:"reason"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rev) != nil || rev.Node != "web-1" || rev.Cutoff == nil || rev.Author != "alice" || rev.Reason != "stolen laptop" {
		t.Fatalf("node revoke: %+v", r)
	}
	_, err := agent("web-1").GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-1"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "of agent:web-1 revoked at") {
		t.Fatalf("offline-made certificate of the revoked node: %v", err)
	}
	if _, err := agent("web-2").GetNodeState(ctx, &hivev1.GetNodeStateRequest{Node: "web-2"}); err != nil {
		t.Fatalf("web-2 after web-1's revocation: %v", err)
	}
	// Revoked, not removed: still in status.
	if r := run(t, "", append([]string{"status", "web-1"}, admin...)...); r.code != 0 {
		t.Fatalf("status of the revoked node: %+v", r)
	}

	if r := run(t, "", append([]string{"node", "remove", "ghost"}, admin...)...); r.code != 1 || !strings.Contains(r.stderr, `node "ghost" is not known`) {
		t.Fatalf("remove of an unknown node: %+v", r)
	}
	r = run(t, "", append([]string{"node", "remove", "web-2", "--reason", "decommissioned"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "node web-2 removed from the registry and status") || !strings.Contains(r.stdout, "certificates of agent:web-2 issued until") {
		t.Fatalf("node remove: %+v", r)
	}
	if r := run(t, "", append([]string{"status", "web-2"}, admin...)...); r.code != 1 || !strings.Contains(r.stderr, "not known") {
		t.Fatalf("status of the removed node: %+v", r)
	}
	if _, err := agent("web-2").Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{Node: "web-2", Seq: 2}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("report of the removed node: %v", err)
	}
	for _, args := range [][]string{{"node", "revoke", "--help"}, {"node", "remove", "--help"}} {
		if r := run(t, "", args...); r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--addr") {
			t.Errorf("%v: help lacks examples or connection flags", args)
		}
	}
}
