package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// waitPoll is how often push --wait asks for status.
const waitPoll = 500 * time.Millisecond

func newPushCommand(cf *connFlags) *cobra.Command {
	var (
		output  string
		message string
		wait    bool
		timeout time.Duration
		force   bool
		base    uint64
	)
	cmd := &cobra.Command{
		Use:   "push FILE",
		Short: "Validate a site file and push it as the next generation",
		Long: `push validates FILE locally (exactly as 'hivectl validate' does) and, if it
is valid, sends it to the coordinators, which validate it again and append it
as generation N+1 once it is committed through Raft. A file whose content
equals the current generation changes nothing and says so.

The push is based on the current generation (or --base N). If someone else
pushed in between, it is refused, so that two operators never silently
overwrite each other; look at 'hivectl diff', merge, and push again, or use
--force. Pushing needs an admin certificate.

With --wait, push shows a live line of converged/applying/failed/pending
counts until every node the generation applies to has converged on it or
failed, and exits 1 if any failed (or on --timeout).`,
		Example: `  hivectl push site.yaml -m "web: nginx 1.27"
  hivectl push site.yaml --wait --timeout 10m
  hivectl push site.yaml -o json            # {"generation": 8, "sha256": "..."}
  HIVE_ADDR=c1:7400,c2:7400 hivectl push site.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %v: must be positive", timeout)
			}
			name := args[0]
			s, data, err := readSite(cmd, name, ": nothing pushed")
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
				resp, err := c.Push(cctx, &hivev1.PushRequest{
					Site: s, Message: message, BaseGeneration: b, Force: force,
					SourceName: name, Source: data,
				})
				if err != nil {
					return staleOrRPCError(cctx, c, "push", b, err)
				}
				out := cmd.OutOrStdout()
				if output == outJSON {
					if err := writeJSON(out, pushResultJSON{Generation: resp.GetGeneration(), SHA256: resp.GetSha256(), Unchanged: resp.GetUnchanged()}); err != nil {
						return err
					}
				} else {
					writePushResult(out, resp)
				}
				if !wait {
					return nil
				}
				// Progress goes to stderr with -o json, so stdout stays JSON.
				progress := out
				if output == outJSON {
					progress = cmd.ErrOrStderr()
				}
				w := &waiter{
					cf: cf, conn: c, orig: c, gen: resp.GetGeneration(), nodes: resp.GetNodes(),
					out: progress, tty: isTerminal(progress), poll: waitPoll,
				}
				// Ctrl-C ends the wait, not the push (already committed).
				sctx, stop := signal.NotifyContext(ctx, os.Interrupt)
				defer stop()
				wctx, wcancel := context.WithTimeout(sctx, timeout)
				defer wcancel()
				res, err := w.run(wctx)
				if w.conn != c {
					defer w.conn.Close()
				}
				if err != nil {
					switch {
					case errors.Is(err, context.DeadlineExceeded) && sctx.Err() == nil:
						fmt.Fprintf(cmd.ErrOrStderr(), "timed out after %v: %s\n", timeout, res.pendingDetail())
						return &exitError{code: 1}
					case sctx.Err() != nil && ctx.Err() == nil:
						fmt.Fprintf(cmd.ErrOrStderr(), "interrupted: generation %d is pushed; follow it with 'hivectl status'\n", w.gen)
						return &exitError{code: 130}
					}
					return err
				}
				if len(res.failed) > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d node(s) failed to converge on generation %d:\n", len(res.failed), w.gen)
					for _, n := range res.failed {
						errs := n.GetErrors()
						if len(errs) == 0 {
							errs = []string{"(no error reported; see hivectl status " + esc(n.GetName()) + ")"}
						}
						for _, e := range errs {
							fmt.Fprintf(cmd.ErrOrStderr(), "  %s: %s\n", esc(n.GetName()), esc(e))
						}
					}
					return &exitError{code: 1}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&message, "message", "m", "", "what changed and why (kept in the history)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until every matched node converged on the new generation or failed; exit 1 if any failed")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "with --wait, give up (exit 1) after this long")
	cmd.Flags().BoolVar(&force, "force", false, "push even if the current generation changed since the base")
	cmd.Flags().Uint64Var(&base, "base", 0, "generation the change is based on (default: the current one)")
	addOutputFlag(cmd, &output)
	return cmd
}
