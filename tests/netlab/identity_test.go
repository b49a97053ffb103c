package netlabtests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/internal/netlab"
)

// rpcAs makes one RPC from host h to coordinator co as node, presenting the
// certificate of certName, and returns the helper's one-line answer.
func (c *cluster) rpcAs(h *netlab.Host, co *node, rpc, node, certName string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := h.Command(ctx, os.Args[0])
	cmd.Env = append(os.Environ(),
		"NETLAB_HELPER=call",
		"GORACE=atexit_sleep_ms=0", // under -race: no 1s sleep at exit
		"NETLAB_CALL="+rpc,
		"NETLAB_NODE="+node,
		"NETLAB_ADDR="+co.host.Addr+":"+grpcPort,
		"NETLAB_CA="+filepath.Join(c.pki, "ca.pem"),
		"NETLAB_CERT="+filepath.Join(c.pki, certName+".pem"),
		"NETLAB_KEY="+filepath.Join(c.pki, certName+"-key.pem"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("helper %s as %s with %s's certificate: %v\n%s", rpc, node, certName, err, out)
	}
	return strings.TrimSpace(string(out))
}

// An agent holding the certificate of node a1 can watch as a1 but can
// neither watch nor report as another node; a real hive-agent started as
// "a2" with a1's certificate never gets a state and never reports, while a
// legitimate agent started at the same moment converges.
func TestAgentCannotImpersonate(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 1})
	co, a1 := c.coords[0], c.agents[0]
	g1 := c.push(siteFiles("1", 1), true)
	c.waitConverged(g1, 30*time.Second, a1)

	rogue := c.lab.AddHost("rogue")
	got := c.rpcAs(rogue, co, "watch", "a1", "a1")
	if !strings.HasPrefix(got, "OK") {
		t.Fatalf("watch as a1 with a1's certificate (control): %s", got)
	}
	t.Logf("watch as a1 with a1's certificate: %s", got)
	for _, rpc := range []string{"watch", "report"} {
		got := c.rpcAs(rogue, co, rpc, "a2", "a1")
		t.Logf("%s as a2 with a1's certificate: %s", rpc, got)
		if !strings.HasPrefix(got, "ERR PermissionDenied") {
			t.Errorf("%s as a2 with a1's certificate: got %q, want PermissionDenied", rpc, got)
		}
	}

	// The same through real agents: "a2" with a1's certificate next to a
	// legitimate "a3", both joining now.
	a2 := &node{name: "a2", host: rogue, labels: []string{"tier=web"},
		data: filepath.Join(c.dir, "a2", "data"), root: filepath.Join(c.dir, "a2", "root")}
	if err := os.MkdirAll(a2.root, 0o755); err != nil {
		t.Fatal(err)
	}
	a2.proc = rogue.Start("hive-agent", c.agentArgs(a2, "a1", co)...)
	a3 := c.addAgent("a3", []string{"tier=web"}, co)
	c.waitConverged(g1, 30*time.Second, a3)
	time.Sleep(3 * time.Second) // a2 had the same chance, and then some

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.node("a2"); n != nil && (n.AppliedGeneration != 0 || n.Phase == "converged") {
		t.Errorf("impostor a2 reported: %s", dump(n))
	}
	if got := a2.readFile(filePath(0)); got != "" {
		t.Errorf("impostor a2 received a state: wrote %q", got)
	}
	if l := a2.proc.Log(); !strings.Contains(l, "PermissionDenied") && !strings.Contains(l, "permission denied") {
		t.Logf("impostor's log does not say permission denied:\n%s", l)
	}
	if n := s.node("a1"); n == nil || n.AppliedGeneration != g1 || n.Phase != "converged" {
		t.Errorf("a1's status disturbed by the impostor: %s", dump(n))
	}
}
