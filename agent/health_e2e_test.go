package agent_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// TestHealthReportedOnChange: an agent runs its role's http check and,
// when the service starts answering 500, the coordinator's status shows
// the node FAILING (with health_since) within about a second of the
// check counting as failing, long before the agent's next run (an hour).
func TestHealthReportedOnChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	var broken atomic.Bool
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	defer svc.Close()

	co := startCoordinator(t, t.TempDir(), "127.0.0.1:0", "127.0.0.1:0")
	addr := co.srv.GRPCAddr()
	text := fmt.Sprintf(`site: health
selectors:
  - roles: [web]
roles:
  web:
    packages: [chrony]
    checks:
      - name: home
        http: {url: %q, body: "^ok"}
        interval: 1s
        timeout: 500ms
        failures: 2
`, svc.URL)
	s, err := site.Parse("health.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, client.Config{Addrs: []string{addr}, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Push(ctx, &hivev1.PushRequest{Site: s, Force: true}); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, t.TempDir())
	cfg.Name = "web-1"
	cfg.Coordinators = []string{addr}
	_, _ = startAgent(t, cfg, &fakeEngine{}, nil)

	var st *hivev1.NodeStatus
	waitFor(t, "the check passing in status", 20*time.Second, func() bool {
		st = nodeStatus(t, addr, "web-1")
		return st.GetHealth() == hivev1.Health_HEALTH_PASSING && len(st.GetChecks()) == 1
	})
	if c := st.GetChecks()[0]; c.GetName() != "web/home" || c.GetKind() != "http" || !c.GetPassing() {
		t.Fatalf("check = %v", c)
	}
	since := st.GetHealthSince().AsTime()

	broken.Store(true)
	waitFor(t, "the check failing in status", 10*time.Second, func() bool {
		st = nodeStatus(t, addr, "web-1")
		return st.GetHealth() == hivev1.Health_HEALTH_FAILING
	})
	seen := time.Now()
	c := st.GetChecks()[0]
	if c.GetPassing() || c.GetFailures() < 2 || c.GetMessage() == "" || !st.GetHealthSince().AsTime().After(since) {
		t.Fatalf("failing status = %v", st)
	}
	lag := seen.Sub(c.GetTime().AsTime())
	t.Logf("check counted failing → status FAILING: %v (%s)", lag.Round(time.Millisecond), c.GetMessage())
	if lag > 2*time.Second {
		t.Errorf("status showed the failing check %v after it counted; want within 2s", lag)
	}
}
