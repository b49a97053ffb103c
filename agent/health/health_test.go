package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func TestHTTP(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(code.Load()))
		w.Write([]byte("status: ok\n"))
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := HTTP(srv.URL, 0, "")(ctx); err != nil {
		t.Fatalf("200: %v", err)
	}
	if err := HTTP(srv.URL, 200, `^status: (ok|fine)`)(ctx); err != nil {
		t.Fatalf("body regexp: %v", err)
	}
	if err := HTTP(srv.URL, 200, "broken")(ctx); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("body mismatch: %v", err)
	}
	code.Store(500)
	if err := HTTP(srv.URL, 200, "")(ctx); err == nil || !strings.Contains(err.Error(), "status 500, want 200") {
		t.Fatalf("500: %v", err)
	}
	if err := HTTP(srv.URL, 500, "")(ctx); err != nil {
		t.Fatalf("500 wanted: %v", err)
	}
}

func TestHTTPTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := HTTP(srv.URL, 200, "")(ctx)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	if err := TCP(addr)(context.Background()); err != nil {
		t.Fatalf("open port: %v", err)
	}
	ln.Close()
	if err := TCP(addr)(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port: %v", err)
	}
}

func TestCommand(t *testing.T) {
	ctx := context.Background()
	if err := Command([]string{"true"})(ctx); err != nil {
		t.Fatalf("true: %v", err)
	}
	err := Command([]string{"sh", "-c", "echo first; echo 'it broke' >&2; exit 3"})(ctx)
	if err == nil || !strings.Contains(err.Error(), "exit status 3: it broke") {
		t.Fatalf("exit 3: %v", err)
	}
	// No shell: metacharacters are plain arguments.
	if err := Command([]string{"echo", "$(false)", ";", "false"})(ctx); err != nil {
		t.Fatalf("echo with metacharacters: %v", err)
	}
	if err := Command([]string{"/nonexistent/probe"})(ctx); err == nil {
		t.Fatal("missing program passed")
	}
	// A timeout kills the process group, children included, promptly.
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = Command([]string{"sh", "-c", "sleep 30 & sleep 30"})(tctx)
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout took %v", d)
	}
	// Output is bounded.
	err = Command([]string{"sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo tail-line; exit 1"})(ctx)
	if err == nil || !strings.HasSuffix(err.Error(), "tail-line") || len(err.Error()) > 300 {
		t.Fatalf("bounded output: %.300v", err)
	}
}

// TestThreshold: a check counts as failing only after its number of
// consecutive failures, passes again after one success, and OnChange fires
// on each change of state.
func TestThreshold(t *testing.T) {
	var fail atomic.Bool
	changes := make(chan struct{}, 100)
	c := New(Config{OnChange: func() { changes <- struct{}{} }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	c.Set([]Check{{Name: "web/x", Kind: "command", Interval: time.Hour, Timeout: time.Second, Failures: 3, Def: "1",
		Probe: func(context.Context) error {
			if fail.Load() {
				return errors.New("down")
			}
			return nil
		}}})
	waitHealth(t, c, hivev1.Health_HEALTH_PASSING)
	fail.Store(true)
	for i := 1; i <= 3; i++ {
		c.Kick()
		waitFailures(t, c, uint32(i))
		res, h := c.Results()
		want := hivev1.Health_HEALTH_PASSING
		if i == 3 {
			want = hivev1.Health_HEALTH_FAILING
		}
		if h != want || res[0].Passing != (i < 3) || res[0].Message != "down" {
			t.Fatalf("after %d failures: health %v, %v", i, h, res[0])
		}
	}
	fail.Store(false)
	c.Kick()
	waitHealth(t, c, hivev1.Health_HEALTH_PASSING)
	if n := len(changes); n < 3 {
		t.Fatalf("OnChange called %d times, want at least 3 (first result, failing, passing)", n)
	}
	// Removing the check forgets it.
	c.Set(nil)
	waitHealth(t, c, hivev1.Health_HEALTH_UNSPECIFIED)
	cancel()
	<-done
}

// TestTimeoutCounts: a probe that overruns its timeout is a failure.
func TestTimeoutCounts(t *testing.T) {
	c := New(Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	c.Set([]Check{FromSpec(&hivev1.HealthCheck{Role: "web", Name: "slow", IntervalMs: 1000, TimeoutMs: 100, Failures: 1,
		Kind: &hivev1.HealthCheck_Command{Command: &hivev1.CheckCommand{Argv: []string{"sleep", "5"}}}})})
	waitHealth(t, c, hivev1.Health_HEALTH_FAILING)
	res, _ := c.Results()
	if res[0].Name != "web/slow" || res[0].Kind != "command" || !strings.Contains(res[0].Message, "timed out") {
		t.Fatalf("result = %v", res[0])
	}
}

func waitHealth(t *testing.T, c *Checker, want hivev1.Health) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, h := c.Results(); h == want {
			return
		}
		if time.Now().After(deadline) {
			res, h := c.Results()
			t.Fatalf("health %v, want %v (%v)", h, want, res)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitFailures(t *testing.T, c *Checker, n uint32) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if res, _ := c.Results(); len(res) == 1 && res[0].Failures == n {
			return
		}
		if time.Now().After(deadline) {
			res, _ := c.Results()
			t.Fatalf("want %d failures: %v", n, res)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
