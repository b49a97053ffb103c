package ctl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newRollbackCommand(cf *connFlags) *cobra.Command {
	var (
		output  string
		message string
		force   bool
		base    uint64
	)
	cmd := &cobra.Command{
		Use:   "rollback N",
		Short: "Make a new generation with the content of generation N",
		Long: `rollback appends a new generation that carries generation N's content (like
switching back to an earlier deployment); history is kept, nothing is
deleted. Like push, it is based on the current generation and refused if
someone pushed in the meantime, unless --force. Needs an admin certificate.`,
		Example: `  hivectl history
  hivectl rollback 5 -m "nginx 1.27 breaks uploads"
  hivectl rollback 5 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			target, err := parseGeneration(args[0])
			if err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				b := base
				if !cmd.Flags().Changed("base") {
					if b, err = currentGeneration(cctx, c); err != nil {
						return err
					}
				}
				before, _, _ := c.Switches()
				resp, err := c.Rollback(cctx, &hivev1.RollbackRequest{Target: target, Message: message, BaseGeneration: b, Force: force})
				if after, addr, _ := c.Switches(); err != nil && after != before && status.Code(err) == codes.Aborted {
					// Sent again after the connection was lost (client.RetryOf):
					// the first delivery may be generation b+1.
					if g, gerr := c.GetGeneration(cctx, &hivev1.GetGenerationRequest{Number: b + 1}); gerr == nil && g.GetGeneration().GetRollbackOf() == target {
						fmt.Fprintf(cmd.ErrOrStderr(), "hivectl: the rollback was applied before the connection was lost (confirmed by %s: generation %d holds it)\n", esc(addr), b+1)
						resp, err = &hivev1.RollbackResponse{Generation: b + 1, Sha256: g.GetGeneration().GetSha256()}, nil
					}
				}
				if err != nil {
					return staleOrRPCError(cctx, c, fmt.Sprintf("rollback to %d", target), b, err)
				}
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), pushResultJSON{Generation: resp.GetGeneration(), SHA256: resp.GetSha256()})
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "generation %d carries the content of generation %d (sha256 %s)\n",
					resp.GetGeneration(), target, shortHash(resp.GetSha256()))
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&message, "message", "m", "", "why (kept in the history)")
	cmd.Flags().BoolVar(&force, "force", false, "roll back even if the current generation changed since --base")
	cmd.Flags().Uint64Var(&base, "base", 0, "generation the rollback is based on (default: the current one)")
	addOutputFlag(cmd, &output)
	return cmd
}
