package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func init() {
	registerNodeSubcommand("reboot", newNodeRebootCommand)
}

func newNodeRebootCommand(cf *connFlags) *cobra.Command {
	var (
		role, reason, output string
		all, showStatus      bool
		cancelQueue, wait    bool
		dryRun               bool
		maxParallel          uint32
		timeout              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "reboot NODE... | --role ROLE | --all | --status | --cancel",
		Short: "Reboot nodes one lock-holder at a time: DRBD peers and swarm manager majorities never go down together",
		Long: `reboot queues nodes for a coordinated reboot. The queue and the fleet
reboot lock live in raft, so a new leader carries on where the old one was.
The leader lets a queued node take the lock when fewer than --max-parallel
nodes hold it, none of them is a DRBD peer of the node, and the swarm
managers keep a majority (the rollout planner's rules). Per node:

  draining     its swarm node is drained (tasks move away)
  rebooting    its agent made its DRBD resources secondary and ran
               'systemctl reboot' (or its --reboot-command hook)
  recovering   the agent is back (a new boot id); waiting for a report
               converged on its target with every check passing: DRBD
               UpToDate (builtin/drbd), swarm Ready (builtin/swarm), the
               role's checks
  done         the swarm node is undrained and the lock released

A node not healthy within 15 minutes of the order fails: the lock is
released and the queue halts until 'hivectl node reboot --cancel'.
--role and --all skip nodes in maintenance (named nodes are rebooted even
then). A resource that notifies "reboot" (a kernel package) queues its node
by itself.

--dry-run plans first and queues nothing: the coordinator resolves the
selection as a real start would (the same errors, the same nodes skipped)
and answers the waves the queue would run, under the same rules, counting
the nodes already holding the lock or queued: one line per wave, then why
each later node waits (a DRBD peer in the wave before, the swarm managers'
majority, --max-parallel), then the nodes skipped. A wave assumes the one
before is done; the queue itself lets a node take the lock as soon as one
holder is done, never against the rules. Any coordinator answers a dry run
from its own state (a follower's may be a moment behind the leader's).

--status (also the default output) shows the queue; with --wait the command
follows the queue until no node is queued or holds the lock. Queueing,
cancelling and dry runs need an admin certificate.`,
		Example: `  hivectl node reboot db-01
  hivectl node reboot --role db --dry-run
  hivectl node reboot --role db --wait
  hivectl node reboot --all --max-parallel 5 --reason "kernel 6.1.0-30"
  hivectl node reboot --all --max-parallel 5 --dry-run -o json
  hivectl node reboot --status`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			sel := 0
			for _, b := range []bool{len(args) > 0, role != "", all, showStatus, cancelQueue} {
				if b {
					sel++
				}
			}
			if sel != 1 {
				return errors.New("give nodes, --role, --all, --status or --cancel (exactly one)")
			}
			if dryRun && (showStatus || cancelQueue || wait) {
				return errors.New("--dry-run plans a reboot of nodes, --role or --all and queues nothing: it cannot go with --status, --cancel or --wait")
			}
			for _, n := range args {
				if err := pki.ValidateName(n); err != nil {
					return err
				}
			}
			if timeout < 0 || (timeout > 0 && !wait) {
				return fmt.Errorf("--timeout %v: only with --wait, and not negative", timeout)
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				out := cmd.OutOrStdout()
				var q *hivev1.RebootQueue
				cctx, cancel := callCtx(ctx)
				defer cancel()
				switch {
				case showStatus:
					resp, err := c.RebootStatus(cctx, &hivev1.RebootStatusRequest{})
					if err != nil {
						return rpcError("reboot status", err, false)
					}
					q = resp.GetQueue()
				case cancelQueue:
					resp, err := c.RebootCancel(cctx, &hivev1.RebootCancelRequest{})
					if err != nil {
						return rpcError("cancel reboots", err, true)
					}
					q = resp.GetQueue()
				case dryRun:
					if err := checkDryRunKnown(cctx, c); err != nil {
						return err
					}
					resp, err := c.RebootStart(cctx, &hivev1.RebootStartRequest{Nodes: args, Role: role, All: all, MaxParallel: maxParallel, Reason: reason, DryRun: true})
					if err != nil {
						return rpcError("reboot dry run", err, false)
					}
					if len(resp.GetWaves()) == 0 {
						// A dry run's queue holds at least the
						// selected nodes: no wave means the field
						// was dropped (see checkDryRunKnown).
						return fmt.Errorf("reboot dry run: the coordinator at %s answered no plan: it may have queued the reboots for real; check 'hivectl node reboot --status' and drop them with 'hivectl node reboot --cancel'", c.Addr)
					}
					return printRebootPlan(out, output, resp)
				default:
					resp, err := c.RebootStart(cctx, &hivev1.RebootStartRequest{Nodes: args, Role: role, All: all, MaxParallel: maxParallel, Reason: reason})
					if err != nil {
						return rpcError("reboot", err, true)
					}
					q = resp.GetQueue()
					if output != outJSON {
						for _, s := range resp.GetSkipped() {
							fmt.Fprintf(out, "skipped %s\n", s)
						}
					}
				}
				if wait {
					return waitReboots(ctx, c, out, output, timeout)
				}
				return printRebootQueue(out, output, q)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "reboot every node of this role (in its target generation), maintenance excepted")
	f.BoolVar(&all, "all", false, "reboot every registered node, maintenance excepted")
	f.Uint32Var(&maxParallel, "max-parallel", 0, "at most this many nodes hold the reboot lock at once (default: the queue's, 1 for a new queue)")
	f.StringVar(&reason, "reason", "", "why (shown in the queue and the audit log)")
	f.BoolVar(&showStatus, "status", false, "show the reboot queue")
	f.BoolVar(&cancelQueue, "cancel", false, "drop the queued nodes and clear a halt (nodes holding the lock finish)")
	f.BoolVar(&wait, "wait", false, "follow the queue until no node is queued or holds the lock")
	f.DurationVar(&timeout, "timeout", 0, "with --wait, give up after this long (exit 1)")
	f.BoolVar(&dryRun, "dry-run", false, "show the waves the queue would run and why nodes wait; queue nothing")
	addOutputFlag(cmd, &output)
	return cmd
}

// waitReboots polls the queue, printing each change, until no node is
// queued or holds the lock (a halted queue is an error).
func waitReboots(ctx context.Context, c *client.Conn, out io.Writer, output string, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	last := ""
	for {
		cctx, cancel := callCtx(ctx)
		resp, err := c.RebootStatus(cctx, &hivev1.RebootStatusRequest{})
		cancel()
		if err != nil {
			return rpcError("reboot status", err, false)
		}
		q := resp.GetQueue()
		if line := rebootSummary(q); line != last && output != outJSON {
			fmt.Fprintln(out, line)
			last = line
		}
		if q.GetHalted() != "" {
			return fmt.Errorf("the reboot queue halted: %s failed (%s)", q.GetHalted(), rebootMessage(q, q.GetHalted()))
		}
		busy := false
		for _, n := range q.GetNodes() {
			if n.GetState() == hivev1.RebootState_REBOOT_STATE_QUEUED || rebootHolds(n.GetState()) {
				busy = true
			}
		}
		if !busy {
			return printRebootQueue(out, output, q)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the reboots: %w", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func rebootHolds(s hivev1.RebootState) bool {
	switch s {
	case hivev1.RebootState_REBOOT_STATE_DRAINING, hivev1.RebootState_REBOOT_STATE_REBOOTING, hivev1.RebootState_REBOOT_STATE_RECOVERING:
		return true
	}
	return false
}

func rebootMessage(q *hivev1.RebootQueue, node string) string {
	for _, n := range q.GetNodes() {
		if n.GetName() == node {
			return n.GetMessage()
		}
	}
	return ""
}

func rebootStateText(s hivev1.RebootState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "REBOOT_STATE_"))
}

// rebootSummary is one line: "reboots: db-01 rebooting, db-02 queued, ...".
func rebootSummary(q *hivev1.RebootQueue) string {
	var parts []string
	for _, n := range q.GetNodes() {
		parts = append(parts, n.GetName()+" "+rebootStateText(n.GetState()))
	}
	if len(parts) == 0 {
		return "reboots: none queued"
	}
	return "reboots: " + strings.Join(parts, ", ")
}

type rebootNodeJSON struct {
	Name        string     `json:"name"`
	State       string     `json:"state"`
	RequestedBy string     `json:"requested_by"`
	Reason      string     `json:"reason,omitempty"`
	Queued      *time.Time `json:"queued,omitempty"`
	Started     *time.Time `json:"started,omitempty"`
	Updated     *time.Time `json:"updated,omitempty"`
	Message     string     `json:"message,omitempty"`
}

func rebootNodeOf(n *hivev1.RebootNode) rebootNodeJSON {
	ts := func(t interface{ AsTime() time.Time }, set bool) *time.Time {
		if !set {
			return nil
		}
		v := t.AsTime().UTC()
		return &v
	}
	return rebootNodeJSON{Name: n.GetName(), State: rebootStateText(n.GetState()), RequestedBy: n.GetRequestedBy(), Reason: n.GetReason(),
		Queued: ts(n.GetQueued(), n.GetQueued() != nil), Started: ts(n.GetStarted(), n.GetStarted() != nil),
		Updated: ts(n.GetUpdated(), n.GetUpdated() != nil), Message: n.GetMessage()}
}

type rebootQueueJSON struct {
	MaxParallel uint32           `json:"max_parallel"`
	Halted      string           `json:"halted,omitempty"`
	Nodes       []rebootNodeJSON `json:"nodes"`
}

func rebootQueueOf(q *hivev1.RebootQueue) rebootQueueJSON {
	nodes := []rebootNodeJSON{}
	for _, n := range q.GetNodes() {
		nodes = append(nodes, rebootNodeOf(n))
	}
	return rebootQueueJSON{q.GetMaxParallel(), q.GetHalted(), nodes}
}

func printRebootQueue(out io.Writer, output string, q *hivev1.RebootQueue) error {
	if output == outJSON {
		return writeJSON(out, rebootQueueOf(q))
	}
	if len(q.GetNodes()) == 0 {
		fmt.Fprintln(out, "no reboots queued")
		return nil
	}
	fmt.Fprintf(out, "reboot queue: max parallel %d", q.GetMaxParallel())
	if q.GetHalted() != "" {
		fmt.Fprintf(out, ", HALTED on %s (hivectl node reboot --cancel clears it)", q.GetHalted())
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tSINCE\tREQUESTED BY\tMESSAGE")
	for _, n := range q.GetNodes() {
		since := "-"
		if n.GetUpdated() != nil {
			since = n.GetUpdated().AsTime().UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.GetName(), rebootStateText(n.GetState()), since, orDash(n.GetRequestedBy()), orDash(n.GetMessage()))
	}
	return tw.Flush()
}

// rebootPlanNodeJSON is a node of a dry run's wave; state is where it
// stands now, absent for a node the request would queue.
type rebootPlanNodeJSON struct {
	Name  string `json:"name"`
	State string `json:"state,omitempty"`
	Waits string `json:"waits,omitempty"`
}

// rebootPlanWaveJSON is one wave of a dry run (RebootPlanWave).
type rebootPlanWaveJSON struct {
	Nodes []rebootPlanNodeJSON `json:"nodes"`
}

type rebootPlanJSON struct {
	DryRun      bool                 `json:"dry_run"`
	MaxParallel uint32               `json:"max_parallel"`
	Waves       []rebootPlanWaveJSON `json:"waves"`
	Skipped     []string             `json:"skipped"`
	// Queue is the queue as it is (the dry run changed nothing).
	Queue rebootQueueJSON `json:"queue"`
}

// planNodeText is "db-01", or "db-01 (rebooting)" for a node already
// queued or holding the lock.
func planNodeText(n *hivev1.RebootPlanNode) string {
	if n.GetState() == hivev1.RebootState_REBOOT_STATE_UNSPECIFIED {
		return n.GetName()
	}
	return n.GetName() + " (" + rebootStateText(n.GetState()) + ")"
}

// printRebootPlan prints a reboot dry run: one line per wave, why the
// nodes of later waves wait, the nodes skipped, and that nothing was
// queued.
func printRebootPlan(out io.Writer, output string, resp *hivev1.RebootStartResponse) error {
	if output == outJSON {
		p := rebootPlanJSON{DryRun: true, MaxParallel: resp.GetMaxParallel(), Waves: []rebootPlanWaveJSON{},
			Skipped: append([]string{}, resp.GetSkipped()...), Queue: rebootQueueOf(resp.GetQueue())}
		for _, w := range resp.GetWaves() {
			nodes := []rebootPlanNodeJSON{}
			for _, n := range w.GetNodes() {
				j := rebootPlanNodeJSON{Name: n.GetName(), Waits: n.GetWaits()}
				if n.GetState() != hivev1.RebootState_REBOOT_STATE_UNSPECIFIED {
					j.State = rebootStateText(n.GetState())
				}
				nodes = append(nodes, j)
			}
			p.Waves = append(p.Waves, rebootPlanWaveJSON{Nodes: nodes})
		}
		return writeJSON(out, p)
	}
	var waits []string
	for i, w := range resp.GetWaves() {
		var names []string
		for _, n := range w.GetNodes() {
			names = append(names, planNodeText(n))
			if n.GetWaits() != "" {
				waits = append(waits, fmt.Sprintf("%s waits: %s", n.GetName(), n.GetWaits()))
			}
		}
		fmt.Fprintf(out, "wave %d: %s\n", i+1, strings.Join(names, ", "))
	}
	for _, l := range waits {
		fmt.Fprintln(out, l)
	}
	for _, s := range resp.GetSkipped() {
		fmt.Fprintf(out, "skipped %s\n", s)
	}
	fmt.Fprintf(out, "dry run (max parallel %d): nothing was queued\n", resp.GetMaxParallel())
	return nil
}

// checkDryRunKnown asks the coordinator c answers from, through server
// reflection (open to any caller), whether its RebootStartRequest has
// dry_run. A coordinator older than the field drops it as an unknown
// field and takes the request as a real start: reboots queued by a
// command meant only to plan. The dry run is answered by the coordinator
// that receives it (never forwarded), so asking that one is enough.
func checkDryRunKnown(ctx context.Context, c *client.Conn) error {
	const msg = "hive.v1.RebootStartRequest"
	fail := func(why string) error {
		return fmt.Errorf("reboot dry run: cannot tell whether the coordinator at %s knows --dry-run (%s); nothing was sent", c.Addr, why)
	}
	st, err := rpb.NewServerReflectionClient(c.ClientConn()).ServerReflectionInfo(ctx)
	if err != nil {
		return fail(err.Error())
	}
	defer st.CloseSend()
	if err := st.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: msg}}); err != nil {
		return fail(err.Error())
	}
	resp, err := st.Recv()
	if err != nil {
		return fail(err.Error())
	}
	if e := resp.GetErrorResponse(); e != nil {
		return fail(e.GetErrorMessage())
	}
	for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(raw, &fd); err != nil {
			return fail("bad descriptor: " + err.Error())
		}
		if fd.GetPackage() != "hive.v1" {
			continue
		}
		for _, m := range fd.GetMessageType() {
			if m.GetName() != "RebootStartRequest" {
				continue
			}
			for _, f := range m.GetField() {
				if f.GetName() == "dry_run" && f.GetNumber() == 6 {
					return nil
				}
			}
			return fmt.Errorf("reboot dry run: the coordinator at %s is older than --dry-run (it would take the request as a real start); nothing was sent: upgrade the coordinators first", c.Addr)
		}
	}
	return fail(msg + " not in its descriptors")
}
