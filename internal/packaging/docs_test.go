package packaging

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hivefleet/hive/internal/netlab"
	"github.com/hivefleet/hive/site"
)

func readQuickstart(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "quickstart.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// block returns the first fenced block of language lang after the text
// after in docs/quickstart.md.
func block(t *testing.T, doc, after, lang string) string {
	t.Helper()
	i := strings.Index(doc, after)
	if i < 0 {
		t.Fatalf("docs/quickstart.md: %q is gone", after)
	}
	m := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```").FindStringSubmatch(doc[i:])
	if m == nil {
		t.Fatalf("docs/quickstart.md: no %s block after %q", lang, after)
	}
	return m[1]
}

// TestQuickstartSite checks that the site file docs/quickstart.md asks the
// reader to push is valid, with the same parser and checks hivectl and the
// coordinators use.
func TestQuickstartSite(t *testing.T) {
	src := block(t, readQuickstart(t), "A small site file, `site.yaml`:", "yaml")
	s, err := site.Parse("quickstart.md:site.yaml", []byte(src))
	if err != nil {
		t.Fatalf("quickstart site.yaml: %v", err)
	}
	if err := site.Check(s); err != nil {
		t.Fatalf("quickstart site.yaml: %v", err)
	}
}

// quickstart is docs/quickstart.md's three servers, standing in for
// 10.0.0.11-13 on lab hosts, each running a coordinator and an agent.
type quickstart struct {
	doc     string
	hivectl func(args ...string) (string, error)
	// deadline bounds the waits of the setup and of the test.
	deadline time.Time
}

// startQuickstart follows the guide up to step 5: step 2's commands
// verbatim (CA, certificates, keyring, gossip key), step 3's
// coordinator.yaml and step 5's agent.yaml (only the addresses, the
// per-server names and the file locations changed; the agents converge
// under sandbox roots), the binaries started with their units' command
// lines, and returns once the three agents reported.
func startQuickstart(t *testing.T) *quickstart {
	t.Helper()
	doc := readQuickstart(t)
	lab := netlab.New(t)
	lab.AddHost("spare") // .10: the servers get .11, .12, .13 like the guide's
	hosts := []*netlab.Host{lab.AddHost("s1"), lab.AddHost("s2"), lab.AddHost("s3")}
	prefix := hosts[0].Addr[:strings.LastIndex(hosts[0].Addr, ".")+1]
	if hosts[0].Addr != prefix+"11" {
		t.Fatalf("lab addresses %s..., want .11 for the first server", hosts[0].Addr)
	}
	addr := func(s string) string { return strings.ReplaceAll(s, "10.0.0.", prefix) }
	bins := netlab.Build(t, "hive-coordinator", "hive-agent", "hivectl")
	binDir := filepath.Dir(bins["hivectl"])

	// Step 2, as written.
	pki := t.TempDir()
	script := strings.ReplaceAll(addr(block(t, doc, "### 2. Make the site's CA and certificates", "sh")), "~/hive-pki", pki)
	cmd := exec.Command("sh", "-e", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("quickstart step 2: %v\n%s", err, out)
	}

	coordYAML := block(t, doc, "Edit `/etc/hive/coordinator.yaml`", "yaml")
	agentYAML := block(t, doc, "### 5. Start the agents", "yaml")
	for i, h := range hosts {
		n := i + 1
		fs := t.TempDir() // this server's /
		place := func(p string) string { return filepath.Join(fs, p) }
		for _, d := range []string{"etc/hive/tls", "var/lib/hive/coordinator", "var/lib/hive/agent"} {
			if err := os.MkdirAll(place(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// Step 3's installs.
		for src, dst := range map[string]string{
			"ca.pem": "etc/hive/tls/ca.pem", fmt.Sprintf("coord/c%d.pem", n): "etc/hive/tls/coordinator.pem",
			fmt.Sprintf("coord/c%d-key.pem", n): "etc/hive/tls/coordinator-key.pem",
			fmt.Sprintf("agent/node-%d.pem", n): "etc/hive/tls/agent.pem", fmt.Sprintf("agent/node-%d-key.pem", n): "etc/hive/tls/agent-key.pem",
			"gossip.key": "etc/hive/gossip.key", "keyring.json": "var/lib/hive/coordinator/keyring.json",
		} {
			copyTo(t, filepath.Join(pki, src), place(dst), 0o600)
		}
		relocate := func(cfg map[string]any) {
			for k, v := range cfg {
				if s, ok := v.(string); ok && strings.HasPrefix(s, "/") {
					cfg[k] = place(s[1:])
				}
			}
		}
		// Step 3's coordinator.yaml, for server n.
		var c map[string]any
		if err := yaml.Unmarshal([]byte(addr(coordYAML)), &c); err != nil {
			t.Fatal(err)
		}
		c["name"] = fmt.Sprintf("c%d", n)
		c["advertise"] = h.Addr
		var join []string
		for _, o := range hosts {
			if o != h {
				join = append(join, o.Addr+":7402")
			}
		}
		c["join"] = join
		relocate(c)
		h.Start("hive-coordinator", unitArgv(t, "hive-coordinator.service", binDir, writeYAML(t, place("etc/hive/coordinator.yaml"), c))...)

		// Step 5's agent.yaml, for node n.
		var a map[string]any
		if err := yaml.Unmarshal([]byte(addr(agentYAML)), &a); err != nil {
			t.Fatal(err)
		}
		a["name"] = fmt.Sprintf("node-%d", n)
		if n > 1 {
			a["labels"] = map[string]string{"tier": "db"}
		}
		relocate(a)
		a["root"] = place("sandbox")
		h.Start("hive-agent", unitArgv(t, "hive-agent.service", binDir, writeYAML(t, place("etc/hive/agent.yaml"), a))...)
	}

	// Steps 4 and 6, from the first server with the guide's environment.
	env := []string{
		"HIVE_ADDR=" + addr("10.0.0.11,10.0.0.12,10.0.0.13"),
		"HIVE_CACERT=" + filepath.Join(pki, "ca.pem"), "HIVE_CERT=" + filepath.Join(pki, "alice.pem"), "HIVE_KEY=" + filepath.Join(pki, "alice-key.pem"),
	}
	hivectl := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := hosts[0].Command(ctx, append([]string{"env"}, append(env, append([]string{bins["hivectl"]}, args...)...)...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := hivectl("members", "-o", "json")
		var ms []struct{ Name, Kind string }
		if err == nil && json.Unmarshal([]byte(out), &ms) == nil && len(ms) == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hivectl members: not 3 coordinators and 3 agents after 90s: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
	// The agents have registered (their watch streams are open) before the
	// reader pushes in step 6.
	for {
		out, err := hivectl("status", "-o", "json")
		var st struct {
			Nodes []struct {
				Name  string `json:"name"`
				Phase string `json:"phase"`
			} `json:"nodes"`
		}
		ready := 0
		if err == nil && json.Unmarshal([]byte(out), &st) == nil {
			for _, n := range st.Nodes {
				if n.Phase == "converged" {
					ready++
				}
			}
		}
		if ready == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hivectl status: the three agents did not register: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
	return &quickstart{doc: doc, hivectl: hivectl, deadline: deadline}
}

// TestQuickstartThreeServers follows docs/quickstart.md on three lab hosts
// (startQuickstart), then step 6's push with --wait: every node converges
// on the generation with the roles its labels select.
func TestQuickstartThreeServers(t *testing.T) {
	q := startQuickstart(t)
	doc, hivectl, deadline := q.doc, q.hivectl, q.deadline
	siteFile := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, siteFile, block(t, doc, "A small site file, `site.yaml`:", "yaml"))
	out, err := hivectl("push", siteFile, "-m", "first site", "--wait")
	if err != nil {
		t.Fatalf("hivectl push --wait: %v\n%s", err, out)
	}
	t.Logf("push --wait:\n%s", out)
	if !strings.Contains(out, "3/3 converged") {
		t.Errorf("push --wait did not end with the three nodes converged, as the guide shows")
	}
	// What the guide promises: every node converges on generation 1 with
	// the roles its labels select.
	for {
		out, err := hivectl("status", "-o", "json")
		var st struct {
			Generation uint64 `json:"generation"`
			Nodes      []struct {
				Name              string   `json:"name"`
				Phase             string   `json:"phase"`
				Roles             []string `json:"roles"`
				AppliedGeneration uint64   `json:"applied_generation"`
			} `json:"nodes"`
		}
		done := 0
		if err == nil && json.Unmarshal([]byte(out), &st) == nil && st.Generation == 1 {
			for _, n := range st.Nodes {
				want := "base"
				if n.Name == "node-1" {
					want = "base,web"
				}
				if n.Phase == "converged" && n.AppliedGeneration == 1 && strings.Join(n.Roles, ",") == want {
					done++
				}
			}
		}
		if done == 3 {
			break
		}
		if time.Now().After(deadline.Add(60 * time.Second)) {
			t.Fatalf("the three nodes did not converge on generation 1: %v\n%s", err, out)
		}
		time.Sleep(time.Second)
	}
}

// TestPushThroughFollowerCountsNodes: a push answered by a follower must
// say which nodes the new generation applies to, as one answered by the
// leader does; `hivectl push --wait` waits for exactly those nodes. (Found
// with TestQuickstartThreeServers: the follower read its state before
// applying the committed generation and answered "applies to 0 node(s)";
// fixed on main by read-your-writes on followers.)
func TestPushThroughFollowerCountsNodes(t *testing.T) {
	q := startQuickstart(t)
	siteFile := filepath.Join(t.TempDir(), "site.yaml")
	writeFile(t, siteFile, block(t, q.doc, "A small site file, `site.yaml`:", "yaml"))
	out, err := q.hivectl("members", "-o", "json")
	var ms []struct {
		Name, Kind, Address, Raft string
	}
	if err != nil || json.Unmarshal([]byte(out), &ms) != nil {
		t.Fatalf("hivectl members: %v\n%s", err, out)
	}
	// The site's first generation, pushed through a follower (--addr wins
	// over HIVE_ADDR): the follower must count the nodes of the generation
	// it just had committed, not of the state it had before.
	for _, m := range ms {
		if m.Kind != "coordinator" || m.Raft != "follower" {
			continue
		}
		host := m.Address[:strings.LastIndex(m.Address, ":")]
		out, err := q.hivectl("--addr", host+":7400", "push", siteFile, "-m", "through "+m.Name)
		if err != nil {
			t.Fatalf("push through %s: %v\n%s", m.Name, err, out)
		}
		if !strings.Contains(out, "applies to 3 node(s)") {
			t.Errorf("push through follower %s: %s", m.Name, strings.TrimSpace(out))
		}
		return
	}
	t.Fatalf("no follower in %+v", ms)
}

func unitArgv(t *testing.T, unit, binDir, config string) []string {
	t.Helper()
	argv := strings.Fields(unitDirectives(t, unit)["ExecStart"][0])
	argv[0] = filepath.Join(binDir, filepath.Base(argv[0]))
	for i := range argv {
		if strings.HasPrefix(argv[i], ConfigDir+"/") {
			argv[i] = config
		}
	}
	return argv
}

func writeYAML(t *testing.T, p string, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, string(b))
	return p
}
