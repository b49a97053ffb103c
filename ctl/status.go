package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newStatusCommand(cf *connFlags) *cobra.Command {
	var (
		output  string
		watch   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [NODE]",
		Short: "Show how every node (or one node) stands with the desired state",
		Long: `status lists every node the coordinators know: its gossip liveness, the
generation it last applied, its phase (converged, applying, failed, pending
or unknown), its roles, its resource counts and errors; then the swarm
services hive manages, with their running/desired tasks, as the swarm's
initializing manager last reported them.

With NODE, it shows that node in detail, with the result of each resource of
its last run. Final reports (converged, failed) are stored through Raft and
every coordinator shows them. The "applying" phase (a run started) is kept
only by the coordinator the agent reported it to: another coordinator shows
that node as pending until its final report is committed.

With --watch, status follows the fleet (or NODE) live: the counts of the
nodes converged on the current generation, applying, failed and pending, a
bar redrawn in place on a terminal and one line per change otherwise (with
-o json, one JSON document per change). It waits on the coordinator for
each change (blocking status), without polling, until interrupted or
--timeout.`,
		Example: `  hivectl status
  hivectl status web-01
  hivectl status --watch
  hivectl status -o json | jq '.nodes[] | select(.phase == "failed") | .name'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			node := ""
			if len(args) == 1 {
				node = args[0]
			}
			if timeout < 0 || (timeout > 0 && !watch) {
				return fmt.Errorf("--timeout %v: only with --watch, and not negative", timeout)
			}
			if watch {
				return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
					return watchStatus(ctx, cmd, cf, c, node, output, timeout)
				})
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.GetStatus(cctx, &hivev1.GetStatusRequest{Node: node})
				if err != nil {
					return rpcError("status", err, false)
				}
				if node != "" && len(resp.GetNodes()) == 0 {
					return fmt.Errorf("status: no node named %q is known", node)
				}
				sj := statusToJSON(resp, node != "")
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), sj)
				}
				if node != "" {
					return writeNodeDetail(cmd.OutOrStdout(), sj, time.Now())
				}
				return writeStatusTable(cmd.OutOrStdout(), sj, time.Now())
			})
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the status live until interrupted (or --timeout)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --watch, stop after this long (exit 0; default: until interrupted)")
	addOutputFlag(cmd, &output)
	return cmd
}

// watchStatus follows status (of node, or of every node) with blocking
// calls and shows each change until ctx ends, Ctrl-C or timeout (when
// not 0): the phase counts on a live line, or each answer as JSON.
func watchStatus(ctx context.Context, cmd *cobra.Command, cf *connFlags, c *client.Conn, node, output string, timeout time.Duration) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	f := newStatusFollower(cf, c, node)
	defer f.close()
	out := cmd.OutOrStdout()
	line := newLiveLine(out)
	defer line.end()
	var shown []byte
	for {
		resp, err := f.next(ctx)
		if err != nil {
			if ctxOver(ctx) {
				return nil // interrupted or --timeout: the watch is over
			}
			return err
		}
		if node != "" && len(resp.GetNodes()) == 0 {
			return fmt.Errorf("status: no node named %q is known", node)
		}
		if output == outJSON {
			// One document per change (a wait that ended without one
			// prints nothing).
			doc, err := json.MarshalIndent(statusToJSON(resp, node != ""), "", "  ")
			if err != nil {
				return err
			}
			if !bytes.Equal(doc, shown) {
				if _, err := out.Write(append(doc, '\n')); err != nil {
					return err
				}
				shown = doc
			}
			continue
		}
		c := phaseCounts(resp)
		line.show(fmt.Sprintf("generation %d: %s", resp.GetGeneration(), c), c)
	}
}

// phaseCounts counts the nodes of a status answer by phase: unknown counts
// as pending.
func phaseCounts(resp *hivev1.GetStatusResponse) fleetCounts {
	var c fleetCounts
	for _, n := range resp.GetNodes() {
		switch n.GetPhase() {
		case hivev1.Phase_PHASE_CONVERGED:
			c.converged++
		case hivev1.Phase_PHASE_APPLYING:
			c.applying++
		case hivev1.Phase_PHASE_FAILED:
			c.failed++
		default:
			c.pending++
		}
	}
	return c
}

// statusJSON is the -o json form of hivectl status.
type statusJSON struct {
	Generation uint64     `json:"generation"`
	Server     string     `json:"server,omitempty"`
	RaftIndex  uint64     `json:"raft_index,omitempty"`
	Nodes      []nodeJSON `json:"nodes"`
}

type nodeJSON struct {
	Name              string            `json:"name"`
	Labels            map[string]string `json:"labels"`
	ReportedLabels    map[string]string `json:"reported_labels,omitempty"`
	Roles             []string          `json:"roles"`
	Addresses         []string          `json:"addresses"`
	Gossip            string            `json:"gossip"`
	AppliedGeneration uint64            `json:"applied_generation"`
	DesiredGeneration uint64            `json:"desired_generation"`
	Phase             string            `json:"phase"`
	LastReport        *time.Time        `json:"last_report"`
	AgentVersion      string            `json:"agent_version,omitempty"`
	DryRun            bool              `json:"dry_run,omitempty"`
	Resources         countsJSON        `json:"resources"`
	Errors            []string          `json:"errors"`
	Results           []resultJSON      `json:"results,omitempty"`
	// Health: "passing", "failing" or "none" (no checks, or no result
	// yet); health_since: when it became what it is.
	Health      string      `json:"health"`
	HealthSince *time.Time  `json:"health_since,omitempty"`
	Checks      []checkJSON `json:"checks,omitempty"`
	// Maintenance: set while the node is in maintenance (node_maintenance.go);
	// reboot: its entry in the reboot queue (node_reboot.go).
	Maintenance *maintenanceJSONT `json:"maintenance,omitempty"`
	Reboot      *rebootNodeJSON   `json:"reboot,omitempty"`
	// Swarm services the node manages (the swarm's initializer).
	Services []serviceJSON `json:"services,omitempty"`
}

type serviceJSON struct {
	Name        string `json:"name"`
	Running     uint32 `json:"running"`
	Desired     uint32 `json:"desired"`
	Image       string `json:"image,omitempty"`
	UpdateState string `json:"update_state,omitempty"`
}

type countsJSON struct {
	Total   uint32 `json:"total"`
	Changed uint32 `json:"changed"`
	Failed  uint32 `json:"failed"`
	Skipped uint32 `json:"skipped"`
	Planned uint32 `json:"planned"`
}

type resultJSON struct {
	Key        string  `json:"key"`
	Outcome    string  `json:"outcome"`
	DurationMS float64 `json:"duration_ms"`
	Message    string  `json:"message,omitempty"`
	Drift      bool    `json:"drift,omitempty"`
	// Cause of a change: "drift" (machine differed, site unchanged) or
	// "change" (the site changed).
	Cause string `json:"cause,omitempty"`
}

func statusToJSON(resp *hivev1.GetStatusResponse, withResults bool) statusJSON {
	out := statusJSON{
		Generation: resp.GetGeneration(),
		Server:     resp.GetServer(),
		RaftIndex:  resp.GetRaftIndex(),
		Nodes:      []nodeJSON{},
	}
	for _, n := range resp.GetNodes() {
		rc := n.GetResources()
		nj := nodeJSON{
			Name:              n.GetName(),
			Labels:            nonNilMap(n.GetLabels()),
			ReportedLabels:    n.GetReportedLabels(),
			Roles:             nonNilSlice(n.GetRoles()),
			Addresses:         nonNilSlice(n.GetAddresses()),
			Gossip:            gossipName(n.GetGossip()),
			AppliedGeneration: n.GetAppliedGeneration(),
			DesiredGeneration: n.GetDesiredGeneration(),
			Phase:             phaseName(n.GetPhase()),
			LastReport:        timeOrNil(n.GetLastReport()),
			AgentVersion:      n.GetAgentVersion(),
			DryRun:            n.GetDryRun(),
			Resources: countsJSON{
				Total: rc.GetTotal(), Changed: rc.GetChanged(), Failed: rc.GetFailed(),
				Skipped: rc.GetSkipped(), Planned: rc.GetPlanned(),
			},
			Errors: nonNilSlice(n.GetErrors()),
		}
		fillHealthJSON(&nj, n)
		nj.Maintenance = maintenanceJSON(n.GetMaintenance())
		if r := n.GetReboot(); r != nil {
			rj := rebootNodeOf(r)
			nj.Reboot = &rj
		}
		for _, sv := range n.GetServices() {
			nj.Services = append(nj.Services, serviceJSON{Name: sv.GetName(), Running: sv.GetRunning(), Desired: sv.GetDesired(), Image: sv.GetImage(), UpdateState: sv.GetUpdateState()})
		}
		if withResults {
			for _, r := range n.GetResults() {
				nj.Results = append(nj.Results, resultJSON{
					Key:        r.GetKey(),
					Outcome:    outcomeName(r.GetOutcome()),
					DurationMS: durationMS(r.GetDuration()),
					Message:    r.GetMessage(),
					Drift:      r.GetDrift(),
					Cause:      causeName(r.GetCause()),
				})
			}
		}
		out.Nodes = append(out.Nodes, nj)
	}
	return out
}

func durationMS(d *durationpb.Duration) float64 {
	if d == nil {
		return 0
	}
	return float64(d.AsDuration().Microseconds()) / 1000
}

// phaseCounts counts nodes per phase, in display order.
func phaseSummary(nodes []nodeJSON) string {
	counts := map[string]int{}
	for _, n := range nodes {
		counts[n.Phase]++
	}
	s := ""
	for _, p := range []string{"converged", "applying", "failed", "pending", "unknown"} {
		if counts[p] == 0 {
			continue
		}
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%d %s", counts[p], p)
	}
	return s
}

func resourcesString(c countsJSON) string {
	s := fmt.Sprintf("%d", c.Total)
	if c.Changed > 0 {
		s += fmt.Sprintf(", %d changed", c.Changed)
	}
	if c.Failed > 0 {
		s += fmt.Sprintf(", %d failed", c.Failed)
	}
	if c.Planned > 0 {
		s += fmt.Sprintf(", %d planned", c.Planned)
	}
	return s
}

func writeStatusTable(w io.Writer, s statusJSON, now time.Time) error {
	if len(s.Nodes) == 0 {
		fmt.Fprintf(w, "generation %d: no node has registered yet", s.Generation)
	} else {
		fmt.Fprintf(w, "generation %d: %d nodes, %s", s.Generation, len(s.Nodes), phaseSummary(s.Nodes))
	}
	if s.Server != "" {
		fmt.Fprintf(w, " (answered by %s at raft index %d)", esc(s.Server), s.RaftIndex)
	}
	fmt.Fprintln(w)
	if len(s.Nodes) == 0 {
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tGOSSIP\tPHASE\tHEALTH\tAPPLIED\tROLES\tRESOURCES\tLAST REPORT")
	for _, n := range s.Nodes {
		phase := n.Phase
		if n.DryRun {
			phase += " (dry run)"
		}
		phase += opsSuffix(n)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", esc(n.Name), n.Gossip, phase, healthCell(n), n.AppliedGeneration,
			listString(n.Roles), resourcesString(n.Resources), ago(n.LastReport, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeServices(w, s.Nodes); err != nil {
		return err
	}
	first := true
	for _, n := range s.Nodes {
		for _, e := range n.Errors {
			if first {
				fmt.Fprintln(w, "\nerrors:")
				first = false
			}
			fmt.Fprintf(w, "  %s: %s\n", esc(n.Name), esc(e))
		}
	}
	return nil
}

func writeNodeDetail(w io.Writer, s statusJSON, now time.Time) error {
	for i, n := range s.Nodes {
		if i > 0 {
			fmt.Fprintln(w)
		}
		tw := newTable(w)
		row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
		row("node", esc(n.Name))
		row("gossip", n.Gossip)
		phase := n.Phase
		if n.DryRun {
			phase += " (dry run)"
		}
		row("phase", phase)
		if m := n.Maintenance; m != nil {
			row("maintenance", fmt.Sprintf("since %s by %s: %s (keeps generation %d)", clock(&m.Since), esc(m.Author), esc(m.Reason), m.Generation))
		}
		if r := n.Reboot; r != nil {
			v := r.State
			if r.Message != "" {
				v += ": " + esc(r.Message)
			}
			row("reboot", v+" (requested by "+esc(r.RequestedBy)+")")
		}
		row("generation", fmt.Sprintf("applied %d, desired %d, current %d", n.AppliedGeneration, n.DesiredGeneration, s.Generation))
		row("roles", listString(n.Roles))
		row("labels", labelString(n.Labels))
		if len(n.ReportedLabels) > 0 {
			row("reported", labelString(n.ReportedLabels)+" (facts the agent reports; never matched)")
		}
		row("addresses", listString(n.Addresses))
		row("agent", orDash(n.AgentVersion))
		lr := ago(n.LastReport, now)
		if n.LastReport != nil {
			lr = clock(n.LastReport) + " (" + lr + ")"
		}
		row("last report", lr)
		row("resources", resourcesString(n.Resources))
		row("health", healthDetail(n, now))
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(n.Errors) > 0 {
			fmt.Fprintln(w, "errors:")
			for _, e := range n.Errors {
				fmt.Fprintf(w, "  %s\n", esc(e))
			}
		}
		if err := writeChecks(w, n, now); err != nil {
			return err
		}
		if err := writeServices(w, []nodeJSON{n}); err != nil {
			return err
		}
		if len(n.Results) > 0 {
			fmt.Fprintln(w)
			tw = newTable(w)
			fmt.Fprintln(tw, "RESOURCE\tOUTCOME\tTIME\tMESSAGE")
			for _, r := range n.Results {
				out := r.Outcome
				switch {
				case r.Cause != "":
					out += " (" + r.Cause + ")"
				case r.Drift:
					out += " (drift)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", esc(r.Key), out, fmtMS(r.DurationMS), orDash(oneLine(r.Message)))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeServices lists the swarm services the nodes report (the swarm's
// initializer reports them): running/desired tasks, image, update state.
func writeServices(w io.Writer, nodes []nodeJSON) error {
	var tw *tabwriter.Writer
	for _, n := range nodes {
		for _, sv := range n.Services {
			if tw == nil {
				fmt.Fprintln(w)
				tw = newTable(w)
				fmt.Fprintln(tw, "SERVICE\tTASKS\tIMAGE\tUPDATE\tREPORTED BY")
			}
			tasks := fmt.Sprintf("%d/%d", sv.Running, sv.Desired)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", esc(sv.Name), tasks, esc(orDash(sv.Image)), esc(orDash(sv.UpdateState)), esc(n.Name))
		}
	}
	if tw == nil {
		return nil
	}
	return tw.Flush()
}

func fmtMS(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	default:
		return d.Round(100 * time.Microsecond).String()
	}
}
