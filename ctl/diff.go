package ctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newDiffCommand(cf *connFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "diff A [B]",
		Short: "Show what changed between two generations, resource by resource",
		Long: `diff compares generation A with generation B (the current generation when B
is left out), role by role and resource by resource: added (+), removed (-)
and modified (~), each modification with a unified diff of the resource's
canonical form.`,
		Example: `  hivectl diff 5 7
  hivectl diff 5            # 5 against the current generation
  hivectl diff 5 7 -o json`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			from, err := parseGeneration(args[0])
			if err != nil {
				return err
			}
			var to uint64
			if len(args) == 2 {
				if to, err = parseGeneration(args[1]); err != nil {
					return err
				}
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				if to == 0 {
					cur, err := currentGeneration(cctx, c)
					if err != nil {
						return err
					}
					to = cur
				}
				resp, err := c.DiffGenerations(cctx, &hivev1.DiffGenerationsRequest{From: from, To: to})
				if err != nil {
					return rpcError(fmt.Sprintf("diff %d %d", from, to), err, false)
				}
				d := diffToJSON(from, to, resp)
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), d)
				}
				return writeDiff(cmd.OutOrStdout(), d)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// parseGeneration parses a generation number argument (1 or more).
func parseGeneration(s string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "#"), 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a generation number (1, 2, ...)", s)
	}
	return n, nil
}

// currentGeneration asks for the current generation number (0: none yet),
// read consistently: a follower that lags answers only once it has caught
// up with the leader, so the base of a push is never an old generation.
func currentGeneration(ctx context.Context, c *client.Conn) (uint64, error) {
	resp, err := c.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1, Consistent: true})
	if err != nil {
		return 0, rpcError("read current generation", err, false)
	}
	return resp.GetCurrent(), nil
}

type diffJSON struct {
	From    uint64       `json:"from"`
	To      uint64       `json:"to"`
	Changes []changeJSON `json:"changes"`
}

type changeJSON struct {
	Role string `json:"role"`
	Key  string `json:"key,omitempty"`
	Kind string `json:"kind"`
	Diff string `json:"diff,omitempty"`
}

func diffToJSON(from, to uint64, resp *hivev1.DiffGenerationsResponse) diffJSON {
	d := diffJSON{From: from, To: to, Changes: []changeJSON{}}
	for _, c := range resp.GetChanges() {
		d.Changes = append(d.Changes, changeJSON{Role: c.GetRole(), Key: c.GetKey(), Kind: changeName(c.GetKind()), Diff: c.GetDiff()})
	}
	return d
}

func writeDiff(w io.Writer, d diffJSON) error {
	if len(d.Changes) == 0 {
		_, err := fmt.Fprintf(w, "generations %d and %d have the same content\n", d.From, d.To)
		return err
	}
	fmt.Fprintf(w, "generation %d → %d: %d change(s)\n", d.From, d.To, len(d.Changes))
	for _, c := range d.Changes {
		sign := "~"
		switch c.Kind {
		case "added":
			sign = "+"
		case "removed":
			sign = "-"
		}
		what := "role " + orDash(c.Role)
		if c.Role == "" {
			what = "site"
		}
		if c.Key != "" {
			what += ": " + esc(c.Key)
		} else if c.Role != "" && c.Kind == "modified" {
			what += " (role settings or selectors)"
		}
		fmt.Fprintf(w, "%s %s\n", sign, what)
		if c.Diff != "" {
			for _, line := range strings.Split(strings.TrimRight(c.Diff, "\n"), "\n") {
				fmt.Fprintf(w, "    %s\n", escLines(line))
			}
		}
	}
	return nil
}
