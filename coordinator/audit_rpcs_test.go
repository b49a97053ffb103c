package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/events"
	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// readOnlyRPCs are the CoordinatorService methods that change nothing:
// they are never audited. A method neither here, nor in agentOwnRPCs, nor
// in TestAuditEveryWriteRPC's cases fails that test: a new write RPC must
// be audited and added there (or, if it only reads, here).
var readOnlyRPCs = map[string]bool{
	"ListGenerations":  true,
	"GetGeneration":    true,
	"DiffGenerations":  true,
	"GetNodeState":     true,
	"GetStatus":        true,
	"ListMembers":      true,
	"ListSecrets":      true,
	"ListPeers":        true,
	"GetRollout":       true,
	"WatchRollout":     true,
	"ListAudit":        true,
	"WatchEvents":      true,
	"ListDriftRepairs": true,
	"RebootStatus":     true,
	// A plan is a dry run: agents plan without applying, nothing is kept
	// in the replicated state (pushing a kept plan is a Push).
	"Plan": true,
}

// agentOwnRPCs are agents' data-plane calls that write only the calling
// agent's own state (its registration, reports, plan answers): not
// operator writes, not audited (docs/operations.md, "Audit log").
var agentOwnRPCs = map[string]bool{
	"WatchNodeState": true,
	"Report":         true,
	"ReportStream":   true,
	"ReportPlan":     true,
}

// TestAuditEveryWriteRPC walks CoordinatorService's methods from its
// descriptor: every method that is not read-only nor an agent's own
// report must have a case below, and each case's call must land in
// ListAudit under its RPC with the caller's certificate identity (for a
// bootstrap token's redemption, the token's). The writes' events are
// checked too.
func TestAuditEveryWriteRPC(t *testing.T) {
	cfgs, tc := clusterConfigs(t, 2, clusterOpts{})
	for i := range cfgs {
		fastMembership(&cfgs[i])
		cfgs[i].GossipKey = testGossipKey
		cfgs[i].TLSCAKey = filepath.Join(tc.pki.Dir, pki.CAKeyFile)
		cfgs[i].AgentCertLifetime = time.Hour
	}
	nodes := startCluster(t, cfgs[:1])
	addr := nodes[0].GRPCAddr()
	admin := tc.dial(t, addr, pki.KindAdmin, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	must := func(what string) func(any, error) {
		return func(_ any, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}

	// Two agents register (not audited).
	for _, n := range []string{"web-1", "web-2"} {
		tc.issueAgent(n, nil)
		w, err := tc.dial(t, addr, pki.KindAgent, n).WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: n, Addresses: []string{"127.0.0.1"}})
		must("watch "+n)(nil, err)
		_, err = w.Recv()
		must("watch recv "+n)(nil, err)
	}
	agent := tc.dial(t, addr, pki.KindAgent, "web-1")
	// web-1's agent in the gossip pool (node.joined, then node.left).
	gc := gossip.DefaultConfig()
	gc.Name, gc.BindAddr, gc.Join, gc.Key, gc.Profile = "web-1", "127.0.0.1:0", []string{nodes[0].GossipAddr()}, testGossipKey, gossip.ProfileLocal
	gc.Meta = &hivev1.MemberMeta{Kind: hivev1.MemberKind_MEMBER_KIND_AGENT}
	g, gerr := gossip.New(gc)
	must("gossip")(nil, gerr)
	gctx, gcancel := context.WithCancel(context.Background())
	gdone := make(chan struct{})
	go func() { defer close(gdone); _ = g.Run(gctx) }()
	defer func() { gcancel(); <-gdone }()
	site1, err := site.Parse("site.yaml", []byte(certSite))
	must("parse")(nil, err)
	site2, err := site.Parse("site.yaml", []byte(strings.ReplaceAll(certSite, "validity: 1h", "validity: 2h")))
	must("parse")(nil, err)
	var tokenSHA string
	var c2 *node

	// The cases, in the order they run: what to call, and the identity
	// the audit entry must carry.
	type call struct {
		rpc      string
		identity string
		do       func()
	}
	cases := []call{
		{"Push", "admin:alice", func() {
			must("push")(admin.Push(ctx, &hivev1.PushRequest{Site: site1}))
			must("push with waves")(admin.Push(ctx, &hivev1.PushRequest{Site: site2, BaseGeneration: 1, Rollout: &hivev1.RolloutOverride{CanaryCount: ptr(uint32(1))}}))
		}},
		{"PauseRollout", "admin:alice", func() { must("pause")(admin.PauseRollout(ctx, &hivev1.PauseRolloutRequest{Reason: "look"})) }},
		{"ResumeRollout", "admin:alice", func() { must("resume")(admin.ResumeRollout(ctx, &hivev1.ResumeRolloutRequest{})) }},
		{"PromoteRollout", "admin:alice", func() { must("promote")(admin.PromoteRollout(ctx, &hivev1.PromoteRolloutRequest{})) }},
		{"AbortRollout", "admin:alice", func() { must("abort")(admin.AbortRollout(ctx, &hivev1.AbortRolloutRequest{})) }},
		{"Rollback", "admin:alice", func() { must("rollback")(admin.Rollback(ctx, &hivev1.RollbackRequest{Target: 2})) }},
		{"SetSecret", "admin:alice", func() {
			must("set secret")(admin.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "k", Value: []byte("v")}))
		}},
		{"DeleteSecret", "admin:alice", func() { must("delete secret")(admin.DeleteSecret(ctx, &hivev1.DeleteSecretRequest{Name: "k"})) }},
		{"CreateBootstrapToken", "admin:alice", func() {
			tok, err := admin.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: "web-3"})
			must("token")(nil, err)
			sum := sha256.Sum256([]byte(tok.GetToken()))
			tokenSHA = hex.EncodeToString(sum[:])
			anon, err := pki.ClientTLSConfig(tc.pki.CAFile(), "", "")
			must("anonymous tls")(nil, err)
			csr, _, _ := pki.CreateAgentCSR("web-3")
			must("request certificate")(dialTLS(t, addr, anon).RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: tok.GetToken(), Node: "web-3", Csr: csr}))
		}},
		{"RequestCertificate", "", nil}, // the token's identity, checked below; called above
		{"LabelNode", "admin:alice", func() {
			must("label")(admin.LabelNode(ctx, &hivev1.LabelNodeRequest{Node: "web-1", Set: map[string]string{"zone": "a"}}))
		}},
		{"MaintenanceStart", "admin:alice", func() {
			must("maintenance")(admin.MaintenanceStart(ctx, &hivev1.MaintenanceStartRequest{Node: "web-1", Reason: "disk"}))
		}},
		{"MaintenanceEnd", "admin:alice", func() { must("resume")(admin.MaintenanceEnd(ctx, &hivev1.MaintenanceEndRequest{Node: "web-1"})) }},
		{"RebootStart", "admin:alice", func() {
			must("reboot")(admin.RebootStart(ctx, &hivev1.RebootStartRequest{Nodes: []string{"web-1"}, Reason: "kernel"}))
		}},
		{"RebootCancel", "admin:alice", func() { must("cancel reboots")(admin.RebootCancel(ctx, &hivev1.RebootCancelRequest{})) }},
		{"IssueServiceCertificate", "agent:web-1", func() {
			csr, _, _ := pki.CreateServiceCSR("x")
			must("service certificate")(agent.IssueServiceCertificate(ctx, &hivev1.IssueServiceCertificateRequest{Name: "registry", Csr: csr}))
		}},
		{"RenewCertificate", "agent:web-1", func() {
			csr, _, _ := pki.CreateAgentCSR("web-1")
			must("renew")(agent.RenewCertificate(ctx, &hivev1.RenewCertificateRequest{Csr: csr}))
		}},
		{"RevokeNode", "admin:alice", func() { must("revoke")(admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-9"})) }},
		{"RemoveNode", "admin:alice", func() { must("remove")(admin.RemoveNode(ctx, &hivev1.RemoveNodeRequest{Node: "web-2"})) }},
		{"AddPeer", "admin:alice", func() {
			c2 = startNode(t, cfgs[1])
			must("add peer")(admin.AddPeer(ctx, &hivev1.AddPeerRequest{Id: cfgs[1].Name, Address: c2.RaftAddr(), GrpcAddress: c2.GRPCAddr()}))
		}},
		{"RemovePeer", "admin:alice", func() {
			waitFor(t, 20*time.Second, "c2 recorded", func() bool { return nodes[0].fsm.Store().Coordinator(cfgs[1].Name) != nil })
			must("remove peer")(admin.RemovePeer(ctx, &hivev1.RemovePeerRequest{Id: cfgs[1].Name}))
		}},
	}

	// Every method of the service is classified.
	byName := map[string]call{}
	for _, c := range cases {
		byName[c.rpc] = c
	}
	methods := hivev1.File_hive_v1_coordinator_proto.Services().ByName("CoordinatorService").Methods()
	known := map[string]bool{}
	for i := range methods.Len() {
		name := string(methods.Get(i).Name())
		known[name] = true
		_, write := byName[name]
		switch {
		case write && (readOnlyRPCs[name] || agentOwnRPCs[name]):
			t.Errorf("%s is both a write case and read-only/agent-own", name)
		case !write && !readOnlyRPCs[name] && !agentOwnRPCs[name]:
			t.Errorf("CoordinatorService.%s is a write RPC without an audit case: audit it (Server.apply, or auditOnlyErr for a write outside the state) and add it to TestAuditEveryWriteRPC, or list it in readOnlyRPCs", name)
		}
	}
	for _, set := range []map[string]bool{readOnlyRPCs, agentOwnRPCs, func() map[string]bool {
		m := map[string]bool{}
		for n := range byName {
			m[n] = true
		}
		return m
	}()} {
		for n := range set {
			if !known[n] {
				t.Errorf("%s is not a CoordinatorService method", n)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	for _, c := range cases {
		if c.do != nil {
			c.do()
		}
	}
	r, err := admin.ListAudit(ctx, &hivev1.ListAuditRequest{})
	must("list audit")(nil, err)
	for _, c := range cases {
		id := c.identity
		if c.rpc == "RequestCertificate" {
			id = "bootstrap-token:" + tokenSHA[:12]
		}
		found := false
		for _, e := range r.GetEntries() {
			if e.GetRpc() == coordSvc+c.rpc && e.GetIdentity() == id && e.GetError() == "" {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit entry of %s by %s", c.rpc, id)
		}
	}
	for _, e := range r.GetEntries() {
		method := strings.TrimPrefix(e.GetRpc(), coordSvc)
		if readOnlyRPCs[method] || agentOwnRPCs[method] {
			t.Errorf("audit entry of a read-only or agent-own RPC: %v", e)
		}
	}
	if t.Failed() {
		for _, e := range r.GetEntries() {
			t.Logf("audit: %s %s %s %q", e.GetIdentity(), e.GetRpc(), e.GetCommand(), e.GetSummary())
		}
	}
	// The same writes made their events (every command-derived kind the
	// issue lists but drift and failures, which TestEventsAndWebhooks
	// covers), and web-1's gossip join and, once its member stops, its
	// leave.
	gcancel()
	<-gdone
	want := []string{"push", "rollout.started", "rollout.wave_opened", "rollout.paused", "rollout.resumed", "rollout.promoted", "rollout.aborted",
		"rollback", "secret.set", "secret.deleted", "node.registered", "node.labeled", "node.revoked", "node.removed",
		"node.maintenance", "node.resumed", "reboot.queued",
		"node.joined", "coordinator.removed", "node.left"}
	var missing []string
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := map[string]bool{}
		for _, e := range nodes[0].ops.events.History(0, events.Filter{}) {
			got[e.GetKind()] = true
			if strings.Contains(e.String(), `"v"`) {
				t.Errorf("event with the secret's value: %v", e)
			}
		}
		missing = missing[:0]
		for _, k := range want {
			if !got[k] {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 || time.Now().After(end) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("no events of kinds %v", missing)
	}

	// The token's creation entry names the token as its redemption does.
	for _, e := range r.GetEntries() {
		if e.GetCommand() == "bootstrap_token_create" && !strings.Contains(e.GetSummary(), "bootstrap-token:"+tokenSHA[:12]) {
			t.Errorf("token creation does not name the token: %q", e.GetSummary())
		}
	}
}
