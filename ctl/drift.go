package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newDriftCommand(cf *connFlags) *cobra.Command {
	var (
		output string
		since  time.Duration
		node   string
	)
	cmd := &cobra.Command{
		Use:   "drift",
		Short: "List the drift the agents repaired (machines that differed from an unchanged site)",
		Long: `drift lists the resources agents put back because the machine had drifted
from its desired state while the site had not changed for the node (a file
edited by hand, a service stopped, a package removed), newest first: when,
which node, which resource, on which generation, and the agent's message.
Changes made because a push changed the site are not drift and are not
listed. The coordinators keep the last 100 repairs of each node.`,
		Example: `  hivectl drift
  hivectl drift --since 1h --node web-01
  hivectl drift -o json | jq -r '.repairs[].key' | sort | uniq -c`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if since < 0 {
				return fmt.Errorf("--since %v: must not be negative", since)
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				now := time.Now()
				req := &hivev1.ListDriftRepairsRequest{Node: node}
				if since > 0 {
					req.Since = timestamppb.New(now.Add(-since))
				}
				resp, err := c.ListDriftRepairs(cctx, req)
				if err != nil {
					return rpcError("drift", err, false)
				}
				d := driftToJSON(resp)
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), d)
				}
				return writeDriftTable(cmd.OutOrStdout(), d, since, now)
			})
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "only repairs within this long (0: every repair kept)")
	cmd.Flags().StringVar(&node, "node", "", "only this node's repairs")
	addOutputFlag(cmd, &output)
	return cmd
}

type driftJSON struct {
	Repairs   []driftRepairJSON `json:"repairs"`
	Truncated bool              `json:"truncated,omitempty"`
}

type driftRepairJSON struct {
	Time       *time.Time `json:"time"`
	Node       string     `json:"node"`
	Key        string     `json:"key"`
	Generation uint64     `json:"generation"`
	Message    string     `json:"message,omitempty"`
}

func driftToJSON(resp *hivev1.ListDriftRepairsResponse) driftJSON {
	d := driftJSON{Repairs: []driftRepairJSON{}, Truncated: resp.GetTruncated()}
	for _, r := range resp.GetRepairs() {
		d.Repairs = append(d.Repairs, driftRepairJSON{
			Time: timeOrNil(r.GetTime()), Node: r.GetNode(), Key: r.GetKey(), Generation: r.GetGeneration(), Message: r.GetMessage(),
		})
	}
	return d
}

func writeDriftTable(w io.Writer, d driftJSON, since time.Duration, now time.Time) error {
	window := "kept"
	if since > 0 {
		window = "in the last " + shortDuration(since)
	}
	if len(d.Repairs) == 0 {
		fmt.Fprintf(w, "no drift repaired %s\n", window)
		return nil
	}
	nodes := map[string]bool{}
	for _, r := range d.Repairs {
		nodes[r.Node] = true
	}
	fmt.Fprintf(w, "%d drift repairs on %d nodes %s\n", len(d.Repairs), len(nodes), window)
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tNODE\tRESOURCE\tGENERATION\tMESSAGE")
	for _, r := range d.Repairs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", ago(r.Time, now), esc(r.Node), esc(r.Key), r.Generation, orDash(oneLine(r.Message)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if d.Truncated {
		fmt.Fprintln(w, "(more repairs matched; the oldest were left out)")
	}
	return nil
}

// shortDuration prints 24h0m0s as 24h and 1h30m0s as 1h30m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
