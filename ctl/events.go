package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newEventsCommand(cf *connFlags) *cobra.Command {
	var (
		output string
		follow bool
		kinds  []string
		node   string
		limit  uint32
		since  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show fleet events: pushes, rollouts, rollbacks, phase changes, drift repairs, failures, joins and leaves",
		Long: `events prints the recent events a coordinator keeps (the last 2,000), oldest
first, and with --follow keeps printing new ones as they happen until
interrupted.

Kinds: push, rollback, generation.converged (every node with roles converged
on the current generation), node.phase, drift.repaired, run.failed,
node.registered, node.joined, node.left (gossip, as the answering coordinator
sees it), node.labeled, node.revoked, node.removed, secret.set and
secret.deleted (names only), coordinator.removed, and a rollout's progress:
rollout.started, rollout.wave_opened, rollout.wave_healthy, rollout.paused,
rollout.resumed, rollout.promoted, rollout.node_failed (a node of the rollout
failed its run or its checks), and its end: rollout.completed,
rollout.rolled_back or rollout.aborted. --kind takes kinds or prefixes
("node.", "node.*", "rollout.").

With -o json every event is one JSON object per line (JSON Lines).`,
		Example: `  hivectl events
  hivectl events --follow
  hivectl events --follow --kind push --kind generation.converged -o json
  hivectl events --follow --kind push --kind rollout.
  hivectl events --node web-1 --since 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if since < 0 {
				return fmt.Errorf("--since %v: must not be negative", since)
			}
			req := &hivev1.WatchEventsRequest{Follow: follow, Kinds: kinds, Node: node, HistoryLimit: limit}
			if since > 0 {
				req.MaxAge = durationpb.New(since)
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				var cancel context.CancelFunc
				if follow {
					ctx, cancel = context.WithCancel(ctx)
				} else {
					ctx, cancel = callCtx(ctx)
				}
				defer cancel()
				stream, err := c.WatchEvents(ctx, req)
				if err != nil {
					return rpcError("events", err, false)
				}
				out := cmd.OutOrStdout()
				n := 0
				for {
					resp, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						if n == 0 && output != outJSON {
							fmt.Fprintln(out, "no events")
						}
						return nil
					}
					if err != nil {
						if ctx.Err() != nil && follow {
							return nil
						}
						return rpcError("events", err, false)
					}
					if resp.GetEvent() == nil {
						continue // the end-of-history marker
					}
					n++
					if err := writeEvent(out, output, resp.GetEvent()); err != nil {
						return err
					}
				}
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen")
	cmd.Flags().StringArrayVar(&kinds, "kind", nil, "only events of this kind or prefix (repeatable)")
	cmd.Flags().StringVar(&node, "node", "", "only events of this node")
	cmd.Flags().Uint32VarP(&limit, "limit", "n", 0, "show at most this many past events (0: all kept)")
	cmd.Flags().DurationVar(&since, "since", 0, "only past events of this last duration (e.g. 1h)")
	addOutputFlag(cmd, &output)
	return cmd
}

// eventJSON is one line of `hivectl events -o json`.
type eventJSON struct {
	Seq     uint64            `json:"seq"`
	Time    *time.Time        `json:"time"`
	Kind    string            `json:"kind"`
	Node    string            `json:"node,omitempty"`
	Summary string            `json:"summary"`
	Fields  map[string]string `json:"fields"`
	Index   uint64            `json:"raft_index,omitempty"`
}

func writeEvent(w io.Writer, output string, e *hivev1.Event) error {
	if output == outJSON {
		b, err := jsonLine(eventJSON{Seq: e.GetSeq(), Time: timeOrNil(e.GetTime()), Kind: e.GetKind(), Node: e.GetNode(),
			Summary: e.GetSummary(), Fields: nonNilMap(e.GetFields()), Index: e.GetIndex()})
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	_, err := fmt.Fprintf(w, "%s  %-20s  %-12s  %s\n", clock(timeOrNil(e.GetTime())), esc(e.GetKind()), orDash(e.GetNode()), oneLine(e.GetSummary()))
	return err
}

// jsonLine encodes v as one line of JSON.
func jsonLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
