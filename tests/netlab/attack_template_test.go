package netlabtests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// runaway is a template like that of issue 11 finding 7, which kept
// hive-agent at 100% CPU for good, deaf to newer generations and to
// SIGTERM. Validate now refuses a literal range over the iteration limit
// (range 1000000000000000), so this one nests two that are within it.
const runaway = `{{ range 1000000 }}{{ range 1000000 }}{{ end }}{{ end }}`

// siteRunaway is siteFiles with n more files whose template never ends.
func siteRunaway(v string, files, runaways int) string {
	var b strings.Builder
	b.WriteString(siteFiles(v, files))
	for i := 0; i < runaways; i++ {
		fmt.Fprintf(&b, "      - path: /srv/netlab/runaway-%03d\n        template: true\n        content: %q\n", i, runaway)
	}
	return b.String()
}

// A runaway file template is reported as a failure naming the limit; a
// run stuck rendering many of them is superseded by the next generation
// within the stop grace; and SIGTERM ends the agent within the grace. The
// real hive-agent binary, pushed to through real coordinators.
func TestAttackRunawayTemplate(t *testing.T) {
	const grace = 2 * time.Second
	c := newCluster(t, clusterConfig{coordinators: 1, agents: 1, interval: time.Hour, agentFlags: []string{"--stop-grace", grace.String()}})
	a := c.agents[0]

	// 1. One runaway template: the run fails, naming the limit; the other
	// file is written.
	g1 := c.push(siteRunaway("1", 1, 1), false)
	st := c.waitPhase(a, g1, "failed", 60*time.Second)
	if n := st.node(a.name); !strings.Contains(strings.Join(n.Errors, "\n"), "limit") {
		t.Fatalf("failure does not name the limit: %s", dump(n))
	}
	t.Logf("generation %d: %s", g1, strings.Join(st.node(a.name).Errors, "; "))
	c.waitFiles(a, "1", 1, 5*time.Second)

	// 2. A run stuck on 60 runaway templates (each stops at its limit,
	// together they take most of a minute) is superseded by a newer
	// generation within the stop grace, not at its end.
	g2 := c.push(siteRunaway("2", 1, 60), false)
	c.waitPhase(a, g2, "applying", 30*time.Second)
	pushed := time.Now()
	g3 := c.push(siteFiles("3", 1), false)
	c.waitConverged(g3, 20*time.Second, a)
	t.Logf("generation %d converged %v after it was pushed over a stuck run of generation %d", g3, time.Since(pushed).Round(time.Millisecond), g2)

	// 3. SIGTERM during such a run: the agent exits within the grace (and
	// a little for the report and shutdown).
	g4 := c.push(siteRunaway("4", 1, 60), false)
	c.waitPhase(a, g4, "applying", 30*time.Second)
	time.Sleep(500 * time.Millisecond) // well inside the rendering
	start := time.Now()
	if err := a.proc.Stop(grace + 5*time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	took := time.Since(start)
	t.Logf("agent exited %v after SIGTERM (grace %v)", took.Round(time.Millisecond), grace)
	if took > grace+3*time.Second {
		t.Errorf("agent took %v to exit after SIGTERM; grace is %v", took, grace)
	}
}

// waitPhase waits until status shows agent a on generation gen in phase.
func (c *cluster) waitPhase(a *node, gen uint64, phase string, timeout time.Duration) *siteStatus {
	c.t.Helper()
	var last *siteStatus
	ok := poll(timeout, func() bool {
		c.mustRun(a)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := c.status(ctx)
		if err != nil {
			return false
		}
		last = s
		n := s.node(a.name)
		return n != nil && n.AppliedGeneration == gen && n.Phase == phase
	})
	if !ok {
		c.t.Fatalf("%s not %s on generation %d after %v: %s", a.name, phase, gen, timeout, dump(last))
	}
	return last
}
