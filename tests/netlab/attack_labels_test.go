package netlabtests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// trustSite: tier=web gets /srv/netlab/web; tier=db gets the db role, whose
// file carries the db-password secret.
const trustSite = `site: trust
secrets: [db-password]
selectors:
  - match: {tier: web}
    roles: [web]
  - match: {tier: db}
    roles: [db]
roles:
  web:
    files:
      - path: /srv/netlab/web
        content: "web\n"
  db:
    files:
      - path: /srv/netlab/db.conf
        template: true
        mode: "0600"
        content: |
          password={{ secret "db-password" }}
`

// TestAttackLabelsAddressesTokens runs the attacks of issue 11 (findings
// 2, 5, 6) against the real binaries. Each refusal below was an
// acceptance before: the watch's labels chose the roles (a web node
// reporting tier=db received db-password), any address string was stored
// and spread through .Peers and from_roles, tokens minted any name for
// up to 136 years, and an unknown token was signed for and proposed to
// raft, without limit.
func TestAttackLabelsAddressesTokens(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 1, signer: true})
	co := c.coords[0]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	rogue := c.lab.AddHost("rogue")

	// --- Tokens, before any agent runs (the raft index is then still). ---
	index := c.raftIndexSettled(ctx)
	got := c.trustCall(rogue, co, "certreq", map[string]string{"NETLAB_TOKEN": strings.Repeat("ab", 24), "NETLAB_NODE": "x"})
	t.Logf("an unknown token: %s", got)
	if !strings.HasPrefix(got, "ERR NotFound") {
		t.Errorf("unknown token: %s, want ERR NotFound", got)
	}
	if after := c.raftIndexSettled(ctx); after != index {
		t.Errorf("an unknown token moved the raft index %d -> %d", index, after)
	}
	got = c.trustCall(rogue, co, "certreq", map[string]string{"NETLAB_TOKEN": "guess", "NETLAB_NODE": "x", "NETLAB_COUNT": "40"})
	t.Logf("a burst of 40 guesses: %s", got)
	if !strings.Contains(got, "ResourceExhausted=") {
		t.Errorf("a burst of 40 guesses was not rate limited: %s", got)
	}
	if after := c.raftIndexSettled(ctx); after != index {
		t.Errorf("guessed tokens moved the raft index %d -> %d", index, after)
	}
	time.Sleep(3 * time.Second) // the rogue's bucket refills

	if out, err := c.ctl(ctx, "tls", "token", "create"); err == nil || !strings.Contains(both(out, err), "--node NAME or --node-pattern") {
		t.Errorf("a token bound to no name: %v\n%s", err, out)
	}
	got = c.trustCall(c.admin, co, "token", map[string]string{"NETLAB_NODE": "x", "NETLAB_TTL": strconv.Itoa(136 * 365 * 24 * 3600)})
	t.Logf("a 136-year token through the API: %s", got)
	if !strings.HasPrefix(got, "ERR InvalidArgument") || !strings.Contains(got, "cap of 604800") {
		t.Errorf("136-year ttl: %s", got)
	}
	if out, err := c.ctl(ctx, "tls", "token", "create", "--node", "c1"); err == nil || !strings.Contains(both(out, err), "coordinator") {
		t.Errorf("a token for the coordinator's name: %v\n%s", err, out)
	}
	tokX := c.token(ctx, "--node", "x", "--label", "tier=web")
	if out, err := c.redeem(ctx, rogue, co, tokX, "y"); err == nil || !strings.Contains(out, `for node "x", not "y"`) {
		t.Errorf("x's token minting y: %v\n%s", err, out)
	}
	if out, err := c.redeem(ctx, rogue, co, tokX, "x"); err != nil {
		t.Fatalf("x's token for x: %v\n%s", err, out)
	}

	// --- Agents. a1 is a web node (its certificate says tier=web). ---
	if out, err := c.ctlIn(ctx, "db-s3cret\n", "secret", "set", "db-password"); err != nil {
		t.Fatalf("secret set: %v\n%s", err, out)
	}
	a1 := c.addAgent("a1", []string{"tier=web"}, co)
	gen := c.push(trustSite, false)
	c.waitConverged(gen, 60*time.Second, a1)

	// Finding 2: a1's own certificate, reporting tier=db about itself —
	// once through the API, once as a real hive-agent (a2: certificate
	// tier=web, --label tier=db).
	got = c.trustCall(a1.host, co, "watch", map[string]string{"NETLAB_NODE": "a1", "NETLAB_CERT_NAME": "a1",
		"NETLAB_LABELS": `{"tier":"db"}`, "NETLAB_ADDRESSES": `["` + a1.host.Addr + `"]`})
	t.Logf("a1 watching with labels {tier: db}: %s", got)
	if got != "OK roles=web secrets=" {
		t.Errorf("a1 watching with tier=db: %s, want the web role and no secret", got)
	}
	a2 := c.addAgentLying("a2", "tier=web", "tier=db", co)
	c.waitConverged(gen, 60*time.Second, a2)
	if got := a2.readFile("/srv/netlab/db.conf"); got != "" {
		t.Errorf("a2 (certificate tier=web, --label tier=db) received db.conf: %q", got)
	}
	if got := a2.readFile("/srv/netlab/web"); got != "web\n" {
		t.Errorf("a2 did not get its web role: %q", got)
	}
	out, err := c.ctl(ctx, "node", "show", "a2")
	t.Logf("hivectl node show a2:\n%s", out)
	if err != nil || !strings.Contains(string(out), "tier=web (certificate)") || !strings.Contains(string(out), "reported:") || !strings.Contains(string(out), "tier=db") {
		t.Errorf("node show a2: %v\n%s", err, out)
	}

	// Addresses: a CIDR, a newline, another host's address.
	for _, a := range []struct{ addrs, want string }{
		{`["0.0.0.0/0"]`, "ERR InvalidArgument"},
		{`["` + a1.host.Addr + `\n      - 0.0.0.0/0"]`, "ERR InvalidArgument"},
		{`["0.0.0.0"]`, "ERR InvalidArgument"},
		{`["` + rogue.Addr + `"]`, "ERR PermissionDenied"},
	} {
		got := c.trustCall(a1.host, co, "watch", map[string]string{"NETLAB_NODE": "a1", "NETLAB_CERT_NAME": "a1", "NETLAB_ADDRESSES": a.addrs})
		t.Logf("a1 claiming addresses %s: %s", a.addrs, got)
		if !strings.HasPrefix(got, a.want) || !strings.Contains(got, "addresses[0]") {
			t.Errorf("addresses %s: %s, want %s naming addresses[0]", a.addrs, got, a.want)
		}
	}
	out, err = c.ctl(ctx, "node", "show", "a1", "-o", "json")
	var shown struct {
		Addresses []string `json:"addresses"`
	}
	if err != nil || json.Unmarshal(out, &shown) != nil || !slices.Equal(shown.Addresses, []string{a1.host.Addr}) {
		t.Errorf("a1's stored addresses after the refused claims: %v\n%s", err, out)
	}

	// Tokens against registered names: no --replace, no certificate.
	if out, err := c.ctl(ctx, "tls", "token", "create", "--node", "a1"); err == nil || !strings.Contains(both(out, err), "--replace") {
		t.Errorf("a token for registered a1 without --replace: %v\n%s", err, out)
	}
	tokPat := c.token(ctx, "--node-pattern", "a*")
	if out, err := c.redeem(ctx, rogue, co, tokPat, "a1"); err == nil || !strings.Contains(out, "--replace") {
		t.Errorf("a pattern token minting registered a1: %v\n%s", err, out)
	}

	// An operator label changes a1's roles: it gets db (and the secret).
	if out, err := c.ctl(ctx, "node", "label", "a1", "tier=db"); err != nil || !strings.Contains(string(out), "tier=db (operator)") {
		t.Fatalf("node label a1 tier=db: %v\n%s", err, out)
	}
	if !poll(60*time.Second, func() bool { return strings.HasPrefix(a1.readFile("/srv/netlab/db.conf"), "password=db-s3cret") }) {
		t.Fatalf("a1 did not get the db role after hivectl node label:\n%s", a1.proc.Log())
	}
	if out, err := c.ctl(ctx, "node", "label", "a1", "tier-"); err != nil || !strings.Contains(string(out), "tier=web (certificate)") {
		t.Fatalf("node label a1 tier-: %v\n%s", err, out)
	}
}

// both is a command's output followed by its error (which carries stderr).
func both(out []byte, err error) string {
	if err != nil {
		return string(out) + err.Error()
	}
	return string(out)
}

// raftIndexSettled returns the raft index status answers with once it
// stayed the same for a second.
func (c *cluster) raftIndexSettled(ctx context.Context) uint64 {
	c.t.Helper()
	read := func() uint64 {
		out, err := c.ctl(ctx, "status", "-o", "json")
		if err != nil {
			c.t.Fatalf("status: %v\n%s", err, out)
		}
		var s struct {
			RaftIndex uint64 `json:"raft_index"`
		}
		if err := json.Unmarshal(out, &s); err != nil {
			c.t.Fatalf("status: %v\n%s", err, out)
		}
		return s.RaftIndex
	}
	last := read()
	for range 20 {
		time.Sleep(time.Second)
		if i := read(); i == last {
			return i
		} else {
			last = i
		}
	}
	c.t.Fatalf("raft index still moving: %d", last)
	return 0
}

// ctlIn is ctl with stdin.
func (c *cluster) ctlIn(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	argv := append([]string{c.bin["hivectl"]}, args...)
	argv = append(argv, "--addr", c.coords[0].host.Addr+":"+grpcPort,
		"--ca", filepath.Join(c.pki, "ca.pem"),
		"--cert", filepath.Join(c.pki, "admin.pem"),
		"--key", filepath.Join(c.pki, "admin-key.pem"))
	cmd := c.admin.Command(ctx, argv...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// token creates a bootstrap token with `hivectl tls token create ARGS`.
func (c *cluster) token(ctx context.Context, args ...string) string {
	c.t.Helper()
	out, err := c.ctl(ctx, append([]string{"tls", "token", "create", "-o", "json"}, args...)...)
	var tok struct {
		Token string `json:"token"`
	}
	if err != nil || json.Unmarshal(out, &tok) != nil || tok.Token == "" {
		c.t.Fatalf("token create %v: %v\n%s", args, err, out)
	}
	return tok.Token
}

// redeem runs `hivectl tls cert request` on host h with only the CA.
func (c *cluster) redeem(ctx context.Context, h *netlab.Host, co *node, token, name string) (string, error) {
	out, err := h.Run(ctx, c.bin["hivectl"], "--addr", co.host.Addr+":"+grpcPort, "--ca", filepath.Join(c.pki, "ca.pem"),
		"tls", "cert", "request", "--token", token, "--node", name, "--dir", c.t.TempDir())
	if err != nil {
		return string(out) + err.Error(), err
	}
	return string(out), nil
}

// addAgentLying starts an agent whose certificate binds certLabel while it
// reports reported about itself.
func (c *cluster) addAgentLying(name, certLabel, reported string, via *node) *node {
	c.t.Helper()
	n := &node{name: name, host: c.lab.AddHost(name), labels: []string{reported},
		data: filepath.Join(c.dir, name, "data"), root: filepath.Join(c.dir, name, "root")}
	if err := os.MkdirAll(n.root, 0o755); err != nil {
		c.t.Fatal(err)
	}
	c.tls("cert", "create", "--agent", name, "--label", certLabel)
	n.proc = n.host.Start("hive-agent", c.agentArgs(n, name, via)...)
	c.agents = append(c.agents, n)
	return n
}

// trustCall runs the helper (NETLAB_HELPER=trust) on host h against co.
func (c *cluster) trustCall(h *netlab.Host, co *node, call string, env map[string]string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.Command(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), "NETLAB_HELPER=trust", "GORACE=atexit_sleep_ms=0",
		"NETLAB_CALL="+call, "NETLAB_ADDR="+co.host.Addr+":"+grpcPort, "NETLAB_CA="+filepath.Join(c.pki, "ca.pem"))
	certName := env["NETLAB_CERT_NAME"]
	if call == "token" {
		certName = "admin"
	}
	if certName != "" {
		cmd.Env = append(cmd.Env, "NETLAB_CERT="+filepath.Join(c.pki, certName+".pem"), "NETLAB_KEY="+filepath.Join(c.pki, certName+"-key.pem"))
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		c.t.Fatalf("helper %s: %v\n%s", call, err, out)
	}
	return strings.TrimSpace(string(out))
}

// trustCall is the helper process: NETLAB_CALL=watch (as NETLAB_NODE with
// NETLAB_LABELS and NETLAB_ADDRESSES, JSON), certreq (NETLAB_COUNT
// RequestCertificate calls without a client certificate, with
// NETLAB_TOKEN) or token (CreateBootstrapToken for NETLAB_NODE with
// NETLAB_TTL seconds). It prints "OK ...", "ERR <code>: message" or, for
// several calls, the count of each code.
func trustCall() int {
	env := os.Getenv
	ca, err := os.ReadFile(env("NETLAB_CA"))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if env("NETLAB_CERT") != "" {
		cert, err := tls.LoadX509KeyPair(env("NETLAB_CERT"), env("NETLAB_KEY"))
		if err != nil {
			fmt.Println("SETUP", err)
			return 2
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	conn, err := grpc.NewClient(env("NETLAB_ADDR"), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		fmt.Println("SETUP", err)
		return 2
	}
	defer conn.Close()
	client := hivev1.NewCoordinatorServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	fail := func(err error) int {
		fmt.Printf("ERR %s: %s\n", status.Code(err), status.Convert(err).Message())
		return 0
	}
	switch env("NETLAB_CALL") {
	case "watch":
		req := &hivev1.WatchNodeStateRequest{Node: env("NETLAB_NODE")}
		if v := env("NETLAB_LABELS"); v != "" {
			_ = json.Unmarshal([]byte(v), &req.Labels)
		}
		if v := env("NETLAB_ADDRESSES"); v != "" {
			_ = json.Unmarshal([]byte(v), &req.Addresses)
		}
		stream, err := client.WatchNodeState(ctx, req)
		if err != nil {
			return fail(err)
		}
		msg, err := stream.Recv()
		if err != nil {
			return fail(err)
		}
		var secrets []string
		for k := range msg.GetState().GetSecrets() {
			secrets = append(secrets, k)
		}
		sort.Strings(secrets)
		fmt.Printf("OK roles=%s secrets=%s\n", strings.Join(msg.GetState().GetFacts().GetRoles(), ","), strings.Join(secrets, ","))
	case "certreq":
		csr, _, err := pki.CreateAgentCSR(env("NETLAB_NODE"))
		if err != nil {
			fmt.Println("SETUP", err)
			return 2
		}
		n, _ := strconv.Atoi(env("NETLAB_COUNT"))
		if n <= 1 {
			if _, err := client.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: env("NETLAB_TOKEN"), Node: env("NETLAB_NODE"), Csr: csr}); err != nil {
				return fail(err)
			}
			fmt.Println("OK")
			return 0
		}
		codes := map[string]int{}
		for range n {
			_, err := client.RequestCertificate(ctx, &hivev1.RequestCertificateRequest{Token: env("NETLAB_TOKEN"), Node: env("NETLAB_NODE"), Csr: csr})
			codes[status.Code(err).String()]++
		}
		var parts []string
		for k, v := range codes {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(parts)
		fmt.Println("codes " + strings.Join(parts, " "))
	case "token":
		ttl, _ := strconv.Atoi(env("NETLAB_TTL"))
		resp, err := client.CreateBootstrapToken(ctx, &hivev1.CreateBootstrapTokenRequest{Node: env("NETLAB_NODE"), TtlSeconds: uint32(ttl)})
		if err != nil {
			return fail(err)
		}
		fmt.Println("OK expires", resp.GetExpires().AsTime())
	default:
		fmt.Println("SETUP unknown NETLAB_CALL")
		return 2
	}
	return 0
}
