package netlabtests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"
)

// rolloutState is what the scenarios read of `hivectl rollout status -o
// json`.
type rolloutState struct {
	Generation uint64 `json:"generation"`
	State      string `json:"state"`
	Reason     string `json:"reason"`
	Opened     int    `json:"opened_waves"`
	Waves      []struct {
		Nodes  []string   `json:"nodes"`
		Opened *time.Time `json:"opened"`
	} `json:"waves"`
	Nodes []struct {
		Name             string `json:"name"`
		Wave             int    `json:"wave"`
		TargetGeneration uint64 `json:"target_generation"`
	} `json:"nodes"`
}

func (c *cluster) rollout(ctx context.Context) (*rolloutState, error) {
	out, err := c.ctl(ctx, "rollout", "status", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("rollout status: %w: %s", err, out)
	}
	var r rolloutState
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("decode rollout status: %w: %s", err, out)
	}
	return &r, nil
}

// waitRollout polls rollout status until cond holds.
func (c *cluster) waitRollout(timeout time.Duration, what string, cond func(r *rolloutState) bool) *rolloutState {
	c.t.Helper()
	var last *rolloutState
	var lastErr error
	if !poll(timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		last, lastErr = c.rollout(ctx)
		return lastErr == nil && cond(last)
	}) {
		c.t.Fatalf("rollout: %s not reached after %v: last %s (error %v)", what, timeout, dump(last), lastErr)
	}
	return last
}

// pushFile writes site to a file and runs hivectl push with extra flags.
func (c *cluster) pushFlags(site string, flags ...string) ([]byte, error) {
	f, err := os.CreateTemp(c.dir, "site-*.yaml")
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(site); err != nil {
		return nil, err
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	return c.ctl(ctx, append([]string{"push", f.Name(), "-o", "json", "-m", "netlab"}, flags...)...)
}

// TestRolloutWavesSurviveLeaderKill (issue 14): a rollout over 10 real
// agents in waves of 3 completes although the coordinator leader is
// killed -9 between two waves. Nodes of closed waves keep the previous
// generation's files until their wave opens; the new leader carries the
// rollout on from the raft state.
func TestRolloutWavesSurviveLeaderKill(t *testing.T) {
	c := newCluster(t, clusterConfig{coordinators: 3, agents: 10})
	const files = 2
	g1 := c.push(siteFiles("1", files), true)
	c.waitConverged(g1, 60*time.Second, c.agents...)

	out, err := c.pushFlags(siteFiles("2", files), "--max-parallel", "3", "--min-healthy-time", "2s")
	if err != nil {
		t.Fatalf("push: %v\n%s", err, out)
	}
	g2, err := pushGeneration(out)
	if err != nil {
		t.Fatal(err)
	}
	r := c.waitRollout(30*time.Second, "wave 2 open", func(r *rolloutState) bool { return r.Generation == g2 && r.Opened >= 2 })
	if len(r.Waves) != 4 || len(r.Waves[0].Nodes) != 3 || len(r.Waves[3].Nodes) != 1 {
		t.Fatalf("waves: %s", dump(r.Waves))
	}
	byName := map[string]*node{}
	for _, a := range c.agents {
		byName[a.name] = a
	}
	// Wave 3 and 4 nodes still hold version 1 while wave 2 is open.
	if r.Opened == 2 {
		for _, w := range r.Waves[2:] {
			for _, name := range w.Nodes {
				if a := byName[name]; a.hasVersion("2", files) {
					t.Errorf("%s (wave 3 or 4) has version 2 while only wave 2 is open", name)
				}
			}
		}
	}
	l := c.stableLeader()
	killed := time.Now()
	l.proc.Kill()
	t.Logf("killed leader %s with %d of %d waves open", l.name, r.Opened, len(r.Waves))
	time.Sleep(time.Second)
	l.proc.Restart()

	done := c.waitRollout(60*time.Second, "completed", func(r *rolloutState) bool { return r.Generation == g2 && r.State == "completed" })
	t.Logf("rollout completed %v after the kill", time.Since(killed).Round(time.Millisecond))
	for i := 1; i < len(done.Waves); i++ {
		if done.Waves[i].Opened == nil || done.Waves[i-1].Opened == nil || done.Waves[i].Opened.Sub(*done.Waves[i-1].Opened) < 2*time.Second {
			t.Errorf("wave %d opened less than min_healthy_time after wave %d: %s", i+1, i, dump(done.Waves))
		}
	}
	c.waitConverged(g2, 30*time.Second, c.agents...)
	for _, a := range c.agents {
		c.waitFiles(a, "2", files, 10*time.Second)
	}
}
