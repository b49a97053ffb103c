package packaging

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hivefleet/hive/internal/netlab"
)

// firstBootSite gives nodes labelled role=web (a trusted label: bound in
// the node's certificate by cert create or the token) a file; the agent runs under
// a sandbox root, so "converged" means the file was really written there.
const firstBootSite = `site: firstboot
selectors:
  - match: {role: web}
    roles: [web]
roles:
  web:
    description: what a freshly booted web node must end up with
    files:
      - path: /etc/motd
        content: |
          managed by hive
`

// userData returns the files deploy/image/cloud-init.yaml writes, by path.
func userData(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "image", "cloud-init.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ci struct {
		WriteFiles []struct {
			Path    string `yaml:"path"`
			Content string `yaml:"content"`
		} `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(raw, &ci); err != nil {
		t.Fatalf("cloud-init.yaml: %v", err)
	}
	out := map[string]string{}
	for _, f := range ci.WriteFiles {
		out[f.Path] = f.Content
	}
	return out
}

// firstBoot is a two-host lab: coordinator c1 started from the packaged
// configuration, and an empty "web-7" host for the agent.
type firstBoot struct {
	lab      *netlab.Lab
	c1, node *netlab.Host
	bins     map[string]string
	pki      string // ca.pem, ca-key.pem, c1.pem, alice.pem, ...
	etc      string // the node's /etc/hive
}

func startFirstBoot(t *testing.T) *firstBoot {
	t.Helper()
	lab := netlab.New(t)
	fb := &firstBoot{lab: lab, c1: lab.AddHost("c1"), node: lab.AddHost("web-7")}
	fb.bins = netlab.Build(t, "hive-coordinator", "hive-agent", "hivectl")
	bin := filepath.Dir(fb.bins["hivectl"])
	fb.pki = t.TempDir()
	hivectl := fb.bins["hivectl"]
	run(t, hivectl, "tls", "ca", "create", "--dir", fb.pki)
	run(t, hivectl, "tls", "cert", "create", "--coordinator", "c1", "--ip", fb.c1.Addr, "--dir", fb.pki)
	run(t, hivectl, "tls", "cert", "create", "--admin", "alice", "--dir", fb.pki)

	// The site's gossip key, for the coordinator and (as the user data
	// says) the node's /etc/hive/gossip.key.
	fb.etc = t.TempDir()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	gossipKey := filepath.Join(fb.etc, "gossip.key")
	writeFile(t, gossipKey, base64.StdEncoding.EncodeToString(raw)+"\n")

	// The coordinator: packaged coordinator.yaml, packaged ports (the lab
	// gives each host its own network), one server, and the CA key so it
	// can sign bootstrap requests.
	data := t.TempDir()
	cfg := rewriteConfig(t, "coordinator.yaml", map[string]string{
		"# name: c1":                                 "name: c1",
		"data-dir: /var/lib/hive/coordinator":        "data-dir: " + data,
		"# advertise: 10.0.0.11":                     "advertise: " + fb.c1.Addr,
		"bootstrap-expect: 3":                        "bootstrap-expect: 1",
		"tls-ca: /etc/hive/tls/ca.pem":               "tls-ca: " + filepath.Join(fb.pki, "ca.pem"),
		"tls-cert: /etc/hive/tls/coordinator.pem":    "tls-cert: " + filepath.Join(fb.pki, "c1.pem"),
		"tls-key: /etc/hive/tls/coordinator-key.pem": "tls-key: " + filepath.Join(fb.pki, "c1-key.pem"),
		"# tls-ca-key: /etc/hive/tls/ca-key.pem":     "tls-ca-key: " + filepath.Join(fb.pki, "ca-key.pem"),
		"gossip-key-file: /etc/hive/gossip.key":      "gossip-key-file: " + gossipKey,
	})
	d := unitDirectives(t, "hive-coordinator.service")
	argv := strings.Fields(d["ExecStart"][0])
	argv[0] = filepath.Join(bin, filepath.Base(argv[0]))
	for i := range argv {
		if argv[i] == ConfigDir+"/coordinator.yaml" {
			argv[i] = cfg
		}
	}
	fb.c1.Start("hive-coordinator", argv...)
	fb.hivectlEventually(t, 60*time.Second, "members")

	// The operator pushes the site before the node exists.
	site := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, site, firstBootSite)
	fb.hivectl(t, "push", site, "-m", "first boot")
	return fb
}

// hivectl runs hivectl as admin alice from the coordinator's host.
func (fb *firstBoot) hivectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := fb.hivectlErr(args...)
	if err != nil {
		t.Fatalf("hivectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (fb *firstBoot) hivectlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{fb.bins["hivectl"], "--addr", fb.c1.Addr + ":7400",
		"--ca", filepath.Join(fb.pki, "ca.pem"), "--cert", filepath.Join(fb.pki, "alice.pem"),
		"--key", filepath.Join(fb.pki, "alice-key.pem")}, args...)
	out, err := fb.c1.Run(ctx, argv...)
	return string(out), err
}

func (fb *firstBoot) hivectlEventually(t *testing.T, d time.Duration, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, err := fb.hivectlErr(args...)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("hivectl %s: still failing after %v: %v\n%s", strings.Join(args, " "), d, err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// agentConfig turns the example user data's agent.yaml into this lab's:
// the join address becomes the coordinator's, files move under the node's
// temporary /etc/hive and /var/lib/hive, and the agent converges under a
// sandbox root (a test must not change the machine it runs on). edit may
// change it further.
func (fb *firstBoot) agentConfig(t *testing.T, root string, edit func(map[string]any)) string {
	t.Helper()
	files := userData(t)
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(files[ConfigDir+"/agent.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["join"] = []string{fb.c1.Addr + ":7402"}
	for k, v := range cfg {
		if s, ok := v.(string); ok && strings.HasPrefix(s, ConfigDir+"/") {
			cfg[k] = filepath.Join(fb.etc, strings.TrimPrefix(s, ConfigDir+"/"))
		}
	}
	cfg["data-dir"] = filepath.Join(t.TempDir(), "agent")
	cfg["root"] = root
	if edit != nil {
		edit(cfg)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(fb.etc, "agent.yaml")
	if err := os.MkdirAll(filepath.Join(fb.etc, "tls"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, string(b))
	// The start rule holds for what cloud-init wrote.
	run(t, "sh", filepath.Join(repoRoot(t), "deploy", "packaging", "agent-configured"), p)
	return p
}

// startAgent starts hive-agent with its unit's command line on the node's
// host, and waits until the coordinators report the node converged on the
// current generation with the site's file written under its root.
func (fb *firstBoot) startAgentAndWait(t *testing.T, cfg, root string) {
	t.Helper()
	d := unitDirectives(t, "hive-agent.service")
	argv := strings.Fields(d["ExecStart"][0])
	argv[0] = fb.bins["hive-agent"]
	for i := range argv {
		if argv[i] == ConfigDir+"/agent.yaml" {
			argv[i] = cfg
		}
	}
	fb.node.Start("hive-agent", argv...)

	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := fb.hivectlErr("status", "web-7", "-o", "json")
		var st struct {
			Generation uint64 `json:"generation"`
			Nodes      []struct {
				Name              string `json:"name"`
				Phase             string `json:"phase"`
				AppliedGeneration uint64 `json:"applied_generation"`
			} `json:"nodes"`
		}
		if err == nil && json.Unmarshal([]byte(out), &st) == nil {
			for _, n := range st.Nodes {
				if n.Name == "web-7" && n.Phase == "converged" && n.AppliedGeneration == st.Generation && st.Generation > 0 {
					b, err := os.ReadFile(filepath.Join(root, "etc", "motd"))
					if err != nil || string(b) != "managed by hive\n" {
						t.Fatalf("web-7 reported converged, but %s/etc/motd = %q, %v", root, b, err)
					}
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("web-7 not converged after 90s; last status: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
}

// TestFirstBootWithFiles starts an agent with nothing but what the
// example user data gives it — agent.yaml (join address, labels), ca.pem
// and the node's certificate files — against a TLS coordinator started
// from the packaged configuration, and waits until it has converged and
// reported.
func TestFirstBootWithFiles(t *testing.T) {
	fb := startFirstBoot(t)
	run(t, fb.bins["hivectl"], "tls", "cert", "create", "--agent", "web-7", "--label", "role=web", "--dir", fb.pki)
	root := t.TempDir()
	cfg := fb.agentConfig(t, root, func(c map[string]any) {
		delete(c, "bootstrap-token-file") // way B: files
	})
	copyTo(t, filepath.Join(fb.pki, "ca.pem"), filepath.Join(fb.etc, "tls", "ca.pem"), 0o644)
	copyTo(t, filepath.Join(fb.pki, "web-7.pem"), filepath.Join(fb.etc, "tls", "agent.pem"), 0o644)
	copyTo(t, filepath.Join(fb.pki, "web-7-key.pem"), filepath.Join(fb.etc, "tls", "agent-key.pem"), 0o600)
	fb.startAgentAndWait(t, cfg, root)
}

// redeem runs `hivectl tls cert request` on the node's host, as an
// operator would by hand: no client certificate, only the CA and a token.
func (fb *firstBoot) redeem(t *testing.T, token, node string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := fb.node.Run(ctx, fb.bins["hivectl"], "--addr", fb.c1.Addr+":7400", "--ca", filepath.Join(fb.pki, "ca.pem"),
		"tls", "cert", "request", "--token", token, "--node", node, "--dir", dir)
	return string(out), err
}

// TestBootstrapTokenRules checks the token rules end to end, with the real
// hivectl against a real TLS coordinator: a token is redeemed once, not
// after it expires, a made-up token is refused, and a token for one node
// name cannot get a certificate for another.
func TestBootstrapTokenRules(t *testing.T) {
	fb := startFirstBoot(t)
	token := func(args ...string) string {
		t.Helper()
		out := fb.hivectl(t, append([]string{"tls", "token", "create"}, args...)...)
		return strings.TrimSpace(strings.Split(out, "\n")[0])
	}

	tok := token("--node", "web-7", "--ttl", "10m")
	if out, err := fb.redeem(t, tok, "web-7"); err != nil {
		t.Fatalf("first redemption: %v\n%s", err, out)
	}
	refused := func(what, token, node, reason string) {
		t.Helper()
		out, err := fb.redeem(t, token, node)
		if err == nil {
			t.Fatalf("%s was accepted:\n%s", what, out)
		}
		if !strings.Contains(err.Error(), reason) {
			t.Errorf("%s refused with %v, want a message saying %q", what, err, reason)
		}
		t.Logf("%s refused: %s", what, err.Error()[strings.LastIndex(err.Error(), "hivectl:"):])
	}
	refused("a second redemption", tok, "web-7", "used")
	refused("a made-up token", strings.Repeat("ab", 24), "web-7", "unknown")

	other := token("--node", "web-8", "--ttl", "10m")
	refused("web-8's token for web-7", other, "web-7", "web-8")
	// Refusing the wrong name did not burn the token for its own node.
	if out, err := fb.redeem(t, other, "web-8"); err != nil {
		t.Fatalf("web-8's token after a refused attempt for web-7: %v\n%s", err, out)
	}

	short := token("--node", "web-9", "--ttl", "1s")
	time.Sleep(2 * time.Second)
	refused("an expired token", short, "web-9", "expired")
}

// TestFirstBootWithToken starts an agent with nothing but what the example
// user data gives it with a bootstrap token — agent.yaml (one join address,
// labels, the token file), ca.pem and the token — against a TLS coordinator
// holding the CA key. The agent makes its key, redeems the token once for
// its certificate and converges; the token is then worthless.
func TestFirstBootWithToken(t *testing.T) {
	fb := startFirstBoot(t)
	out := fb.hivectl(t, "tls", "token", "create", "--node", "web-7", "--label", "role=web", "--ttl", "10m")
	token := strings.TrimSpace(strings.Split(out, "\n")[0])
	root := t.TempDir()
	cfg := fb.agentConfig(t, root, nil)
	copyTo(t, filepath.Join(fb.pki, "ca.pem"), filepath.Join(fb.etc, "tls", "ca.pem"), 0o644)
	writeFile(t, filepath.Join(fb.etc, "bootstrap-token"), token+"\n")
	if err := os.Chmod(filepath.Join(fb.etc, "bootstrap-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	fb.startAgentAndWait(t, cfg, root)

	st, err := os.Stat(filepath.Join(fb.etc, "tls", "agent-key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("agent-key.pem after bootstrap: %v, %v; want a 0600 file", st, err)
	}
	if _, err := os.Stat(filepath.Join(fb.etc, "tls", "agent.pem")); err != nil {
		t.Errorf("agent.pem after bootstrap: %v", err)
	}
	if out, err := fb.redeem(t, token, "web-7"); err == nil || !strings.Contains(err.Error(), "used") {
		t.Errorf("the agent's token redeemed again: %v\n%s", err, out)
	}
}
