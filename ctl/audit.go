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

func newAuditCommand(cf *connFlags) *cobra.Command {
	var (
		output string
		since  string
		limit  uint32
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List who changed what: every write, with identity, time and summary",
		Long: `audit lists the coordinators' audit log, oldest first: every write made
through the API (push, rollback, secret set and delete, token create, peer
add and remove, node label, revoke, remove, and newer writes), with the
caller's certificate identity ("dev" in --dev), the leader's time, the RPC,
a summary (never secret values) and whether the state refused it.
The log is kept in raft (the newest 10,000 entries), identical on every
coordinator.`,
		Example: `  hivectl audit
  hivectl audit --since 24h
  hivectl audit --since 2026-12-01T00:00:00Z -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req := &hivev1.ListAuditRequest{Limit: limit}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return err
				}
				req.Since = timestamppb.New(t)
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.ListAudit(cctx, req)
				if err != nil {
					return rpcError("audit", err, false)
				}
				if resp.GetTruncated() {
					fmt.Fprintln(cmd.ErrOrStderr(), "hivectl: older entries were left out (the answer's size bound); narrow with --since or -n")
				}
				entries := auditToJSON(resp)
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), entries)
				}
				return writeAuditTable(cmd.OutOrStdout(), entries)
			})
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only entries newer than this: a duration (24h, 30m) or an RFC 3339 time")
	cmd.Flags().Uint32VarP(&limit, "limit", "n", 0, "show at most this many of the newest entries (0: all)")
	addOutputFlag(cmd, &output)
	return cmd
}

// parseSince reads --since: a duration before now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: the duration must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration like 24h or 30m, or an RFC 3339 time like 2026-12-01T00:00:00Z", s)
	}
	return t, nil
}

type auditJSON struct {
	Index    uint64     `json:"index"`
	Time     *time.Time `json:"time"`
	Identity string     `json:"identity"`
	RPC      string     `json:"rpc"`
	Command  string     `json:"command"`
	Summary  string     `json:"summary"`
	Error    string     `json:"error,omitempty"`
	Reason   string     `json:"reason,omitempty"`
}

func auditToJSON(resp *hivev1.ListAuditResponse) []auditJSON {
	out := []auditJSON{}
	for _, e := range resp.GetEntries() {
		out = append(out, auditJSON{
			Index: e.GetIndex(), Time: timeOrNil(e.GetTime()), Identity: e.GetIdentity(), RPC: e.GetRpc(),
			Command: e.GetCommand(), Summary: e.GetSummary(), Error: e.GetError(), Reason: e.GetReason(),
		})
	}
	return out
}

func writeAuditTable(w io.Writer, entries []auditJSON) error {
	if len(entries) == 0 {
		_, err := fmt.Fprintln(w, "no audit entries")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "TIME\tIDENTITY\tRPC\tRESULT\tSUMMARY")
	for _, e := range entries {
		result := "ok"
		if e.Error != "" {
			result = "refused"
			if e.Reason != "" {
				result += " (" + e.Reason + ")"
			}
		}
		rpc := e.RPC[strings.LastIndex(e.RPC, "/")+1:]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clock(e.Time), orDash(e.Identity), orDash(rpc), esc(result), oneLine(e.Summary))
	}
	return tw.Flush()
}
