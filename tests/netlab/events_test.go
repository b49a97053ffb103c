package netlabtests

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hivefleet/hive/internal/netlab"
)

// listenIn opens a TCP listener inside h's network namespace from the
// test process: the socket is created on a thread moved into the
// namespace and keeps belonging to it after the thread moves back, so an
// httptest server in this process serves the lab's hosts.
func listenIn(t *testing.T, h *netlab.Host) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked if moving back fails: the thread then dies with the goroutine
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", h.NS))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer target.Close()
		if err := setns(target, syscall.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		ln, lerr := net.Listen("tcp", h.Addr+":0")
		if err := setns(orig, syscall.CLONE_NEWNET); err != nil {
			if ln != nil {
				ln.Close()
			}
			ch <- result{err: fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{ln: ln, err: lerr}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in %s: %v", h, r.err)
	}
	return r.ln
}

// setns moves the calling thread into the namespace of f.
func setns(f *os.File, kind int) error {
	return unix.Setns(int(f.Fd()), kind)
}

// hookDelivery is one webhook POST the receiver accepted.
type hookDelivery struct {
	ID, Kind, Node, Summary string
	Fields                  map[string]string
	RaftIndex               uint64 `json:"raft_index"`
	Coordinator             string
	SignatureOK             bool
}

// streamedEvent is one line of `hivectl events -o json`.
type streamedEvent struct {
	Kind    string            `json:"kind"`
	Node    string            `json:"node"`
	Summary string            `json:"summary"`
	Fields  map[string]string `json:"fields"`
	Index   uint64            `json:"raft_index"`
}

// `hivectl events --follow` shows a push's rollout from its start (the
// push, rollout.started with the canary wave open) through each wave
// opening and turning healthy and every agent converging, to its end
// (rollout.completed and generation.converged); a webhook receiver of the
// site, an httptest server on the admin host, gets the same events, signed
// with the secret the site names (the receiver checks the HMAC).
func TestEventsFollowPushAndWebhook(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 3, agents: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	key := "netlab-webhook-signing-key"
	var mu sync.Mutex
	var hooks []hookDelivery
	ln := listenIn(t, c.admin)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := hmac.New(sha256.New, []byte(key))
		m.Write(body)
		var d hookDelivery
		if err := json.Unmarshal(body, &d); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d.SignatureOK = hmac.Equal([]byte(r.Header.Get("X-Hive-Signature")), []byte("sha256="+hex.EncodeToString(m.Sum(nil))))
		mu.Lock()
		hooks = append(hooks, d)
		mu.Unlock()
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	// Every agent registered (watched) before the push, so that the
	// generation's end is all three converging.
	if !poll(30*time.Second, func() bool {
		st, err := c.status(ctx)
		if err != nil {
			return false
		}
		for _, a := range c.agents {
			if st.node(a.name) == nil {
				return false
			}
		}
		return true
	}) {
		t.Fatal("agents not registered")
	}
	if out, err := c.ctlIn(ctx, key, "secret", "set", "hook-key"); err != nil {
		t.Fatalf("secret set: %v\n%s", err, out)
	}

	// The follower, started before the push.
	argv := []string{c.bin["hivectl"], "events", "--follow", "-o", "json", "--kind", "push", "--kind", "rollout.", "--kind", "node.phase", "--kind", "generation.converged",
		"--addr", c.coords[1].host.Addr + ":" + grpcPort,
		"--ca", filepath.Join(c.pki, "ca.pem"), "--cert", filepath.Join(c.pki, "admin.pem"), "--key", filepath.Join(c.pki, "admin-key.pem")}
	fctx, fcancel := context.WithCancel(ctx)
	defer fcancel()
	follow := c.admin.Command(fctx, argv...)
	follow.WaitDelay = 2 * time.Second
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	follow.Stderr = &stderr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	var streamed []streamedEvent
	lines := make(chan streamedEvent, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e streamedEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("events line %q: %v", sc.Text(), err)
				continue
			}
			lines <- e
		}
	}()
	// Let the stream open before the push (an empty history first).
	time.Sleep(500 * time.Millisecond)

	hookURL := "http://" + ln.Addr().String() + "/hive"
	// Waves: the canary (a1), then a2 and a3.
	site := siteFiles("1", 2) + "rollout:\n  canary: 1\n  max_parallel: 2\n  min_healthy_time: 1s\n" +
		fmt.Sprintf("secrets: [hook-key]\nwebhooks:\n  - url: %s\n    events: [push, rollout., node.phase, generation.converged]\n    secret: hook-key\n", hookURL)
	start := time.Now()
	gen := c.push(site, false)

	done, completed, genConverged := false, false, false
	for !done {
		select {
		case e, ok := <-lines:
			if !ok {
				t.Fatalf("hivectl events ended: %s", stderr.String())
			}
			if len(streamed) == 0 && e.Kind != "push" {
				continue // agents' reports from before the push
			}
			streamed = append(streamed, e)
			genConverged = genConverged || e.Kind == "generation.converged" && e.Fields["generation"] == fmt.Sprint(gen)
			completed = completed || e.Kind == "rollout.completed" && e.Fields["generation"] == fmt.Sprint(gen)
			done = genConverged && completed
		case <-ctx.Done():
			t.Fatalf("no generation.converged and rollout.completed events for generation %d; streamed %s; stderr %s", gen, dump(streamed), stderr.String())
		}
	}
	t.Logf("push to the rollout's end on the stream: %v", time.Since(start).Round(time.Millisecond))
	fcancel()

	// Start, the waves, every agent, end.
	if streamed[0].Kind != "push" || streamed[0].Fields["generation"] != fmt.Sprint(gen) || !strings.Contains(streamed[0].Summary, "pushed by admin") {
		t.Fatalf("first event is not the push: %s", dump(streamed))
	}
	var rollout []string
	converged := map[string]bool{}
	for _, e := range streamed[1:] {
		switch {
		case strings.HasPrefix(e.Kind, "rollout."):
			if e.Fields["generation"] != fmt.Sprint(gen) {
				t.Errorf("rollout event of another generation: %s", dump(e))
			}
			rollout = append(rollout, e.Kind+" "+e.Fields["wave"])
		case e.Kind == "node.phase":
			if e.Fields["phase"] == "converged" && e.Fields["generation"] == fmt.Sprint(gen) {
				converged[e.Node] = true
			}
		case e.Kind == "generation.converged":
			if e.Fields["nodes"] != fmt.Sprint(len(c.agents)) {
				t.Errorf("end event: %s", dump(e))
			}
		default:
			t.Errorf("unexpected event between push and end: %s", dump(e))
		}
	}
	want := "rollout.started |rollout.wave_opened 1|rollout.wave_healthy 1|rollout.wave_opened 2|rollout.wave_healthy 2|rollout.completed "
	if got := strings.Join(rollout, "|"); got != want {
		t.Errorf("rollout events:\n%s\nwant\n%s", got, want)
	}
	for _, a := range c.agents {
		if !converged[a.name] {
			t.Errorf("no converged event of %s: %s", a.name, dump(streamed))
		}
	}

	// The webhook got the same events (one delivery each, from the
	// leader), signed.
	var got []hookDelivery
	if !poll(20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		got = append([]hookDelivery(nil), hooks...)
		return len(got) >= len(streamed)
	}) {
		t.Fatalf("webhook got %d deliveries, want %d: %s", len(got), len(streamed), dump(got))
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	mu.Lock()
	got = append([]hookDelivery(nil), hooks...)
	mu.Unlock()
	if len(got) != len(streamed) {
		t.Fatalf("webhook got %d deliveries, the stream %d: %s vs %s", len(got), len(streamed), dump(got), dump(streamed))
	}
	for i, d := range got {
		e := streamed[i]
		if !d.SignatureOK || d.Kind != e.Kind || d.Node != e.Node || d.Summary != e.Summary || d.RaftIndex != e.Index || d.ID == "" {
			t.Errorf("delivery %d = %s, stream event %s", i, dump(d), dump(e))
		}
	}

	// The push is in the audit log with the admin's identity.
	out, err := c.ctl(ctx, "audit", "-o", "json")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	var audit []struct{ Identity, Command, RPC string }
	if err := json.Unmarshal(out, &audit); err != nil {
		t.Fatalf("audit json: %v\n%s", err, out)
	}
	wantAudit := map[string]bool{"secret_set": false, "rollout_push": false}
	for _, a := range audit {
		if _, ok := wantAudit[a.Command]; ok && a.Identity == "admin:admin" {
			wantAudit[a.Command] = true
		}
	}
	if !wantAudit["secret_set"] || !wantAudit["rollout_push"] {
		t.Errorf("audit log lacks the admin's writes: %s", out)
	}
}
