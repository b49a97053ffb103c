package site

import (
	"strings"
	"testing"
)

// TestFirewallSSHWarning: a drop input policy with no rule accepting
// 22/tcp, in the role or a role selected with it, is a warning (not an
// error), at the firewall.
func TestFirewallSSHWarning(t *testing.T) {
	const head = "site: w\nselectors:\n  - roles: [base, edge]\nroles:\n  base:\n    firewall:\n      policies: {input: drop}\n"
	for _, c := range []struct {
		name, tail string
		warn       bool
	}{
		{"no rule", "  edge: {}\n", true},
		{"established only and loopback", "      rules:\n        - states: [established, related]\n        - in_interface: lo\n  edge: {}\n", true},
		{"other port", "      rules:\n        - {ports: [80]}\n  edge: {}\n", true},
		{"udp 22", "      rules:\n        - {proto: udp, ports: [22]}\n  edge: {}\n", true},
		{"22 from a network", "      rules:\n        - {ports: [22], sources: [10.0.0.0/8]}\n  edge: {}\n", false},
		{"range", "      rules:\n        - {ports: [\"20:30\"]}\n  edge: {}\n", false},
		{"all ports", "      rules:\n        - {proto: all}\n  edge: {}\n", false},
		{"co-selected role", "  edge:\n    firewall:\n      rules:\n        - {ports: [22]}\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := Parse("w.yaml", []byte(head+c.tail))
			if err != nil {
				t.Fatal(err)
			}
			w := Warnings(s)
			if got := len(w) > 0; got != c.warn {
				t.Fatalf("warnings = %v, want warning %v", w, c.warn)
			}
			if c.warn && (w[0].Line != 7 || w[0].Col != 7 || !strings.Contains(w[0].Msg, "22/tcp")) {
				t.Errorf("warning %v, want at w.yaml:7:7 naming 22/tcp", w[0])
			}
		})
	}
}

// TestEmptySecretName: an empty secret name is refused where it is, by
// validate and by a push's Check.
func TestEmptySecretName(t *testing.T) {
	_, err := Parse("s.yaml", []byte("secrets: [ok, \"\"]\nroles: {a: {}}\n"))
	if err == nil || !strings.Contains(err.Error(), `s.yaml:1:15: secrets[1]: secret name must not be empty`) {
		t.Fatalf("err = %v", err)
	}
	s, err := Parse("s.yaml", []byte("secrets: [ok]\nroles: {a: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s.Secrets = append(s.Secrets, "")
	if err := Check(s); err == nil || !strings.Contains(err.Error(), "must not be empty") {
		t.Fatalf("Check = %v", err)
	}
}
