package ctl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newHistoryCommand(cf *connFlags) *cobra.Command {
	var (
		output string
		limit  uint32
	)
	cmd := &cobra.Command{
		Use:   "history",
		Short: "List the generations of the site, newest first",
		Long: `history lists the pushed generations, newest first: number, time, author
(from the pushing certificate), the sha256 of the canonical site, the number
of resources and the message. The current generation is marked with '*'.
A rollback shows which generation's content it carries.`,
		Example: `  hivectl history
  hivectl history -n 5
  hivectl history -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.ListGenerations(cctx, &hivev1.ListGenerationsRequest{Limit: limit})
				if err != nil {
					return rpcError("history", err, false)
				}
				h := historyToJSON(resp)
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), h)
				}
				return writeHistoryTable(cmd.OutOrStdout(), h)
			})
		},
	}
	cmd.Flags().Uint32VarP(&limit, "limit", "n", 0, "show at most this many generations (0: all)")
	addOutputFlag(cmd, &output)
	return cmd
}

type historyJSON struct {
	Current     uint64           `json:"current"`
	Generations []generationJSON `json:"generations"`
}

type generationJSON struct {
	Number     uint64     `json:"number"`
	Parent     uint64     `json:"parent"`
	SHA256     string     `json:"sha256"`
	Author     string     `json:"author"`
	Message    string     `json:"message"`
	Time       *time.Time `json:"time"`
	RollbackOf uint64     `json:"rollback_of,omitempty"`
	Resources  uint32     `json:"resources"`
}

func historyToJSON(resp *hivev1.ListGenerationsResponse) historyJSON {
	h := historyJSON{Current: resp.GetCurrent(), Generations: []generationJSON{}}
	for _, g := range resp.GetGenerations() {
		h.Generations = append(h.Generations, generationJSON{
			Number:     g.GetNumber(),
			Parent:     g.GetParent(),
			SHA256:     g.GetSha256(),
			Author:     g.GetAuthor(),
			Message:    g.GetMessage(),
			Time:       timeOrNil(g.GetTime()),
			RollbackOf: g.GetRollbackOf(),
			Resources:  g.GetResources(),
		})
	}
	return h
}

func writeHistoryTable(w io.Writer, h historyJSON) error {
	if len(h.Generations) == 0 {
		fmt.Fprintln(w, "no generations yet: push a site with 'hivectl push FILE'")
		return nil
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "GEN\tTIME\tAUTHOR\tSHA256\tRESOURCES\tMESSAGE")
	for _, g := range h.Generations {
		num := fmt.Sprintf("%d", g.Number)
		if g.Number == h.Current {
			num += "*"
		}
		msg := oneLine(g.Message)
		if g.RollbackOf != 0 {
			if msg != "" {
				msg += " "
			}
			msg += fmt.Sprintf("(rollback to %d)", g.RollbackOf)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", num, clock(g.Time), orDash(g.Author), shortHash(g.SHA256), g.Resources, orDash(msg))
	}
	return tw.Flush()
}
