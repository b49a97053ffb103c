package netlabtests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPushWhileLeaderKilled (issue 12): hivectl pushes back to back with
// the three coordinators as --addr, the raft leader first (the one it
// talks to), while the leader is killed -9 at a random moment and
// restarted from its disk, again and again. Every push must succeed, or
// fail with a clear error (never a raw "error reading from server: EOF":
// another address would have answered); every acknowledged generation is
// on every coordinator with the push's message; no push appears twice in
// the history (a push sent again after the connection was lost is applied
// at most once). Before the fix 7 of 438 pushes failed with the raw EOF or
// "connection reset" over 20 kills (1 in 400 in the field).
func TestPushWhileLeaderKilled(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 3})
	const kills = 20
	// Where the kernel has netem, 10 ms on every coordinator's link: a
	// push's raft round and answer take long enough for more kills to
	// land inside the call.
	for _, n := range c.coords {
		if err := n.host.Netem("delay", "10ms"); err != nil {
			t.Logf("no added delay: %v", err)
			break
		}
	}
	started := make(chan time.Time, 1) // a push began

	var mu sync.Mutex
	order := c.addrOrder(c.stableLeader())
	stop := make(chan struct{})
	type result struct {
		i      int
		gen    uint64
		err    error
		stderr string
		took   time.Duration
	}
	var results []result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			addrs := order
			mu.Unlock()
			select {
			case started <- time.Now():
			default:
			}
			t0 := time.Now()
			gen, stderr, err := c.pushVia(addrs, siteFiles(fmt.Sprint("p", i), 1), fmt.Sprint("push-", i))
			mu.Lock()
			results = append(results, result{i: i, gen: gen, err: err, stderr: stderr, took: time.Since(t0)})
			mu.Unlock()
		}
	}()

	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		l := c.stableLeader()
		// Kill at a random moment of the next push (they take about
		// 100-200 ms here: dial, read of the base, push).
		select {
		case <-started:
		default:
		}
		<-started
		time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
		l.proc.Kill()
		time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
		l.proc.Restart()
		c.waitLeader(60 * time.Second)
		nl := c.stableLeader()
		mu.Lock()
		order = c.addrOrder(nl)
		mu.Unlock()
		t.Logf("kill %d: %s killed and restarted; leader now %s", k, l.name, nl.name)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()

	acked := map[uint64]string{} // generation -> message
	var failed, movedOn, confirmed int
	var took time.Duration
	for _, r := range results {
		took += r.took
		if strings.Contains(r.stderr, "moved on to") {
			movedOn++
		}
		if strings.Contains(r.stderr, "was applied before the connection was lost") {
			confirmed++
		}
		if r.err != nil {
			failed++
			msg := r.err.Error()
			if strings.Contains(msg, "error reading from server") && !strings.Contains(msg, "no coordinator completed") && !strings.Contains(msg, "may or may not") {
				t.Errorf("push-%d failed with a raw transport error: %v", r.i, r.err)
			} else {
				t.Logf("push-%d failed (clear error): %v", r.i, r.err)
			}
			continue
		}
		if prev, dup := acked[r.gen]; dup {
			t.Errorf("generation %d acknowledged to push-%d and %s", r.gen, r.i, prev)
		}
		acked[r.gen] = fmt.Sprint("push-", r.i)
	}
	t.Logf("%d pushes (%v each on average), %d kills: %d failed, %d moved on to another coordinator mid-command, %d confirmed as applied after the connection was lost",
		len(results), (took / time.Duration(len(results))).Round(time.Millisecond), kills, failed, movedOn, confirmed)
	if len(acked) < kills {
		t.Fatalf("only %d pushes acknowledged", len(acked))
	}

	// Every coordinator: each acknowledged generation with its push's
	// message, and no push twice.
	var current uint64
	for g := range acked {
		current = max(current, g)
	}
	for _, n := range c.coords {
		var h struct {
			Current     uint64 `json:"current"`
			Generations []struct {
				Number  uint64 `json:"number"`
				Message string `json:"message"`
			} `json:"generations"`
		}
		ok := poll(30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := c.ctlVia(ctx, []string{n.host.Addr + ":" + grpcPort}, "history", "-n", "0", "-o", "json")
			if err != nil {
				return false
			}
			return json.Unmarshal(out, &h) == nil && h.Current >= current
		})
		if !ok {
			t.Fatalf("%s: history does not reach generation %d (%d)", n.name, current, h.Current)
		}
		seen := map[string]uint64{}
		byGen := map[uint64]string{}
		for _, g := range h.Generations {
			if prev, dup := seen[g.Message]; dup {
				t.Errorf("%s: %s is generation %d and %d (applied twice)", n.name, g.Message, prev, g.Number)
			}
			seen[g.Message] = g.Number
			byGen[g.Number] = g.Message
		}
		for g, msg := range acked {
			if byGen[g] != msg {
				t.Errorf("%s: acknowledged generation %d (%s) holds %q", n.name, g, msg, byGen[g])
			}
		}
	}
}

// addrOrder returns the coordinators' gRPC addresses with first's first.
func (c *cluster) addrOrder(first *node) []string {
	out := []string{first.host.Addr + ":" + grpcPort}
	for _, n := range c.coords {
		if n != first {
			out = append(out, n.host.Addr+":"+grpcPort)
		}
	}
	return out
}

// ctlVia runs hivectl on the admin host with the given --addr list.
func (c *cluster) ctlVia(ctx context.Context, addrs []string, args ...string) ([]byte, error) {
	argv := append([]string{c.bin["hivectl"]}, args...)
	for _, a := range addrs {
		argv = append(argv, "--addr", a)
	}
	argv = append(argv,
		"--ca", filepath.Join(c.pki, "ca.pem"),
		"--cert", filepath.Join(c.pki, "admin.pem"),
		"--key", filepath.Join(c.pki, "admin-key.pem"))
	return c.admin.Run(ctx, argv...)
}

// pushVia pushes site with message msg through addrs; it returns the
// acknowledged generation and hivectl's standard error.
func (c *cluster) pushVia(addrs []string, site, msg string) (uint64, string, error) {
	f, err := os.CreateTemp(c.dir, "site-*.yaml")
	if err != nil {
		return 0, "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(site); err != nil {
		f.Close()
		return 0, "", err
	}
	if err := f.Close(); err != nil {
		return 0, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	argv := []string{c.bin["hivectl"], "push", f.Name(), "-o", "json", "-m", msg}
	for _, a := range addrs {
		argv = append(argv, "--addr", a)
	}
	argv = append(argv,
		"--ca", filepath.Join(c.pki, "ca.pem"),
		"--cert", filepath.Join(c.pki, "admin.pem"),
		"--key", filepath.Join(c.pki, "admin-key.pem"))
	var stdout, stderr strings.Builder
	cmd := c.admin.Command(ctx, argv...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return 0, stderr.String(), fmt.Errorf("%s: %w: %s", msg, err, strings.TrimSpace(stderr.String()))
	}
	gen, err := pushGeneration([]byte(stdout.String()))
	return gen, stderr.String(), err
}

// stableLeader waits (up to 30s) until hivectl members shows one leader
// and returns it.
func (c *cluster) stableLeader() *node {
	c.t.Helper()
	var l *node
	var last string
	ok := poll(30*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, err := c.members(ctx)
		if err != nil {
			last = err.Error()
			return false
		}
		l = nil
		for _, m := range ms {
			for _, n := range c.coords {
				if m.Name == n.name && m.Raft == "leader" {
					l = n
				}
			}
		}
		last = fmt.Sprintf("%+v", ms)
		return l != nil
	})
	if !ok {
		c.t.Fatalf("no leader: %s", last)
	}
	return l
}
