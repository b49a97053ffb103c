package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// waitPoll is how often push --wait and status --watch ask a coordinator
// that cannot block (an older version) for status.
const waitPoll = 500 * time.Millisecond

func newPushCommand(cf *connFlags) *cobra.Command {
	var (
		output  string
		message string
		wait    bool
		timeout time.Duration
		force   bool
		base    uint64
		planID  string
	)
	cmd := &cobra.Command{
		Use:   "push FILE | push --plan ID",
		Short: "Validate a site file and push it as the next generation",
		Long: `push validates FILE locally (exactly as 'hivectl validate' does) and, if it
is valid, sends it to the coordinators, which validate it again and append it
as generation N+1 once it is committed through Raft. A file whose content
equals the current generation changes nothing and says so.

The push is based on the current generation (or --base N). If someone else
pushed in between, it is refused, so that two operators never silently
overwrite each other; look at 'hivectl diff', merge, and push again, or use
--force. Pushing needs an admin certificate.

A file written by 'hivectl pull' starts with a header recording the
generation it came from: the push is based on that generation, so it is
refused if anyone pushed since, with who pushed which generation when and
with what message (--force pushes anyway). A file without the header is
based on the generation current when you push (or --base N).

--plan ID pushes exactly the content of a plan made with 'hivectl plan'
(FILE is not read), based on the generation the plan was made on: it is
refused if another generation was pushed since the plan.

With --wait, push shows the live progress of the nodes the generation
applies to (converged/applying/failed/pending: a bar redrawn in place on a
terminal, one line per change otherwise) until every one of them has
converged on it or failed, and exits 1 if any failed (or on --timeout). It
follows status with blocking calls: it returns as soon as the last node's
report is committed, without polling. With -o json, stdout gets only the
push's JSON result and the progress goes to stderr.`,
		Example: `  hivectl push site.yaml -m "web: nginx 1.27"
  hivectl push site.yaml --wait --timeout 10m
  hivectl push --plan p3fa9c1e2b4d0 -m "web: nginx 1.27"
  hivectl push site.yaml -o json            # {"generation": 8, "sha256": "..."}
  HIVE_ADDR=c1:7400,c2:7400 hivectl push site.yaml`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if timeout <= 0 {
				return fmt.Errorf("--timeout %v: must be positive", timeout)
			}
			if err := checkPushArgs(cmd, args, planID); err != nil {
				return err
			}
			var (
				name string
				s    *hivev1.Site
				data []byte
				from *pulledFrom
				err  error
			)
			if planID == "" {
				name = args[0]
				if s, data, from, err = readSiteFile(cmd, name, ": nothing pushed"); err != nil {
					return err
				}
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				var resp *hivev1.PushResponse
				var err error
				if planID != "" {
					resp, err = pushPlan(cctx, c, planID, message)
				} else {
					resp, err = pushFile(cctx, cmd, c, &hivev1.PushRequest{
						Site: s, Message: message, BaseGeneration: base, Force: force,
						SourceName: name, Source: data,
					}, from)
				}
				if err != nil {
					return err
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
				f := newStatusFollower(cf, c, "")
				defer f.close()
				w := &waiter{f: f, gen: resp.GetGeneration(), nodes: resp.GetNodes(), out: newLiveLine(progress)}
				// Ctrl-C ends the wait, not the push (already committed).
				sctx, stop := signal.NotifyContext(ctx, os.Interrupt)
				defer stop()
				wctx, wcancel := context.WithTimeout(sctx, timeout)
				defer wcancel()
				res, err := w.run(wctx)
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
	cmd.Flags().Uint64Var(&base, "base", 0, "generation the change is based on (default: the one in the file's pull header, else the current one)")
	cmd.Flags().StringVar(&planID, "plan", "", "push the content of this plan (hivectl plan), refused if the site moved since the plan")
	addOutputFlag(cmd, &output)
	return cmd
}

// pushOnce sends req and makes sense of the answer when the connection
// moved on to another coordinator during the call (client.RetryOf: a push
// without force is sent again; a forced one is not). The push is applied
// at most once:
//
//   - sent again and answered unchanged with generation base+1: the first
//     delivery was applied; that generation is reported as pushed.
//   - sent again and refused as stale: the first delivery may have been
//     applied before someone else pushed; if generation base+1 holds this
//     site, it is reported as pushed, else the stale error stands.
//   - not sent again (forced, connection lost mid-call): if a generation
//     after the base holds this site (read consistently from the next
//     coordinator), it is reported as pushed; else the error says the
//     outcome is unknown.
func pushOnce(ctx context.Context, cmd *cobra.Command, c *client.Conn, req *hivev1.PushRequest) (*hivev1.PushResponse, error) {
	before, _, _ := c.Switches()
	resp, err := c.Push(ctx, req)
	after, addr, _ := c.Switches()
	if after == before {
		if err != nil {
			return nil, staleOrRPCError(ctx, c, "push", req.GetBaseGeneration(), err)
		}
		return resp, nil
	}
	b := req.GetBaseGeneration()
	note := func(g uint64) {
		fmt.Fprintf(cmd.ErrOrStderr(), "hivectl: the push was applied before the connection was lost (confirmed by %s: generation %d holds it)\n", esc(addr), g)
	}
	switch {
	case err == nil && resp.GetUnchanged() && !req.GetForce() && resp.GetGeneration() == b+1:
		note(resp.GetGeneration())
		resp.Unchanged = false
		return resp, nil
	case err == nil:
		return resp, nil
	}
	code := status.Code(err)
	if code != codes.Aborted && code != codes.Unavailable {
		return nil, staleOrRPCError(ctx, c, "push", b, err)
	}
	g, ferr := pushedAfter(ctx, c, b, req.GetSite())
	switch {
	case ferr == nil && g != nil:
		note(g.GetNumber())
		return &hivev1.PushResponse{Generation: g.GetNumber(), Sha256: g.GetSha256()}, nil
	case code == codes.Aborted:
		return nil, staleOrRPCError(ctx, c, "push", b, err)
	case ferr == nil:
		return nil, &cliError{msg: fmt.Sprintf("%v\n(%s has no generation after %d with this site: the push was not applied, unless it is still in flight; check 'hivectl history' before pushing again)",
			rpcError("push", err, true), esc(addr), b), err: err}
	}
	return nil, &cliError{msg: fmt.Sprintf("%v\n(could not check whether it was applied: %v; check 'hivectl history' before pushing again)", rpcError("push", err, true), ferr), err: err}
}

// pushedAfter returns the first generation after base whose site equals s
// (at most the 20 after base), or nil. It reads consistently, so every
// generation committed before the call is seen.
func pushedAfter(ctx context.Context, c *client.Conn, base uint64, s *hivev1.Site) (*hivev1.Generation, error) {
	list, err := c.ListGenerations(ctx, &hivev1.ListGenerationsRequest{Limit: 1, Consistent: true})
	if err != nil {
		return nil, err
	}
	for n := base + 1; n <= list.GetCurrent() && n <= base+20; n++ {
		g, err := c.GetGeneration(ctx, &hivev1.GetGenerationRequest{Number: n})
		if err != nil {
			return nil, err
		}
		if proto.Equal(g.GetGeneration().GetSite(), s) {
			return g.GetGeneration(), nil
		}
	}
	return nil, nil
}

// checkPushArgs checks FILE against --plan: exactly one of them.
func checkPushArgs(cmd *cobra.Command, args []string, planID string) error {
	switch {
	case planID == "" && len(args) == 0:
		return fmt.Errorf("push needs a site FILE, or --plan ID")
	case planID != "" && len(args) > 0:
		return fmt.Errorf("push --plan %s pushes the plan's content: leave out %s", esc(planID), esc(args[0]))
	case planID != "" && (cmd.Flags().Changed("base") || cmd.Flags().Changed("force")):
		return fmt.Errorf("push --plan: the plan fixes the base generation; --base and --force do not apply (plan again instead)")
	}
	return nil
}

// pushFile pushes a site file. Its base is --base, else the generation of
// its pull header, else the current one. A push refused because the
// pulled generation is no longer current says who pushed since.
func pushFile(ctx context.Context, cmd *cobra.Command, c *client.Conn, req *hivev1.PushRequest, from *pulledFrom) (*hivev1.PushResponse, error) {
	switch {
	case cmd.Flags().Changed("base"):
	case from != nil:
		req.BaseGeneration = from.Generation
	default:
		cur, err := currentGeneration(ctx, c)
		if err != nil {
			return nil, err
		}
		req.BaseGeneration = cur
	}
	resp, err := pushOnce(ctx, cmd, c, req)
	if err != nil && from != nil && !cmd.Flags().Changed("base") && status.Code(err) == codes.Aborted {
		if cur, cerr := currentGeneration(ctx, c); cerr == nil && cur != from.Generation {
			return nil, staleFileError(ctx, c, "push", req.GetSourceName(), from, cur, err)
		}
	}
	return resp, err
}

// pushPlan pushes a plan's content.
func pushPlan(ctx context.Context, c *client.Conn, id, message string) (*hivev1.PushResponse, error) {
	resp, err := c.Push(ctx, &hivev1.PushRequest{PlanId: id, Message: message})
	if err != nil {
		return nil, rpcError("push --plan "+id, err, true)
	}
	return resp, nil
}
