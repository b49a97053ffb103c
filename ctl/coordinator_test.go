package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// These tests run hivectl against the real hive-coordinator binary, built
// from this tree once per test run, started as a process on loopback.

var (
	coordBinOnce sync.Once
	coordBin     string
	coordBinErr  error
	coordBinDir  string
)

// buildCoordinator builds cmd/hive-coordinator once.
func buildCoordinator(t *testing.T) string {
	t.Helper()
	goTool := testenv.RequireTool(t, "go")
	coordBinOnce.Do(func() {
		coordBinDir, coordBinErr = os.MkdirTemp("", "hivectl-test-bin-")
		if coordBinErr != nil {
			return
		}
		coordBin = filepath.Join(coordBinDir, "hive-coordinator")
		cmd := exec.Command(goTool, "build", "-o", coordBin, "github.com/hivefleet/hive/cmd/hive-coordinator")
		out, err := cmd.CombinedOutput()
		if err != nil {
			coordBinErr = err
			t.Logf("go build: %s", out)
		}
	})
	if coordBinErr != nil {
		t.Fatalf("build hive-coordinator: %v", coordBinErr)
	}
	return coordBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if coordBinDir != "" {
		os.RemoveAll(coordBinDir)
	}
	os.Exit(code)
}

var readyRE = regexp.MustCompile(`msg="coordinator ready" grpc=(\S+)`)

// startCoordinator runs hive-coordinator with args plus loopback listen
// addresses on port 0 and returns its gRPC address once it logs ready.
func startCoordinator(t *testing.T, args ...string) string {
	t.Helper()
	bin := buildCoordinator(t)
	ctx, cancel := context.WithCancel(context.Background())
	args = append(args, "--grpc-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
		"--gossip-addr", "127.0.0.1:0", "--http-addr", "", "--data-dir", t.TempDir())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		logMu sync.Mutex
		log   strings.Builder
	)
	addrc := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			log.WriteString(line + "\n")
			logMu.Unlock()
			if m := readyRE.FindStringSubmatch(line); m != nil && !sent {
				addrc <- m[1]
				sent = true
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			logMu.Lock()
			t.Logf("hive-coordinator log:\n%s", log.String())
			logMu.Unlock()
		}
	})
	select {
	case addr := <-addrc:
		return addr
	case <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("hive-coordinator exited before it was ready:\n%s", log.String())
	case <-time.After(30 * time.Second):
		t.Fatal("hive-coordinator did not log ready within 30s")
	}
	return ""
}

func TestRealCoordinatorDev(t *testing.T) {
	clearEnv(t)
	addr := startCoordinator(t, "--dev", "--name", "c1")
	conn := []string{"--dev", "--addr", "127.0.0.1:1," + addr} // first address dead
	file := siteFile(t)

	r := run(t, "", append([]string{"push", file, "-m", "first", "-o", "json"}, conn...)...)
	var pr map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pr) != nil || pr["generation"].(float64) != 1 || len(pr["sha256"].(string)) != 64 {
		t.Fatalf("push: %+v", r)
	}
	if r := run(t, "", append([]string{"push", file}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "unchanged: generation 1") {
		t.Fatalf("unchanged push: %+v", r)
	}
	// A second version of the file, then a push based on the first.
	changed := filepath.Join(t.TempDir(), "site.yaml")
	data := strings.Replace(string(mustRead(t, file)), "      - chrony\n", "      - chrony\n      - htop\n", 1)
	if err := os.WriteFile(changed, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := run(t, "", append([]string{"push", changed, "-m", "htop"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "generation 2") {
		t.Fatalf("push 2: %+v", r)
	}
	r = run(t, "", append([]string{"push", file, "--base", "1"}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "generation 2 is current, your change is based on 1: pull and retry, or --force") {
		t.Fatalf("stale push: %+v", r)
	}
	r = run(t, "", append([]string{"diff", "1", "2", "-o", "json"}, conn...)...)
	var d diffJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &d) != nil {
		t.Fatalf("diff: %+v", r)
	}
	found := false
	for _, c := range d.Changes {
		if c.Key == "package:htop" && c.Kind == "added" {
			found = true
		}
	}
	if !found {
		t.Errorf("diff 1 2 lacks the added package:htop: %+v", d.Changes)
	}
	if r := run(t, "", append([]string{"rollback", "1", "-m", "back"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "generation 3 carries the content of generation 1") {
		t.Fatalf("rollback: %+v", r)
	}
	r = run(t, "", append([]string{"history", "-o", "json"}, conn...)...)
	var h historyJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &h) != nil || h.Current != 3 || len(h.Generations) != 3 ||
		h.Generations[0].RollbackOf != 1 || h.Generations[0].SHA256 != h.Generations[2].SHA256 {
		t.Fatalf("history: %+v", r)
	}
	if r := run(t, "", append([]string{"pull", "2", "--no-header"}, conn...)...); r.code != 0 || r.stdout != data {
		t.Fatalf("pull 2 differs from the pushed file: %+v", r.code)
	}
	if r := run(t, "", append([]string{"rollback", "9"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "generation 9 does not exist") {
		t.Fatalf("rollback 9: %+v", r)
	}

	if r := run(t, "s3cret", append([]string{"secret", "set", "db-password"}, conn...)...); r.code != 0 {
		t.Fatalf("secret set: %+v", r)
	}
	r = run(t, "", append([]string{"secret", "list", "-o", "json"}, conn...)...)
	var sl secretsJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sl) != nil || len(sl.Secrets) != 1 || sl.Secrets[0].Name != "db-password" || strings.Contains(r.stdout, "s3cret") {
		t.Fatalf("secret list: %+v", r)
	}
	if r := run(t, "", append([]string{"secret", "delete", "db-password"}, conn...)...); r.code != 0 {
		t.Fatalf("secret delete: %+v", r)
	}

	r = run(t, "", append([]string{"status", "-o", "json"}, conn...)...)
	var st statusJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Generation != 3 || st.Server != "c1" {
		t.Fatalf("status: %+v", r)
	}
	r = run(t, "", append([]string{"members", "-o", "json"}, conn...)...)
	var ms []memberJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ms) != nil {
		t.Fatalf("members: %+v", r)
	}
	r = run(t, "", append([]string{"peers", "list", "-o", "json"}, conn...)...)
	var ps []peerJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ps) != nil || len(ps) != 1 || ps[0].ID != "c1" || !ps[0].Leader || !ps[0].Voter {
		t.Fatalf("peers list: %+v", r)
	}
	if r := run(t, "", append([]string{"peers", "remove", "c1"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "only voter") {
		t.Fatalf("peers remove c1: %+v", r)
	}
	leader := false
	for _, m := range ms {
		if m.Name == "c1" && m.Kind == "coordinator" && m.Raft == "leader" {
			leader = true
		}
	}
	if !leader {
		t.Errorf("members lacks c1 as raft leader: %s", r.stdout)
	}
}

// startTLSCoordinator makes a PKI in a temporary directory (CA,
// coordinator c1, admin alice, agent web-1, the gossip key, then the extra
// hivectl commands given), starts a real coordinator c1 that signs with
// the CA key, and points hivectl's environment at it and the CA. It
// returns the path of a file of the PKI directory.
func startTLSCoordinator(t *testing.T, extra ...[]string) func(file string) string {
	t.Helper()
	clearEnv(t)
	dir := t.TempDir()
	for _, args := range append([][]string{
		{"tls", "ca", "create"},
		{"tls", "cert", "create", "--coordinator", "c1"},
		{"tls", "cert", "create", "--admin", "alice"},
		{"tls", "cert", "create", "--agent", "web-1"},
		{"tls", "gossip-key", "create"},
	}, extra...) {
		if r := run(t, "", append(args, "--dir", dir)...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	p := func(f string) string { return filepath.Join(dir, f) }
	addr := startCoordinator(t, "--name", "c1", "--bootstrap-expect", "1",
		"--tls-ca", p("ca.pem"), "--tls-cert", p("c1.pem"), "--tls-key", p("c1-key.pem"), "--tls-ca-key", p("ca-key.pem"),
		"--gossip-key-file", p("gossip.key"))
	t.Setenv(envAddr, addr)
	t.Setenv(envCACert, p("ca.pem"))
	return p
}

func TestRealCoordinatorTLS(t *testing.T) {
	p := startTLSCoordinator(t)
	file := siteFile(t)

	admin := []string{"--cert", p("alice.pem"), "--key", p("alice-key.pem")}
	if r := run(t, "", append([]string{"push", file, "-m", "over tls"}, admin...)...); r.code != 0 || !strings.Contains(r.stdout, "generation 1") {
		t.Fatalf("admin push: %+v", r)
	}
	r := run(t, "", append([]string{"history", "-o", "json"}, admin...)...)
	var h historyJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &h) != nil || len(h.Generations) != 1 || !strings.Contains(h.Generations[0].Author, "alice") {
		t.Fatalf("history author: %+v", r)
	}

	agent := []string{"--cert", p("web-1.pem"), "--key", p("web-1-key.pem")}
	r = run(t, "x", append([]string{"secret", "set", "db-password"}, agent...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("agent secret set: %+v", r)
	}
	if r := run(t, "", "status"); r.code != 1 || !strings.Contains(r.stderr, "not authenticated") {
		t.Fatalf("no client certificate: %+v", r)
	}
	if r := run(t, "", "status", "--dev"); r.code != 1 || !strings.Contains(r.stderr, "may expect TLS") {
		t.Fatalf("plaintext to TLS: %+v", r)
	}

	// Bootstrap: an admin makes a token, the node redeems it with only the
	// CA certificate, and the new certificate authenticates as agent:web-9.
	if r := run(t, "", append([]string{"tls", "token", "create"}, admin...)...); r.code != 1 || !strings.Contains(r.stderr, "--node NAME or --node-pattern") {
		t.Fatalf("token without a node: %+v", r)
	}
	r = run(t, "", append([]string{"tls", "token", "create", "--node", "web-9", "--label", "tier=web", "-o", "json"}, admin...)...)
	var tok struct {
		Token string `json:"token"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil || tok.Token == "" {
		t.Fatalf("token create: %+v", r)
	}
	nodeDir := t.TempDir()
	if r := run(t, "", "tls", "cert", "request", "--token", tok.Token, "--node", "web-9", "--dir", nodeDir); r.code != 0 {
		t.Fatalf("cert request: %+v", r)
	}
	if r := run(t, "", "tls", "cert", "show", filepath.Join(nodeDir, "web-9.pem")); r.code != 0 || !strings.Contains(r.stdout, "tier=web (trusted)") {
		t.Fatalf("bootstrapped certificate labels: %+v", r)
	}
	if r := run(t, "", append([]string{"node", "label", "web-9", "tier=db"}, admin...)...); r.code != 1 || !strings.Contains(r.stderr, "not registered") {
		t.Fatalf("label an unregistered node: %+v", r)
	}
	r = run(t, "", "status", "--cert", filepath.Join(nodeDir, "web-9.pem"), "--key", filepath.Join(nodeDir, "web-9-key.pem"))
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "agent:web-9") {
		t.Fatalf("bootstrapped certificate: %+v", r)
	}
	if r := run(t, "", "tls", "cert", "request", "--token", tok.Token, "--node", "web-9", "--dir", t.TempDir()); r.code != 1 {
		t.Fatalf("token redeemed twice: %+v", r)
	}
}

// simulatedAgent watches its state on a real coordinator and reports each
// generation it receives as applying, then converged — or failed when the
// generation's number is in failOn. It stands in for hive-agent so that push
// --wait is tested against the coordinator's real status semantics.
func simulatedAgent(t *testing.T, addr, node string, labels map[string]string, failOn map[uint64]bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := conn.WatchNodeState(ctx, &hivev1.WatchNodeStateRequest{Node: node, Labels: labels, AgentVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		var seq uint64
		report := func(st *hivev1.NodeState, phase hivev1.Phase, results []*hivev1.ResourceResult) {
			seq++
			_, err := conn.Report(ctx, &hivev1.ReportRequest{Report: &hivev1.Report{
				Node: node, Generation: st.GetGeneration(), StateHash: st.GetHash(), Phase: phase, Seq: seq,
				Results: results, Started: timestamppb.Now(), Finished: timestamppb.Now(), Trigger: "state",
			}})
			if err != nil && ctx.Err() == nil {
				t.Errorf("report: %v", err)
			}
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			st := resp.GetState()
			report(st, hivev1.Phase_PHASE_APPLYING, nil)
			time.Sleep(200 * time.Millisecond)
			var results []*hivev1.ResourceResult
			for _, r := range st.GetResources() {
				results = append(results, &hivev1.ResourceResult{Key: r.GetKey(), Outcome: hivev1.Outcome_OUTCOME_OK})
			}
			phase := hivev1.Phase_PHASE_CONVERGED
			if failOn[st.GetGeneration()] && len(results) > 0 {
				results[0].Outcome = hivev1.Outcome_OUTCOME_FAILED
				results[0].Message = "simulated failure"
				phase = hivev1.Phase_PHASE_FAILED
			}
			report(st, phase, results)
		}
	}()
}

func TestRealCoordinatorPushWait(t *testing.T) {
	clearEnv(t)
	addr := startCoordinator(t, "--dev", "--name", "c1")
	conn := []string{"--dev", "--addr", addr}
	file := siteFile(t)
	if r := run(t, "", append([]string{"push", file}, conn...)...); r.code != 0 {
		t.Fatalf("push 1: %+v", r)
	}
	simulatedAgent(t, addr, "web-1", map[string]string{"tier": "web"}, map[uint64]bool{3: true})
	simulatedAgent(t, addr, "db-1", map[string]string{"tier": "db"}, nil)
	// Wait until both registered (their watch streams are open).
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := run(t, "", append([]string{"status", "-o", "json"}, conn...)...)
		var st statusJSON
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && len(st.Nodes) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agents did not register")
		}
		time.Sleep(100 * time.Millisecond)
	}

	changed := filepath.Join(t.TempDir(), "site.yaml")
	data := strings.Replace(string(mustRead(t, file)), "      - chrony\n", "      - chrony\n      - htop\n", 1)
	if err := os.WriteFile(changed, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", append([]string{"push", changed, "--wait", "--timeout", "30s"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 2: 2/2 converged, 0 applying, 0 failed, 0 pending") {
		t.Fatalf("push --wait: %+v", r)
	}
	// Generation 3 (the first file again) fails on web-1: exit 1 with its
	// error; stdout stays JSON.
	r = run(t, "", append([]string{"push", file, "--wait", "--timeout", "30s", "-o", "json"}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "1 node(s) failed to converge on generation 3") ||
		!strings.Contains(r.stderr, "web-1: ") || !strings.Contains(r.stderr, "simulated failure") {
		t.Fatalf("push 3 --wait: %+v", r)
	}
	var pr pushResultJSON
	if err := json.Unmarshal([]byte(r.stdout), &pr); err != nil || pr.Generation != 3 {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	r = run(t, "", append([]string{"status", "web-1", "-o", "json"}, conn...)...)
	var st statusJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || len(st.Nodes) != 1 || len(st.Nodes[0].Results) == 0 {
		t.Fatalf("status web-1: %+v", r)
	}
}
