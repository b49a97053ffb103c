package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/agent"
	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

const factsSite = `site: facts
selectors:
  - roles: [base]
roles:
  base:
    files:
      - path: /etc/facts.txt
        template: true
        content: |
          {{ .Facts.OSFamily }} {{ .Facts.OSVersion }} cpus={{ .Facts.CPUs }} mem={{ if gt .Facts.MemoryMB 0 }}yes{{ end }} kernel={{ if .Facts.Kernel }}yes{{ end }} ifs={{ if .Facts.Interfaces }}yes{{ end }}
          {{ if eq .Facts.OSFamily "rhel" }}/etc/pki/tls/certs{{ else }}/etc/ssl/certs{{ end }}
`

// TestHostFactsInTemplates: the agent reports its host facts with its
// watch (the OS from its --root), a real --dev coordinator checks them
// and renders them into NodeFacts, and a template chooses by
// .Facts.OSFamily, so one role serves Debian and RHEL hosts.
func TestHostFactsInTemplates(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	co := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	addr := co.srv.GRPCAddr()
	s, err := site.Parse("facts.yaml", []byte(factsSite))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Push(ctx, &hivev1.PushRequest{Site: s, Force: true}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ osRelease, want string }{
		{"ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n", "rhel 9.4"},
		{"ID=debian\nVERSION_ID=\"12\"\n", "debian 12"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "etc"), 0o755)
			if err := os.WriteFile(filepath.Join(root, "etc/os-release"), []byte(tc.osRelease), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig(t, t.TempDir())
			cfg.Name = "host-" + strings.Fields(tc.want)[0]
			cfg.Root = root
			cfg.Coordinators = []string{addr}
			cfg.Addresses = []string{"127.0.0.1"}
			deps, err := agent.NewEngine(cfg, cfg.Logger)
			if err != nil {
				t.Fatal(err)
			}
			a, err := agent.New(cfg, deps)
			if err != nil {
				t.Fatal(err)
			}
			actx, acancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = a.Run(actx) }()
			defer func() { acancel(); <-done }()
			path := "/etc/ssl/certs"
			if strings.HasPrefix(tc.want, "rhel") {
				path = "/etc/pki/tls/certs"
			}
			ifs := ""
			if upInterface() {
				ifs = "yes"
			}
			want := fmt.Sprintf("%s cpus=%d mem=yes kernel=yes ifs=%s\n%s\n", tc.want, runtime.NumCPU(), ifs, path)
			waitFor(t, "facts rendered", 20*time.Second, func() bool { return readFile(root, "/etc/facts.txt") == want })
		})
	}
}

// upInterface reports whether the host has an interface up besides
// loopback (the agent reports only those).
func upInterface() bool {
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagUp != 0 && i.Flags&net.FlagLoopback == 0 {
			return true
		}
	}
	return false
}
