package ctl

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func TestTLSCommands(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	r := run(t, "", "tls", "ca", "create", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "ca.pem") {
		t.Fatalf("ca create: %+v", r)
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	r = run(t, "", "tls", "ca", "create", "--dir", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("second ca create not refused clearly: %+v", r)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(after) != string(caBefore) {
		t.Fatal("refused ca create changed ca.pem")
	}

	r = run(t, "", "tls", "cert", "create", "--coordinator", "c1", "--ip", "10.1.2.3", "--dns", "c1.example.net", "--dir", dir)
	if r.code != 0 {
		t.Fatalf("coordinator cert: %+v", r)
	}
	certs, err := pki.ParseCerts(mustRead(t, filepath.Join(dir, "c1.pem")))
	if err != nil {
		t.Fatal(err)
	}
	c := certs[0]
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if strings.Join(ips, ",") != "10.1.2.3,127.0.0.1,::1" || strings.Join(c.DNSNames, ",") != "c1.example.net,localhost" {
		t.Errorf("coordinator SANs: %v %v", ips, c.DNSNames)
	}
	if id, err := pki.IdentityFromCert(c); err != nil || id != (pki.Identity{Kind: pki.KindCoordinator, Name: "c1"}) {
		t.Errorf("identity %v %v", id, err)
	}
	for _, f := range []string{"ca-key.pem", "c1-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v", f, fi.Mode().Perm(), err)
		}
	}

	r = run(t, "", "tls", "cert", "show", filepath.Join(dir, "c1.pem"), filepath.Join(dir, "ca.pem"))
	if r.code != 0 || !strings.Contains(r.stdout, "coordinator:c1 (hive://coordinator/c1)") ||
		!strings.Contains(r.stdout, "10.1.2.3,127.0.0.1,::1,c1.example.net,localhost") ||
		!strings.Contains(r.stdout, "certificate authority (hive CA)") || !strings.Contains(r.stdout, "days left") {
		t.Fatalf("cert show: %+v", r)
	}
	if r := run(t, "", "tls", "cert", "show", filepath.Join(dir, "ca-key.pem")); r.code != 1 || !strings.Contains(r.stderr, "no PEM \"CERTIFICATE\" block") {
		t.Fatalf("cert show on a key: %+v", r)
	}

	for _, args := range [][]string{
		{"--agent", "web-1"},
		{"--admin", "alice"},
	} {
		if r := run(t, "", append([]string{"tls", "cert", "create", "--dir", dir}, args...)...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--agent", "web-1"}, "already exists"},
		{[]string{"--admin", "bob", "--ip", "10.0.0.1"}, "--ip to coordinator and agent ones"},
		{[]string{"--agent", "web-9", "--dns", "web-9.example"}, "--dns applies to coordinator certificates only"},
		{[]string{"--admin", "bob", "--label", "tier=web"}, "agent certificates only"},
		{[]string{"--agent", "web-9", "--label", "tier=a\nb"}, `\n`},
		{[]string{"--agent", "web-9", "--label", "tier"}, "key=value"},
		{[]string{"--agent", "a", "--admin", "b"}, "exactly one"},
		{[]string{}, "exactly one"},
		{[]string{"--admin", "../x"}, "invalid identity name"},
		{[]string{"--admin", "x", "--ca-dir", t.TempDir()}, "hivectl tls ca create"},
	}
	for _, b := range bad {
		r := run(t, "", append([]string{"tls", "cert", "create", "--dir", dir}, b.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, b.want) {
			t.Errorf("%v: want exit 1 with %q, got %+v", b.args, b.want, r)
		}
	}

	// The files work for real mutual TLS: a server with the coordinator
	// certificate, hivectl with the admin one (flags), then the agent one
	// (environment) which may read but not write.
	tc, err := pki.ServerTLSConfig(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "c1.pem"), filepath.Join(dir, "c1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.requireAdmin = true
	addr := serveFake(t, f, tc)
	tlsFlags := []string{"--addr", addr, "--ca", filepath.Join(dir, "ca.pem"),
		"--cert", filepath.Join(dir, "alice.pem"), "--key", filepath.Join(dir, "alice-key.pem")}
	r = run(t, "s3cret", append([]string{"secret", "set", "db-password"}, tlsFlags...)...)
	if r.code != 0 || strings.Contains(r.stdout, "s3cret") {
		t.Fatalf("secret set as admin: %+v", r)
	}

	t.Setenv(envAddr, "127.0.0.1:1,"+addr) // first address dead
	t.Setenv(envCACert, filepath.Join(dir, "ca.pem"))
	t.Setenv(envCert, filepath.Join(dir, "web-1.pem"))
	t.Setenv(envKey, filepath.Join(dir, "web-1-key.pem"))
	if r := run(t, "", "secret", "list"); r.code != 0 || !strings.Contains(r.stdout, "db-password") {
		t.Fatalf("secret list as agent via env: %+v", r)
	}
	r = run(t, "x", "secret", "set", "other")
	if r.code != 1 || !strings.Contains(r.stderr, "permission denied") || !strings.Contains(r.stderr, "need an admin certificate") {
		t.Fatalf("agent secret set: %+v", r)
	}
	if got := f.callers[len(f.callers)-1]; got != "agent:web-1" {
		t.Errorf("server saw caller %q", got)
	}
	// A CA that did not sign the server.
	other := t.TempDir()
	if r := run(t, "", "tls", "ca", "create", "--dir", other); r.code != 0 {
		t.Fatal(r)
	}
	r = run(t, "", "secret", "list", "--addr", addr, "--ca", filepath.Join(other, "ca.pem"))
	if r.code != 1 || !strings.Contains(r.stderr, "not signed by the CA") {
		t.Fatalf("wrong CA: %+v", r)
	}
	// Plaintext against the TLS server.
	r = run(t, "", "secret", "list", "--addr", addr, "--dev")
	if r.code != 1 || !strings.Contains(r.stderr, "no coordinator answered") {
		t.Fatalf("plaintext to TLS: %+v", r)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConnectionErrors(t *testing.T) {
	clearEnv(t)
	r := run(t, "", "status")
	if r.code != 1 || !strings.Contains(r.stderr, "no TLS files given") || !strings.Contains(r.stderr, "--dev") {
		t.Fatalf("no TLS files: %+v", r)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close()
	r = run(t, "", "status", "--dev", "--addr", dead)
	if r.code != 1 || !strings.Contains(r.stderr, "no coordinator answered: "+dead) || !strings.Contains(r.stderr, "refused") {
		t.Fatalf("dead address: %+v", r)
	}
	// A plaintext server and a TLS client.
	addr := serveFake(t, newFake(), nil)
	dir := t.TempDir()
	run(t, "", "tls", "ca", "create", "--dir", dir)
	r = run(t, "", "status", "--addr", addr, "--ca", filepath.Join(dir, "ca.pem"))
	if r.code != 1 || !strings.Contains(r.stderr, "speaks plaintext") {
		t.Fatalf("TLS to plaintext: %+v", r)
	}
	// HIVE_DEV from the environment.
	t.Setenv(envDev, "1")
	t.Setenv(envAddr, addr)
	if r := run(t, "", "status"); r.code != 0 {
		t.Fatalf("HIVE_DEV: %+v", r)
	}
	if r := run(t, "", "status", "-o", "yaml"); r.code != 1 || !strings.Contains(r.stderr, "want table or json") {
		t.Fatalf("bad -o: %+v", r)
	}
}

// seed gives f n generations.
func seed(f *fakeCoordinator, n int) {
	for i := 1; i <= n; i++ {
		src := []byte("site: gen" + string(rune('0'+i)) + "\n")
		f.generations = append(f.generations, &hivev1.Generation{
			Number: uint64(i), Parent: uint64(i - 1), Sha256: "sha-" + string(src), Message: "push " + string(rune('0'+i)),
			Source: src, SourceName: "site.yaml",
		})
	}
}

func TestHistoryDiffRollbackPull(t *testing.T) {
	clearEnv(t)
	f := newFake()
	seed(f, 3)
	addr := serveFake(t, f, nil)
	conn := []string{"--dev", "--addr", addr}

	r := run(t, "", append([]string{"history", "-o", "json"}, conn...)...)
	var h historyJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &h) != nil || h.Current != 3 || len(h.Generations) != 3 || h.Generations[0].Number != 3 {
		t.Fatalf("history json: %+v", r)
	}
	if r := run(t, "", append([]string{"history", "-n", "1"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "3*") || strings.Contains(r.stdout, "push 2") {
		t.Fatalf("history -n 1: %+v", r)
	}

	r = run(t, "", append([]string{"diff", "1"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "generation 1 → 3") || !strings.Contains(r.stdout, "+version: 1.27") {
		t.Fatalf("diff: %+v", r)
	}
	if r := run(t, "", append([]string{"diff", "x", "2"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "not a generation number") {
		t.Fatalf("diff bad arg: %+v", r)
	}

	r = run(t, "", append([]string{"rollback", "1", "-m", "back", "-o", "json"}, conn...)...)
	var pr pushResultJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pr) != nil || pr.Generation != 4 {
		t.Fatalf("rollback: %+v", r)
	}
	if g := f.generations[3]; g.GetRollbackOf() != 1 || g.GetMessage() != "back" || string(g.GetSource()) != "site: gen1\n" {
		t.Fatalf("rollback generation %v", g)
	}
	r = run(t, "", append([]string{"rollback", "1", "--base", "2"}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "generation 4 is current, your change is based on 2: pull and retry, or --force") {
		t.Fatalf("stale rollback: %+v", r)
	}
	if len(f.generations) != 4 {
		t.Fatal("stale rollback appended a generation")
	}
	if r := run(t, "", append([]string{"rollback", "9"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "generation 9 does not exist") {
		t.Fatalf("rollback to missing: %+v", r)
	}

	if r := run(t, "", append([]string{"pull"}, conn...)...); r.code != 0 || !strings.HasPrefix(r.stdout, "# hive-pull: generation=4 ") || !strings.HasSuffix(r.stdout, "\nsite: gen1\n") {
		t.Fatalf("pull current: %+v", r)
	}
	out := filepath.Join(t.TempDir(), "s.yaml")
	if r := run(t, "", append([]string{"pull", "2", "--no-header", "--out", out}, conn...)...); r.code != 0 || string(mustRead(t, out)) != "site: gen2\n" {
		t.Fatalf("pull 2: %+v", r)
	}
}

func TestSecretCommands(t *testing.T) {
	clearEnv(t)
	f := newFake()
	addr := serveFake(t, f, nil)
	conn := []string{"--dev", "--addr", addr}

	if r := run(t, "pw\n", append([]string{"secret", "set", "db"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "secret db set (3 bytes); 1 node(s) use it") {
		t.Fatalf("set from stdin: %+v", r)
	}
	if string(f.secrets["db"]) != "pw\n" {
		t.Fatalf("stored %q", f.secrets["db"])
	}
	file := filepath.Join(t.TempDir(), "v")
	if err := os.WriteFile(file, []byte{0, 1, 2, 255}, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, "ignored", append([]string{"secret", "set", "bin", "--file", file}, conn...)...); r.code != 0 {
		t.Fatalf("set from file: %+v", r)
	}
	if string(f.secrets["bin"]) != "\x00\x01\x02\xff" {
		t.Fatalf("stored %q", f.secrets["bin"])
	}
	if r := run(t, "", append([]string{"secret", "set", "empty"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "empty") {
		t.Fatalf("empty value: %+v", r)
	}
	big := strings.Repeat("x", maxSecretSize+1)
	if r := run(t, big, append([]string{"secret", "set", "big"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "more than") {
		t.Fatalf("big value: %+v", r.code)
	}
	if _, ok := f.secrets["big"]; ok {
		t.Fatal("oversized secret stored")
	}
	r := run(t, "", append([]string{"secret", "list", "-o", "json"}, conn...)...)
	var sl secretsJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sl) != nil || len(sl.Secrets) != 2 || len(sl.Missing) != 1 {
		t.Fatalf("list: %+v", r)
	}
	if strings.Contains(r.stdout, "pw") {
		t.Fatal("secret value printed")
	}
	if r := run(t, "", append([]string{"secret", "delete", "db"}, conn...)...); r.code != 0 {
		t.Fatalf("delete: %+v", r)
	}
	if r := run(t, "", append([]string{"secret", "delete", "db"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, `secret "db" does not exist`) {
		t.Fatalf("delete missing: %+v", r)
	}
}

func TestStatusAndMembersCommands(t *testing.T) {
	clearEnv(t)
	f := newFake()
	f.statuses = []*hivev1.GetStatusResponse{sampleStatus()}
	f.members = sampleMembers()
	addr := serveFake(t, f, nil)
	conn := []string{"--dev", "--addr", addr}

	r := run(t, "", append([]string{"status", "-o", "json"}, conn...)...)
	var raw map[string]any
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &raw) != nil {
		t.Fatalf("status json: %+v", r)
	}
	nodes := raw["nodes"].([]any)
	n0 := nodes[0].(map[string]any)
	for _, k := range []string{"name", "labels", "roles", "gossip", "applied_generation", "phase", "last_report", "resources", "errors"} {
		if _, ok := n0[k]; !ok {
			t.Errorf("status json node lacks %q", k)
		}
	}
	if raw["generation"].(float64) != 7 || n0["phase"] != "failed" {
		t.Errorf("status json: %v", raw)
	}
	r = run(t, "", append([]string{"status", "db-1"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "drbd:r0") || !strings.Contains(r.stdout, "node:") {
		t.Fatalf("status NODE: %+v", r)
	}
	if r := run(t, "", append([]string{"status", "nope"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, `no node named "nope"`) {
		t.Fatalf("status unknown node: %+v", r)
	}
	r = run(t, "", append([]string{"members", "-o", "json"}, conn...)...)
	var ms []memberJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ms) != nil || len(ms) != 4 || ms[0].Raft != "leader" || ms[3].Raft != "" {
		t.Fatalf("members json: %+v", r)
	}
	if r := run(t, "", append([]string{"members"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "follower") {
		t.Fatalf("members: %+v", r)
	}
}

// TestGossipKeyCreate: tls gossip-key create writes gossip.key (mode 0600)
// that gossip.ParseKey accepts, refuses to replace it without --force and
// leaves it untouched then, and replaces it with --force.
func TestGossipKeyCreate(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "new", "etc-hive")
	r := run(t, "", "tls", "gossip-key", "create", "--dir", dir)
	path := filepath.Join(dir, "gossip.key")
	if r.code != 0 || !strings.Contains(r.stdout, path) || !strings.Contains(r.stdout, "--gossip-key-file") {
		t.Fatalf("create: %+v", r)
	}
	first := mustRead(t, path)
	k, err := gossip.ParseKey(first)
	if err != nil || len(k) != 32 {
		t.Fatalf("ParseKey(%q) = %d bytes, %v", first, len(k), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("gossip.key mode: %v %v", fi.Mode().Perm(), err)
	}
	r = run(t, "", "tls", "gossip-key", "create", "--dir", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("second create not refused clearly: %+v", r)
	}
	if got := mustRead(t, path); string(got) != string(first) {
		t.Fatal("refused create changed gossip.key")
	}
	r = run(t, "", "tls", "gossip-key", "create", "--dir", dir, "--force")
	if r.code != 0 {
		t.Fatalf("create --force: %+v", r)
	}
	second := mustRead(t, path)
	if string(second) == string(first) {
		t.Fatal("--force kept the old key")
	}
	if _, err := gossip.ParseKey(second); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("replaced gossip.key mode: %v %v", fi.Mode().Perm(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left files behind: %v", ents)
	}
	// The current directory by default; a file in the way of --dir fails.
	t.Chdir(t.TempDir())
	if r := run(t, "", "tls", "gossip-key", "create"); r.code != 0 {
		t.Fatalf("create in .: %+v", r)
	}
	if _, err := gossip.ParseKey(mustRead(t, "gossip.key")); err != nil {
		t.Fatal(err)
	}
	if r := run(t, "", "tls", "gossip-key", "create", "--dir", "gossip.key"); r.code == 0 {
		t.Fatalf("--dir naming a file: %+v", r)
	}
}

func TestHelpTexts(t *testing.T) {
	clearEnv(t)
	for _, args := range [][]string{
		{"status", "--help"}, {"push", "--help"}, {"tls", "cert", "create", "--help"}, {"secret", "set", "--help"},
		{"members", "--help"}, {"history", "--help"}, {"diff", "--help"}, {"rollback", "--help"}, {"pull", "--help"},
		{"tls", "token", "create", "--help"}, {"tls", "cert", "request", "--help"}, {"tls", "cert", "show", "--help"}, {"tls", "ca", "create", "--help"}, {"peers", "remove", "--help"},
		{"tls", "gossip-key", "create", "--help"},
	} {
		r := run(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "--addr") {
			t.Errorf("%v: help lacks examples or connection flags: %+v", args, r.code)
		}
	}
}

func TestBootstrapTokenCommands(t *testing.T) {
	clearEnv(t)
	d := pkitest.New(t)
	srv := d.Issue(pki.KindCoordinator, "c1")
	adm := d.Issue(pki.KindAdmin, "alice")
	tc, err := pki.ServerTLSConfig(srv.CA, srv.Cert, srv.Key, pki.AllowNoClientCert())
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.ca = d.CA
	f.requireAdmin = true
	addr := serveFake(t, f, tc)

	r := run(t, "", "tls", "token", "create", "--node", "web-7", "-o", "json", "--addr", addr, "--ca", adm.CA, "--cert", adm.Cert, "--key", adm.Key)
	var tok struct {
		Token string `json:"token"`
		Node  string `json:"node"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &tok) != nil || tok.Token == "" || tok.Node != "web-7" {
		t.Fatalf("token create: %+v", r)
	}
	// The node has only the CA certificate.
	nodeDir := t.TempDir()
	r = run(t, "", "tls", "cert", "request", "--token", tok.Token, "--node", "web-8", "--dir", nodeDir, "--addr", addr, "--ca", adm.CA)
	if r.code != 1 || !strings.Contains(r.stderr, "refused") || strings.Contains(r.stderr, "admin certificate") {
		t.Fatalf("token for another node: %+v", r)
	}
	r = run(t, "", "tls", "cert", "request", "--token", tok.Token, "--node", "web-7", "--dir", nodeDir, "--addr", addr, "--ca", adm.CA)
	if r.code != 0 {
		t.Fatalf("cert request: %+v", r)
	}
	certs, err := pki.ParseCerts(mustRead(t, filepath.Join(nodeDir, "web-7.pem")))
	if err != nil {
		t.Fatal(err)
	}
	if id, err := pki.IdentityFromCert(certs[0]); err != nil || id != (pki.Identity{Kind: pki.KindAgent, Name: "web-7"}) {
		t.Fatalf("issued %v %v", id, err)
	}
	if fi, err := os.Stat(filepath.Join(nodeDir, "web-7-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "ca.pem")); err != nil {
		t.Fatalf("ca.pem not written: %v", err)
	}
	// The new certificate authenticates: the server sees agent:web-7.
	r = run(t, "x", "secret", "set", "s", "--addr", addr, "--ca", adm.CA,
		"--cert", filepath.Join(nodeDir, "web-7.pem"), "--key", filepath.Join(nodeDir, "web-7-key.pem"))
	if r.code != 1 || f.callers[len(f.callers)-1] != "agent:web-7" {
		t.Fatalf("new agent certificate not seen: %+v, callers %v", r, f.callers)
	}
	// Single use.
	r = run(t, "", "tls", "cert", "request", "--token", tok.Token, "--node", "web-7", "--dir", t.TempDir(), "--addr", addr, "--ca", adm.CA)
	if r.code != 1 || !strings.Contains(r.stderr, "bootstrap token is wrong, used") || strings.Contains(r.stderr, "admin certificate") {
		t.Fatalf("token reused: %+v", r)
	}
	if r := run(t, "", "tls", "token", "create", "--ttl", "0s", "--dev"); r.code != 1 || !strings.Contains(r.stderr, "--ttl") {
		t.Fatalf("bad ttl: %+v", r)
	}
}

func TestPeersCommands(t *testing.T) {
	clearEnv(t)
	f := newFake()
	f.peers = []*hivev1.RaftPeer{{Id: "c1", Address: "10.0.0.11:7401", Voter: true, Leader: true}}
	addr := serveFake(t, f, nil)
	conn := []string{"--dev", "--addr", addr}
	if r := run(t, "", append([]string{"peers", "remove", "c1"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "only voter") {
		t.Fatalf("remove the only voter: %+v", r)
	}
	if r := run(t, "", append([]string{"peers", "add", "c2", "10.0.0.12:7401", "--grpc-addr", "10.0.0.12:7400"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "as a non-voter") || f.lastAddPeer.GetGrpcAddress() != "10.0.0.12:7400" {
		t.Fatalf("add: %+v (request %v)", r, f.lastAddPeer)
	}
	r := run(t, "", append([]string{"peers", "list"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "c1    10.0.0.11:7401  voter     leader") || !strings.Contains(r.stdout, "c2    10.0.0.12:7401  nonvoter  follower") {
		t.Fatalf("list: %+v", r)
	}
	if r := run(t, "", append([]string{"peers", "remove", "c9"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, `no raft peer named "c9" (peers: c1,c2)`) {
		t.Fatalf("remove unknown: %+v", r)
	}
	if r := run(t, "", append([]string{"peers", "remove", "c2"}, conn...)...); r.code != 0 || len(f.peers) != 1 {
		t.Fatalf("remove: %+v", r)
	}
	r = run(t, "", append([]string{"peers", "list", "-o", "json"}, conn...)...)
	var ps []peerJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ps) != nil || len(ps) != 1 || !ps[0].Leader {
		t.Fatalf("list json: %+v", r)
	}
}
