package netlabtests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secretSite renders secret db-password into /srv/netlab/db.conf (plus
// extra, a plain file, to make generations differ).
func secretSite(extra string) string {
	return `site: netlab
secrets:
  - db-password
selectors:
  - match: {tier: web}
    roles: [web]
roles:
  web:
    files:
      - path: /srv/netlab/db.conf
        template: true
        mode: "0600"
        content: |
          user=app
          password={{ secret "db-password" }}
      - path: /srv/netlab/extra
        content: "` + extra + `\n"
`
}

// literalSite manages the same path as literal content: the file on disk
// still holds the last secret value until the agent rewrites it.
const literalSite = `site: netlab
selectors:
  - match: {tier: web}
    roles: [web]
roles:
  web:
    files:
      - path: /srv/netlab/db.conf
        mode: "0600"
        content: |
          user=app
          password=none
`

// TestSecretValuesNeverLeaveTheNode: a file renders secret db-password; the
// secret is set, rotated twice, and finally the file stops using it (after
// an agent restart). Each time the agent rewrites the file and reports.
// None of the three values may then be found anywhere outside the node: in
// the raw bytes of any coordinator's data directory (raft log, stable
// store, snapshots, keyring), in the coordinators' logs, in the answers of
// hivectl status (table, detail, JSON), history, diff and secret list, or
// in the agent's own log and report queue. The agent's offline cache holds
// the current value by design: it must be 0600 in a 0700 directory.
//
// Before the fix the agent masked diffs with the current values only, so
// the "-password=..." line of each rotation carried the previous value in
// clear into every coordinator's raft log and the status API.
func TestSecretValuesNeverLeaveTheNode(t *testing.T) {
	// No drift checks: the last report of each step is that step's run.
	c := newCluster(t, clusterConfig{coordinators: 3, agents: 1, interval: time.Hour})
	a1 := c.agents[0]
	const conf = "/srv/netlab/db.conf"
	values := make([]string, 3)
	for i := range values {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		values[i] = fmt.Sprintf("pw%d-%s", i+1, hex.EncodeToString(b))
	}
	ctl := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := c.ctl(ctx, args...)
		if err != nil {
			t.Fatalf("hivectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	setSecret := func(v string) {
		t.Helper()
		f := filepath.Join(c.dir, "secret-value")
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		ctl("secret", "set", "db-password", "-f", f)
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	// waitReported waits until the agent wrote want into the file and a
	// report sent after that reached the coordinators.
	waitReported := func(want string) {
		t.Helper()
		p := filepath.Join(a1.root, conf)
		var written time.Time
		if !poll(60*time.Second, func() bool {
			c.mustRun(a1)
			fi, err := os.Stat(p)
			if err != nil || a1.readFile(conf) != want {
				return false
			}
			written = fi.ModTime()
			return true
		}) {
			t.Fatalf("%s holds %q, want %q", conf, a1.readFile(conf), want)
		}
		if !poll(60*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := c.status(ctx)
			n := s.node(a1.name)
			return err == nil && n != nil && n.Phase == "converged" && n.LastReport != nil && n.LastReport.After(written)
		}) {
			t.Fatalf("no report after %s was written", conf)
		}
	}
	rendered := func(v string) string { return "user=app\npassword=" + v + "\n" }

	setSecret(values[0])
	g1 := c.push(secretSite("one"), true)
	c.waitConverged(g1, 60*time.Second, a1)
	waitReported(rendered(values[0]))
	for _, v := range values[1:] {
		setSecret(v)
		waitReported(rendered(v))
	}
	// The status of the rewrite of a rotation says it changed, not how.
	detail := ctl("status", a1.name)
	t.Logf("status %s:\n%s", a1.name, detail)

	// A second generation, for diff and history.
	g2 := c.push(secretSite("two"), true)
	c.waitConverged(g2, 60*time.Second, a1)

	// The agent restarts, then the file stops rendering the secret: its old
	// content (the last value) must not be diffed either.
	if err := a1.proc.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	a1.proc.Restart()
	g3 := c.push(literalSite, true)
	c.waitConverged(g3, 60*time.Second, a1)
	waitReported("user=app\npassword=none\n")

	// Everything the operator can read.
	answers := map[string][]byte{}
	for _, args := range [][]string{
		{"status"}, {"status", "-o", "json"}, {"status", a1.name}, {"status", a1.name, "-o", "json"},
		{"history"}, {"history", "-o", "json"},
		{"diff", fmt.Sprint(g1), fmt.Sprint(g2)}, {"diff", fmt.Sprint(g2), fmt.Sprint(g3)}, {"diff", fmt.Sprint(g1), fmt.Sprint(g3), "-o", "json"},
		{"secret", "list"}, {"secret", "list", "-o", "json"},
	} {
		answers["hivectl "+strings.Join(args, " ")] = ctl(args...)
	}
	answers["hivectl status "+a1.name+" (after the first rotations)"] = detail
	for _, n := range c.coords {
		answers[n.name+" log"] = []byte(n.proc.Log())
	}
	answers[a1.name+" log"] = []byte(a1.proc.Log())

	// The raw bytes of every coordinator's data directory, and of the
	// agent's data directory except its state cache.
	dirs := map[string]string{a1.name + " data": a1.data}
	for _, n := range c.coords {
		dirs[n.name+" data"] = n.data
	}
	files := 0
	for what, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			if what == a1.name+" data" && filepath.Base(p) == "state.pb" {
				return nil // holds the current value by design, checked below
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files++
			answers[what+": "+strings.TrimPrefix(p, dir)] = b
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("searched %d answers and logs and %d files", len(answers)-files, files)
	for what, b := range answers {
		for i, v := range values {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("value %d of db-password found in %s", i+1, what)
			}
		}
	}
	if n := len(answers["hivectl status "+a1.name+" -o json"]); n == 0 {
		t.Fatal("empty status")
	}
	var sj struct {
		Nodes []struct {
			Results []struct {
				Key     string `json:"key"`
				Message string `json:"message"`
			} `json:"results"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(answers["hivectl status "+a1.name+" -o json"], &sj); err != nil || len(sj.Nodes) != 1 {
		t.Fatalf("status json: %v", err)
	}
	if final := string(answers["hivectl status "+a1.name]); !strings.Contains(final, "previous content rendered secrets") {
		t.Errorf("the last report does not say the old content is not shown:\n%s", final)
	}
	if !strings.Contains(string(detail), "renders secrets") {
		t.Errorf("the rotation's report does not say the content changed without showing it:\n%s", detail)
	}

	// The offline cache: the current state (with its secret) only for the
	// agent.
	for p, want := range map[string]fs.FileMode{a1.data: 0o700, filepath.Join(a1.data, "state.pb"): 0o600} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", p, fi.Mode().Perm(), err, want)
		}
	}
}
