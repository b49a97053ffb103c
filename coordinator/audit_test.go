package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestAuditEveryWrite makes every kind of write through a follower of a
// three-server TLS cluster, as admin "alice", and checks that each leaves
// one audit entry with alice's certificate identity, the RPC and a
// summary, the same on every server, never containing the secret value;
// agents' own writes (registration, reports) are not audited; a rejected
// write is recorded with its reason.
func TestAuditEveryWrite(t *testing.T) {
	nodes, tc := signingCluster(t, 3, time.Hour)
	l := leader(t, nodes)
	f := followers(nodes, l)
	admin := tc.dial(t, f[0].GRPCAddr(), pki.KindAdmin, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// An agent registers by watching: not an operator write.
	tc.issueAgent("web-1", map[string]string{"tier": "web"})
	agent := tc.dial(t, f[1].GRPCAddr(), pki.KindAgent, "web-1")
	w, err := agent.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: "web-1", Addresses: []string{"127.0.0.1"}})
	must("watch", err)
	_, err = w.Recv()
	must("watch recv", err)

	const secretValue = "s3cr3t-value-never-logged"
	p, err := admin.Push(ctx, &hivev1.PushRequest{Site: testSite("1"), Message: "first"})
	must("push", err)
	_, err = admin.Push(ctx, &hivev1.PushRequest{Site: testSite("2"), BaseGeneration: p.GetGeneration()})
	must("push 2", err)
	_, err = admin.Push(ctx, &hivev1.PushRequest{Site: testSite("3"), BaseGeneration: p.GetGeneration()})
	wantCode(t, "stale push", err, 10) // Aborted
	_, err = admin.Rollback(ctx, &hivev1.RollbackRequest{Target: 1, Message: "back"})
	must("rollback", err)
	_, err = admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "api-key", Value: []byte(secretValue)})
	must("set secret", err)
	_, err = admin.DeleteSecret(ctx, &hivev1.DeleteSecretRequest{Name: "api-key"})
	must("delete secret", err)
	_, err = admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "web-2", Labels: map[string]string{"tier": "web"}})
	must("token", err)
	_, err = admin.LabelNode(ctx, &hivev1.LabelNodeRequest{Node: "web-1", Set: map[string]string{"zone": "a"}})
	must("label", err)
	_, err = admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-9", Reason: "lost"})
	must("revoke", err)
	_, err = admin.RemoveNode(ctx, &hivev1.RemoveNodeRequest{Node: "web-1", Reason: "decommissioned"})
	must("remove", err)
	_, err = admin.RemovePeer(ctx, &hivev1.RemovePeerRequest{Id: f[1].cfg.Name})
	must("remove peer", err)

	want := []struct{ rpc, command, summary, reason string }{
		{"Push", "push", `push sha256 `, ""},
		{"Push", "push", `on base generation 1`, ""},
		{"Push", "push", `on base generation 1`, "stale_base"},
		{"Rollback", "rollback", `rollback to generation 1: "back"`, ""},
		{"SetSecret", "secret_set", "set secret api-key", ""},
		{"DeleteSecret", "secret_delete", "delete secret api-key", ""},
		{"CreateBootstrapToken", "bootstrap_token_create", "create bootstrap token for node web-2", ""},
		{"LabelNode", "node_label", "label node web-1 zone=a", ""},
		{"RevokeNode", "node_revoke", `revoke node web-9 (every certificate issued so far) (reason "lost")`, ""},
		{"RemoveNode", "node_remove", `remove node web-1 (reason "decommissioned")`, ""},
		{"RemovePeer", "peer_remove", "remove coordinator " + f[1].cfg.Name, ""},
	}
	for _, srv := range []*node{l, f[0]} {
		c := tc.dial(t, srv.GRPCAddr(), pki.KindAdmin, "bob")
		var got []*hivev1.AuditEntry
		waitFor(t, 10*time.Second, "audit entries on "+srv.cfg.Name, func() bool {
			r, err := c.ListAudit(ctx, &hivev1.ListAuditRequest{})
			must("list audit", err)
			got = r.GetEntries()
			return len(got) >= len(want)
		})
		if len(got) != len(want) {
			for _, e := range got {
				t.Logf("audit: %v", e)
			}
			t.Fatalf("%s: %d audit entries, want %d", srv.cfg.Name, len(got), len(want))
		}
		for i, w := range want {
			e := got[i]
			if e.GetIdentity() != "admin:alice" || e.GetRpc() != coordSvc+w.rpc || e.GetCommand() != w.command ||
				!strings.Contains(e.GetSummary(), w.summary) || e.GetReason() != w.reason || e.GetTime() == nil {
				t.Errorf("%s: entry %d = %v, want %+v", srv.cfg.Name, i, e, w)
			}
			if strings.Contains(e.String(), secretValue) {
				t.Errorf("audit entry %d contains the secret value", i)
			}
		}
		r, err := c.ListAudit(ctx, &hivev1.ListAuditRequest{Since: timestamppb.New(time.Now().Add(time.Hour))})
		must("list audit since", err)
		if len(r.GetEntries()) != 0 {
			t.Errorf("since the future: %v", r.GetEntries())
		}
	}
	// Agents may not read the audit log.
	_, err = agent.ListAudit(ctx, &hivev1.ListAuditRequest{})
	wantCode(t, "agent lists audit", err, 7) // PermissionDenied
}

// TestAuditDevIdentity: in --dev, a caller without a certificate is "dev".
func TestAuditDevIdentity(t *testing.T) {
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	r, err := c.ListAudit(ctx, &hivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetEntries()) != 1 || r.GetEntries()[0].GetIdentity() != "dev" || r.GetEntries()[0].GetSummary() != "set secret k" {
		t.Fatalf("audit: %v", r.GetEntries())
	}
}

// TestGenericAuditSummary: a command without a summarizer is described
// by its scalar fields, leaving out secret-like ones and bytes.
func TestGenericAuditSummary(t *testing.T) {
	c := &hivev1.Command{Body: &hivev1.Command_BootstrapTokenRedeem{BootstrapTokenRedeem: &hivev1.BootstrapTokenRedeemCommand{TokenSha256: "abc", Node: "web-1"}}}
	if got := genericSummary("bootstrap_token_redeem", c); got != "bootstrap token redeem node=web-1" {
		t.Fatalf("summary = %q", got)
	}
	c = &hivev1.Command{Body: &hivev1.Command_SecretSet{SecretSet: &hivev1.SecretSetCommand{Name: "k", Sealed: []byte("x"), KeyId: "id", Author: "a b"}}}
	if got := genericSummary("secret_set", c); got != `secret set author="a b" name=k` {
		t.Fatalf("summary = %q", got)
	}
}

// TestAuditAnswerBounded: a ListAudit answer keeps the newest entries that
// fit its size bound and says that older ones were left out.
func TestAuditAnswerBounded(t *testing.T) {
	var entries []*hivev1.AuditEntry
	for i := range 100 {
		entries = append(entries, &hivev1.AuditEntry{Index: uint64(i + 1), Summary: strings.Repeat("x", 90)})
	}
	got, truncated := newestFitting(entries, 1000)
	if !truncated || len(got) == 0 || len(got) > 10 || got[len(got)-1].GetIndex() != 100 {
		t.Fatalf("got %d entries (truncated %v)", len(got), truncated)
	}
	if all, truncated := newestFitting(entries, maxAuditResponseBytes); truncated || len(all) != 100 {
		t.Fatalf("small log cut: %d, %v", len(all), truncated)
	}
	if maxAuditResponseBytes >= 4<<20 {
		t.Fatal("bound at or above gRPC's default receive limit")
	}
}

// TestAuditAddPeer: adding a coordinator (a raft change, no state command)
// leaves an audit-only entry with the admin's identity; a refused add
// leaves none.
func TestAuditAddPeer(t *testing.T) {
	cfgs, tc := clusterConfigs(t, 2, clusterOpts{})
	for i := range cfgs {
		fastMembership(&cfgs[i])
	}
	nodes := startCluster(t, cfgs[:1])
	admin := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAdmin, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.AddPeer(ctx, &hivev1.AddPeerRequest{Id: "evil", Address: "127.0.0.1:1"}); err == nil {
		t.Fatal("AddPeer of nothing accepted")
	}
	c2 := startNode(t, cfgs[1])
	if _, err := admin.AddPeer(ctx, &hivev1.AddPeerRequest{Id: "c2", Address: c2.RaftAddr(), GrpcAddress: c2.GRPCAddr()}); err != nil {
		t.Fatalf("AddPeer c2: %v", err)
	}
	r, err := admin.ListAudit(ctx, &hivev1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GetEntries()) != 1 {
		t.Fatalf("audit: %v", r.GetEntries())
	}
	e := r.GetEntries()[0]
	if e.GetIdentity() != "admin:alice" || e.GetRpc() != coordSvc+"AddPeer" || e.GetCommand() != "" || !strings.Contains(e.GetSummary(), "add coordinator c2 (raft "+c2.RaftAddr()) {
		t.Fatalf("audit entry: %v", e)
	}
}
