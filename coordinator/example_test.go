package coordinator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// TestExampleSite pushes deploy/examples/site.yaml (parsed by package site,
// as hivectl does) to a --dev server and checks what the demo's nodes
// (web-1 tier=web; db-1, db-2 tier=db) are given: DRBD peers, firewall
// sources from roles, swarm initializer and join token, the database
// password only where referenced.
func TestExampleSite(t *testing.T) {
	path := filepath.Join("..", "deploy", "examples", "site.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := site.Parse("site.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := func(name, tier, addr string) hivev1.CoordinatorService_WatchNodeStateClient {
		w, err := c.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: name, Labels: map[string]string{"tier": tier}, Addresses: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Recv(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	ws := map[string]hivev1.CoordinatorService_WatchNodeStateClient{
		"web-1": watch("web-1", "web", "10.0.0.10"),
		"db-1":  watch("db-1", "db", "10.0.0.21"),
		"db-2":  watch("db-2", "db", "10.0.0.22"),
	}
	if _, err := c.SetSecret(ctx, &hivev1.SetSecretRequest{Name: "db-password", Value: []byte("pw")}); err != nil {
		t.Fatal(err)
	}
	p, err := c.Push(ctx, &hivev1.PushRequest{Site: s, SourceName: "site.yaml", Source: data})
	if err != nil {
		t.Fatal(err)
	}
	if p.GetSha256() != site.Hash(s) || strings.Join(p.GetNodes(), ",") != "db-1,db-2,web-1" {
		t.Fatalf("push = %v", p)
	}
	states := map[string]*hivev1.NodeState{}
	for name, w := range ws {
		for states[name].GetGeneration() != 1 {
			m, err := w.Recv()
			if err != nil {
				t.Fatal(err)
			}
			states[name] = m.GetState()
		}
	}
	res := func(node, key string) *hivev1.Resource {
		for _, r := range states[node].GetResources() {
			if r.GetKey() == key {
				return r
			}
		}
		t.Fatalf("%s has no %s; has %d resources", node, key, len(states[node].GetResources()))
		return nil
	}
	// DRBD between the two db nodes, node ids by name.
	peers := res("db-2", "drbd:pgdata").GetDrbd().GetPeers()
	if len(peers) != 2 || peers[0].GetName() != "db-1" || peers[0].GetAddress() != "10.0.0.21" || peers[1].GetNodeId() != 1 {
		t.Fatalf("drbd peers = %v", peers)
	}
	// Firewall: postgres from the web tier, drbd from storage peers.
	var pg, drbd []string
	for _, r := range res("db-1", "firewall:filter").GetFirewall().GetRules() {
		switch r.GetComment() {
		case "postgres from the web tier":
			pg = r.GetSources()
		case "drbd replication":
			drbd = r.GetSources()
		}
	}
	if strings.Join(pg, ",") != "10.0.0.10" || strings.Join(drbd, ",") != "10.0.0.21,10.0.0.22" {
		t.Fatalf("db-1 firewall sources: postgres %v, drbd %v", pg, drbd)
	}
	// Swarm: web-1 is the only manager and initialises; db nodes join as
	// workers with the token web-1 will publish.
	if sw := res("web-1", "swarm:node").GetSwarm(); !sw.GetInitializer() {
		t.Fatalf("web-1 swarm = %v", sw)
	}
	sw := res("db-1", "swarm:node").GetSwarm()
	if sw.GetInitializer() || sw.GetJoinTokenSecret() != "web-1/swarm-worker-token" || strings.Join(sw.GetManagerAddrs(), ",") != "10.0.0.10:2377" {
		t.Fatalf("db-1 swarm = %v", sw)
	}
	// Secrets: the db password reaches db nodes only.
	if string(states["db-1"].GetSecrets()["db-password"]) != "pw" || len(states["web-1"].GetSecrets()) != 0 {
		t.Fatalf("secrets: db-1 %v web-1 %v", states["db-1"].GetSecrets(), states["web-1"].GetSecrets())
	}
	// db.env templates .Peers.db: the db role's peers are in the facts.
	if pl := states["db-1"].GetFacts().GetPeers()["db"]; len(pl.GetPeers()) != 2 {
		t.Fatalf("db-1 facts.peers = %v", states["db-1"].GetFacts().GetPeers())
	}
	// web-1 publishes the swarm token in a report: db nodes receive it.
	if _, err := c.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
		Node: "web-1", Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: 1,
		PublishedSecrets: map[string][]byte{"swarm-worker-token": []byte("SWMTKN-w"), "swarm-manager-token": []byte("SWMTKN-m")},
	}}); err != nil {
		t.Fatal(err)
	}
	for string(states["db-2"].GetSecrets()["web-1/swarm-worker-token"]) != "SWMTKN-w" {
		m, err := ws["db-2"].Recv()
		if err != nil {
			t.Fatal(err)
		}
		states["db-2"] = m.GetState()
	}
	ls, err := c.ListSecrets(ctx, &hivev1.ListSecretsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	published := 0
	for _, s := range ls.GetSecrets() {
		if s.GetPublished() {
			published++
		}
	}
	if published != 2 || len(ls.GetMissing()) != 0 {
		t.Fatalf("secrets = %v", ls)
	}
}
