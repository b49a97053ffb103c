package ctl

import (
	"fmt"
	"io"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// checkJSON is one health check result in status -o json.
type checkJSON struct {
	Name     string     `json:"name"`
	Kind     string     `json:"kind"`
	Passing  bool       `json:"passing"`
	Failures uint32     `json:"failures,omitempty"`
	Message  string     `json:"message,omitempty"`
	Time     *time.Time `json:"time,omitempty"`
}

func healthName(h hivev1.Health) string {
	switch h {
	case hivev1.Health_HEALTH_PASSING:
		return "passing"
	case hivev1.Health_HEALTH_FAILING:
		return "failing"
	}
	return "none"
}

func causeName(c hivev1.Cause) string {
	switch c {
	case hivev1.Cause_CAUSE_DRIFT:
		return "drift"
	case hivev1.Cause_CAUSE_CHANGE:
		return "change"
	}
	return ""
}

func fillHealthJSON(nj *nodeJSON, n *hivev1.NodeStatus) {
	nj.Health = healthName(n.GetHealth())
	nj.HealthSince = timeOrNil(n.GetHealthSince())
	for _, c := range n.GetChecks() {
		nj.Checks = append(nj.Checks, checkJSON{
			Name: c.GetName(), Kind: c.GetKind(), Passing: c.GetPassing(), Failures: c.GetFailures(),
			Message: c.GetMessage(), Time: timeOrNil(c.GetTime()),
		})
	}
}

// healthCell is the HEALTH column: "passing", "FAILING (2/5)" or "-".
func healthCell(n nodeJSON) string {
	switch n.Health {
	case "passing":
		return "passing"
	case "failing":
		failing := 0
		for _, c := range n.Checks {
			if !c.Passing {
				failing++
			}
		}
		return fmt.Sprintf("FAILING (%d/%d)", failing, len(n.Checks))
	}
	return "-"
}

func healthDetail(n nodeJSON, now time.Time) string {
	s := healthCell(n)
	if n.Health == "none" {
		s = "no checks"
	}
	if n.HealthSince != nil {
		s += " since " + clock(n.HealthSince) + " (" + ago(n.HealthSince, now) + ")"
	}
	return s
}

// writeChecks lists a node's checks, failing first.
func writeChecks(w io.Writer, n nodeJSON, now time.Time) error {
	if len(n.Checks) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "CHECK\tKIND\tSTATE\tFAILURES\tLAST RUN\tMESSAGE")
	for _, failingPass := range []bool{false, true} {
		for _, c := range n.Checks {
			if c.Passing != failingPass {
				continue
			}
			state := "passing"
			if !c.Passing {
				state = "FAILING"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", esc(c.Name), esc(c.Kind), state, c.Failures, ago(c.Time, now), orDash(oneLine(c.Message)))
		}
	}
	return tw.Flush()
}
