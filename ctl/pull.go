package ctl

import (
	"context"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newPullCommand(cf *connFlags) *cobra.Command {
	var (
		out      string
		noHeader bool
	)
	cmd := &cobra.Command{
		Use:   "pull [N]",
		Short: "Print the site file of the current generation (or of generation N)",
		Long: `pull prints the site file text as it was pushed for the current generation
(or generation N), to stdout or to --out FILE. Use it to start a change from
what the coordinators hold, or after a push was refused because someone else
pushed first. The text always parses to the generation's site: the
coordinators refuse a push whose text does not.

The text starts with a two-line comment header recording the generation it
came from (number, sha256, author, time). 'hivectl push' of the file bases
the change on that generation and is refused if someone pushed since,
saying who pushed what (--force pushes anyway). The header is a comment: it
changes neither the site nor its hash, and push removes it from the text it
sends. --no-header prints the text exactly as pushed.`,
		Example: `  hivectl pull > site.yaml
  hivectl pull 5 --out site-gen5.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n uint64
			if len(args) == 1 {
				var err error
				if n, err = parseGeneration(args[0]); err != nil {
					return err
				}
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.GetGeneration(cctx, &hivev1.GetGenerationRequest{Number: n})
				if err != nil {
					return rpcError("pull", err, false)
				}
				g := resp.GetGeneration()
				src := g.GetSource()
				if len(src) == 0 {
					return fmt.Errorf("pull: generation %d carries no source text", g.GetNumber())
				}
				if !noHeader {
					src = append(pullHeader(g), src...)
				}
				if out == "" {
					// The site text as pushed, byte for byte, into a pipe
					// or file; escaped (see output.go) on a terminal.
					w := cmd.OutOrStdout()
					if !isTerminal(w) {
						w = rawWriter(w)
					}
					_, err = w.Write(src)
					return err
				}
				if err := os.WriteFile(out, src, 0o644); err != nil {
					return fmt.Errorf("pull: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote generation %d (%s) to %s\n", g.GetNumber(), orDash(g.GetSourceName()), out)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write to this file instead of stdout")
	cmd.Flags().BoolVar(&noHeader, "no-header", false, "leave out the header recording the generation (push of the file is then based on the current generation)")
	return cmd
}
