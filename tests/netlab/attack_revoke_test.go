package netlabtests

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// logTimes returns the time= stamps of the log lines matching re.
func logTimes(log string, re *regexp.Regexp) []time.Time {
	var out []time.Time
	for _, line := range strings.Split(log, "\n") {
		if !re.MatchString(line) {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "time=") {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time=")); err == nil {
			out = append(out, t)
		}
	}
	return out
}

var watchRevokedRE = regexp.MustCompile(`msg="watch stream lost.*PermissionDenied.*revoked at`)

// A node whose disk was stolen is revoked: its running agent's watch
// stream is ended within a second, every coordinator refuses the stolen
// certificate for watch, report and renewal, the other agent carries on,
// and `node remove` then drops the node from status.
func TestRevokedNodeIsCutOff(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 3, agents: 2, coordinatorArgs: []string{"--tls-ca-key", "PKI/ca-key.pem"}})
	a1, a2 := c.agents[0], c.agents[1]
	g1 := c.push(siteFiles("1", 1), true)
	c.waitConverged(g1, 30*time.Second, a1, a2)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	began := time.Now()
	out, err := c.ctl(ctx, "node", "revoke", "a1", "--reason", "netlab: disk stolen")
	acked := time.Since(began)
	if err != nil {
		t.Fatalf("node revoke: %v\n%s", err, out)
	}
	t.Logf("hivectl node revoke a1 (%v): %s", acked.Round(time.Millisecond), strings.TrimSpace(string(out)))
	var cut time.Time
	if !poll(10*time.Second, func() bool {
		ts := logTimes(a1.proc.Log(), watchRevokedRE)
		if len(ts) > 0 {
			cut = ts[0]
		}
		return len(ts) > 0
	}) {
		t.Fatalf("a1's watch stream did not end with PermissionDenied; a1's log:\n%s", a1.proc.Log())
	}
	closed := cut.Sub(began)
	t.Logf("FIGURE revoke→stream closed: %v after hivectl started (the revoke call itself took %v)", closed.Round(time.Millisecond), acked.Round(time.Millisecond))
	if closed > 5*time.Second {
		t.Errorf("a1's watch ended %v after the revocation; want within seconds", closed)
	}

	// The stolen certificate, from a host of the attacker's, against every
	// coordinator.
	rogue := c.lab.AddHost("rogue")
	for _, co := range c.coords {
		for _, rpc := range []string{"watch", "report", "renew"} {
			got := c.rpcAs(rogue, co, rpc, "a1", "a1")
			t.Logf("%s on %s with a1's revoked certificate: %s", rpc, co.name, got)
			if !strings.HasPrefix(got, "ERR PermissionDenied") || !strings.Contains(got, "revoked at") {
				t.Errorf("%s on %s with a1's revoked certificate: %q, want PermissionDenied ... revoked at", rpc, co.name, got)
			}
		}
	}
	// a2 is untouched: it converges on the next generation; a1 gets
	// nothing more.
	g2 := c.push(siteFiles("2", 1), false)
	c.waitConverged(g2, 30*time.Second, a2)
	time.Sleep(2 * time.Second)
	if got := a1.readFile(filePath(0)); got != fileContent("1", 0) {
		t.Errorf("revoked a1 holds %q, want generation 1's file (it must not get generation 2)", got)
	}
	s, err := c.status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.node("a1"); n == nil || n.AppliedGeneration != g1 {
		t.Errorf("revoked a1 in status: %s (want it still listed, on generation %d)", dump(n), g1)
	}

	out, err = c.ctl(ctx, "node", "remove", "a1", "--reason", "netlab: decommissioned")
	if err != nil {
		t.Fatalf("node remove: %v\n%s", err, out)
	}
	if !poll(10*time.Second, func() bool {
		s, err := c.status(ctx)
		return err == nil && s.node("a1") == nil && s.node("a2") != nil
	}) {
		t.Fatalf("a1 still in status after node remove")
	}
	// And it stays out, although its agent keeps trying.
	time.Sleep(3 * time.Second)
	if s, err := c.status(ctx); err != nil || s.node("a1") != nil {
		t.Fatalf("a1 back in status after removal: %v %s", err, dump(s))
	}
}

// An agent enrolled with a bootstrap token on coordinators that mint
// 30-second certificates renews its certificate over mutual TLS at about
// two thirds of its lifetime, again and again, and keeps converging past
// the original certificate's expiry and the first renewed one's, without
// ever being refused.
func TestAgentRenewsShortLivedCertificate(t *testing.T) {
	const lifetime = 30 * time.Second
	c := newCluster(t, clusterConfig{coordinators: 1, coordinatorArgs: []string{
		"--tls-ca-key", "PKI/ca-key.pem", "--agent-cert-lifetime", lifetime.String()}})
	co := c.coords[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := c.ctl(ctx, "tls", "token", "create", "--node", "r1", "--label", "tier=web", "-o", "json")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(out, &tok); err != nil {
		t.Fatal(err)
	}
	r1 := &node{name: "r1", host: c.lab.AddHost("r1"), labels: []string{"tier=web"},
		data: filepath.Join(c.dir, "r1", "data"), root: filepath.Join(c.dir, "r1", "root")}
	if err := os.MkdirAll(r1.root, 0o755); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(c.dir, "r1.token")
	if err := os.WriteFile(tokFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r1.proc = r1.host.Start("hive-agent", c.bin["hive-agent"],
		"--name", "r1", "--data-dir", r1.data, "--root", r1.root,
		"--gossip-addr", r1.host.Addr+":"+gossipPort, "--join", co.host.Addr+":"+gossipPort,
		"--interval", c.interval, "--gossip-key-file", c.gossipKey, "--label", "tier=web",
		"--tls-ca", filepath.Join(c.pki, "ca.pem"), "--bootstrap-token-file", tokFile)
	c.agents = append(c.agents, r1)

	g1 := c.push(siteFiles("1", 1), false)
	c.waitConverged(g1, 30*time.Second, r1)
	certFile := filepath.Join(r1.data, "tls", "agent.pem")
	first := readCert(t, certFile)
	life := first.NotAfter.Sub(first.NotBefore)
	t.Logf("bootstrap certificate %s: %s .. %s (%v)", first.SerialNumber.Text(16), first.NotBefore.Format(time.RFC3339), first.NotAfter.Format(time.RFC3339), life)
	if life > lifetime+5*time.Second {
		t.Fatalf("bootstrap certificate lives %v; the coordinators mint %v", life, lifetime)
	}

	// Past the first certificate's expiry, a new generation still
	// reaches the agent and its report still reaches status.
	time.Sleep(time.Until(first.NotAfter.Add(3 * time.Second)))
	c.mustRun(r1)
	g2 := c.push(siteFiles("2", 1), false)
	c.waitConverged(g2, 20*time.Second, r1)
	c.waitFiles(r1, "2", 1, 5*time.Second)
	now := readCert(t, certFile)
	if now.SerialNumber.Cmp(first.SerialNumber) == 0 || !now.NotAfter.After(time.Now()) {
		t.Fatalf("certificate not renewed: serial %s, NotAfter %v", now.SerialNumber.Text(16), now.NotAfter)
	}
	// And past the renewed certificate's expiry: a renewed certificate
	// renews in turn.
	time.Sleep(time.Until(now.NotAfter.Add(3 * time.Second)))
	c.mustRun(r1)
	g3 := c.push(siteFiles("3", 1), false)
	c.waitConverged(g3, 20*time.Second, r1)
	c.waitFiles(r1, "3", 1, 5*time.Second)
	renewals := logTimes(r1.proc.Log(), regexp.MustCompile(`msg="renewed the agent certificate"`))
	if len(renewals) < 2 {
		t.Fatalf("%d renewal(s) in r1's log, want at least 2:\n%s", len(renewals), r1.proc.Log())
	}
	at := renewals[0].Sub(first.NotBefore)
	t.Logf("FIGURE renewal: %d renewal(s) by %v; the first at %v into a %v certificate (%.0f%% of its lifetime; due at 2/3)",
		len(renewals), time.Since(first.NotBefore).Round(time.Second), at.Round(100*time.Millisecond), life, 100*float64(at)/float64(life))
	if at < life/2 || at > life*5/6 {
		t.Errorf("first renewal at %v of a %v lifetime; want about two thirds", at, life)
	}
	// The agent moved its connections to the new certificate before the
	// old one expired: the coordinator never had to close one of them
	// at expiry, nor refuse a call.
	if l := co.proc.Log(); strings.Contains(l, "connection whose certificate expired") && strings.Contains(l, "agent:r1") {
		t.Errorf("the coordinator closed an expired connection of r1:\n%s", l)
	}
	if l := r1.proc.Log(); strings.Contains(l, "Unauthenticated") || strings.Contains(l, "PermissionDenied") {
		t.Errorf("r1 was refused a call:\n%s", l)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
