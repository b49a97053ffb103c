package ctl

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/coordinator/ui/uitoken"
	"github.com/hivefleet/hive/pki"
	"github.com/hivefleet/hive/pki/pkitest"
)

// TestDashboardToken: `hivectl dashboard token` signs a token the
// coordinators accept, with the ttl asked for; bad flags are refused.
func TestDashboardToken(t *testing.T) {
	d := pkitest.New(t)
	f := d.Issue(pki.KindAdmin, "alice")
	run := func(args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		code := Main(args, strings.NewReader(""), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	out, stderr, code := run("dashboard", "token", "--ttl", "30m", "--ca", f.CA, "--cert", f.Cert, "--key", f.Key, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var r struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	roots, err := pki.LoadCertPool(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	id, exp, err := uitoken.Verify(r.Token, roots, time.Now())
	if err != nil || id.Name != "alice" || !exp.Equal(r.Expires) {
		t.Fatalf("verify: %v %v %v", id, exp, err)
	}
	if d := time.Until(exp); d < 29*time.Minute || d > 31*time.Minute {
		t.Errorf("expires in %v, want 30m", d)
	}
	out, stderr, code = run("dashboard", "token", "--ca", f.CA, "--cert", f.Cert, "--key", f.Key)
	if code != 0 || !strings.HasPrefix(out, "hdt1.") || !strings.Contains(stderr, "admin:alice") {
		t.Errorf("table output: %d %q %q", code, out, stderr)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ttl", "200h", "--cert", f.Cert, "--key", f.Key}, "--ttl 200h0m0s: must be between"},
		{[]string{"--dev"}, "give --cert and --key"},
		{[]string{"--cert", f.Cert, "--key", f.Cert, "--ca", f.CA}, "load certificate"},
	} {
		_, stderr, code := run(append([]string{"dashboard", "token"}, c.args...)...)
		if code == 0 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, %q; want %q", c.args, code, stderr, c.want)
		}
	}
}
