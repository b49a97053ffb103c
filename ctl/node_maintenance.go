package ctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func init() {
	registerNodeSubcommand("maintenance", newNodeMaintenanceCommand)
	registerNodeSubcommand("resume", newNodeResumeCommand)
}

func newNodeMaintenanceCommand(cf *connFlags) *cobra.Command {
	var reason, output string
	cmd := &cobra.Command{
		Use:   "maintenance NODE --reason TEXT",
		Short: "Take a node out for work: it keeps its generation, rollouts and reboots skip it, its swarm node is drained",
		Long: `maintenance takes a registered node out of service until 'hivectl node
resume':

  - it keeps enforcing the generation it has (drift is still repaired) but
    takes no newer one: pushes and rollouts pass it by;
  - rollouts do not plan it into a wave, and 'hivectl node reboot --role' or
    '--all' skip it;
  - the swarm's initializing manager drains its swarm node (tasks move
    away) and makes it active again when it resumes;
  - 'hivectl status NODE' shows the reason and who set it (the identity of
    the caller's certificate).

Recorded in raft and in the audit log. Needs an admin certificate.`,
		Example: `  hivectl node maintenance db-03 --reason "replace disk sdb (TICKET-812)"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			node := args[0]
			if err := pki.ValidateName(node); err != nil {
				return err
			}
			if reason == "" {
				return errors.New("--reason is required: say why the node is taken out")
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.MaintenanceStart(cctx, &hivev1.MaintenanceStartRequest{Node: node, Reason: reason})
				if err != nil {
					return rpcError("maintenance "+node, err, true)
				}
				m := resp.GetMaintenance()
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), maintenanceJSON(m))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: in maintenance since %s, set by %s: %s (keeps generation %d)\n",
					node, m.GetSince().AsTime().UTC().Format(time.RFC3339), m.GetAuthor(), m.GetReason(), m.GetGeneration())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why the node is taken out (required; shown in status and the audit log)")
	addOutputFlag(cmd, &output)
	return cmd
}

func newNodeResumeCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resume NODE",
		Short: "Take a node out of maintenance: it takes its target generation again, its swarm node is undrained",
		Long: `resume ends a node's maintenance: it is rendered at its target generation
again (the current one, or its rollout's), rollouts and reboots consider it
again, and its swarm node is made active. Recorded in raft and in the audit
log. Needs an admin certificate.`,
		Example: `  hivectl node resume db-03`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			if err := pki.ValidateName(node); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				if _, err := c.MaintenanceEnd(cctx, &hivev1.MaintenanceEndRequest{Node: node}); err != nil {
					return rpcError("resume "+node, err, true)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: resumed\n", node)
				return nil
			})
		},
	}
	return cmd
}

// maintenanceJSONT is a maintenance record in -o json.
type maintenanceJSONT struct {
	Node       string    `json:"node"`
	Reason     string    `json:"reason"`
	Author     string    `json:"author"`
	Since      time.Time `json:"since"`
	Generation uint64    `json:"generation"`
}

// maintenanceJSON is m for -o json (nil: none).
func maintenanceJSON(m *hivev1.MaintenanceRecord) *maintenanceJSONT {
	if m == nil {
		return nil
	}
	return &maintenanceJSONT{m.GetNode(), m.GetReason(), m.GetAuthor(), m.GetSince().AsTime().UTC(), m.GetGeneration()}
}

// opsSuffix marks a node in maintenance or in the reboot queue in the
// status table's phase column.
func opsSuffix(n nodeJSON) string {
	s := ""
	if n.Maintenance != nil {
		s += " (maintenance)"
	}
	if r := n.Reboot; r != nil && r.State != "done" && r.State != "cancelled" {
		s += " (reboot " + r.State + ")"
	}
	return s
}
