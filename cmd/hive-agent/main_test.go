package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func flags() (*pflag.FlagSet, map[string]*string, *[]string, *[]string) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	s := map[string]*string{}
	for _, n := range []string{"name", "data-dir", "tls-ca", "tls-cert", "tls-key", "interval", "root", "bootstrap-token-file"} {
		s[n] = fs.String(n, "", "")
	}
	join := fs.StringArray("join", nil, "")
	label := fs.StringArray("label", nil, "")
	fs.Bool("dev", false, "")
	fs.String("config", "", "")
	return fs, s, join, label
}

func TestConfigFileKeys(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "agent.yaml")
	os.WriteFile(p, []byte(`name: web-1
data-dir: /var/lib/hive/agent
join: [10.0.0.1:7402, 10.0.0.2:7402]
labels: {tier: web}
tls-ca: /ca.pem
dev: true
interval: 1m
`), 0o644)
	fs, s, join, label := flags()
	if err := fs.Parse([]string{"--name", "cli-wins"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(fs, p); err != nil {
		t.Fatal(err)
	}
	if *s["name"] != "cli-wins" || *s["data-dir"] != "/var/lib/hive/agent" || *s["tls-ca"] != "/ca.pem" || *s["interval"] != "1m" {
		t.Fatalf("values: name %q data-dir %q tls-ca %q interval %q", *s["name"], *s["data-dir"], *s["tls-ca"], *s["interval"])
	}
	if strings.Join(*join, ",") != "10.0.0.1:7402,10.0.0.2:7402" || strings.Join(*label, ",") != "tier=web" {
		t.Fatalf("join %v label %v", *join, *label)
	}
}

// The packaged /etc/hive/agent.yaml (deploy/config) is accepted as is.
func TestPackagedConfigFile(t *testing.T) {
	fs, s, _, _ := flags()
	if err := applyConfigFile(fs, filepath.Join("..", "..", "deploy", "config", "agent.yaml")); err != nil {
		t.Fatal(err)
	}
	if *s["name"] != "" || *s["data-dir"] != "/var/lib/hive/agent" || !strings.HasPrefix(*s["tls-cert"], "/etc/hive/tls/") {
		t.Fatalf("name %q data-dir %q tls-cert %q", *s["name"], *s["data-dir"], *s["tls-cert"])
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.yaml")
	os.WriteFile(p, []byte("nmae: x\n"), 0o644)
	fs, _, _, _ := flags()
	if err := applyConfigFile(fs, p); err == nil || !strings.Contains(err.Error(), `unknown key "nmae"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseLabels(t *testing.T) {
	got := map[string]string{}
	if err := parseLabels("f", []byte("# comment\n\ntier = web\nzone=eu-1\n"), got); err != nil {
		t.Fatal(err)
	}
	if got["tier"] != "web" || got["zone"] != "eu-1" || len(got) != 2 {
		t.Fatalf("labels = %v", got)
	}
	err := parseLabels("f", []byte("ok=1\nbroken line\n"), got)
	if err == nil || !strings.Contains(err.Error(), "f:2:") {
		t.Fatalf("err = %v, want f:2", err)
	}
}

// FuzzParseLabels: any input either parses into non-empty trimmed keys or
// fails with a file:line error; it never panics.
func FuzzParseLabels(f *testing.F) {
	f.Add([]byte("tier=web\n# c\nzone = eu\n"))
	f.Add([]byte("=x\n"))
	f.Add([]byte("a=b=c\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got := map[string]string{}
		if err := parseLabels("f", data, got); err != nil {
			if !strings.HasPrefix(err.Error(), "f:") && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error without position: %v", err)
			}
			return
		}
		for k := range got {
			if k == "" || k != strings.TrimSpace(k) {
				t.Fatalf("bad key %q", k)
			}
		}
	})
}
