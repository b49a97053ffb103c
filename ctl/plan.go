package ctl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newPlanCommand(cf *connFlags) *cobra.Command {
	var (
		output  string
		timeout time.Duration
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "plan FILE",
		Short: "Show what a site file would change on every node, without pushing it",
		Long: `plan validates FILE as push does and sends it to the coordinators without
making it a generation. Every node the current or the proposed site gives a
role is planned: each connected agent dry-runs its would-be state against its
live machine (the same plan code as a real run; nothing is changed, secrets
are masked) and answers. plan prints, per node, the resources that would
change (key, summary, diff), "unchanged", "offline: last known state from
generation N" for a node no coordinator is in touch with, or "no answer"
for one that did not answer within --timeout; then the totals.

The plan is kept by the coordinators for an hour (the last 16): 'hivectl
push --plan ID' pushes exactly the planned content, and is refused if another
generation was pushed since the plan was made. A file written by 'hivectl
pull' is refused if its generation is no longer current (--force plans it
anyway).`,
		Example: `  hivectl plan site.yaml
  hivectl plan site.yaml --timeout 30s -o json
  hivectl push --plan p3fa9c1e2b4d0 -m "web: nginx 1.27"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if timeout <= 0 || timeout > 5*time.Minute {
				return fmt.Errorf("--timeout %v: must be positive and at most 5m", timeout)
			}
			name := args[0]
			s, data, from, err := readSiteFile(cmd, name, ": nothing planned")
			if err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := context.WithTimeout(ctx, timeout+rpcTimeout)
				defer cancel()
				if from != nil && !force {
					cur, err := currentGeneration(cctx, c)
					if err != nil {
						return err
					}
					if cur != from.Generation {
						return staleFileError(cctx, c, "plan", name, from, cur, nil)
					}
				}
				req := &hivev1.PlanRequest{Site: s, SourceName: name, Source: data, Timeout: durationpb.New(timeout)}
				if from != nil && !force {
					req.BaseGeneration = from.Generation // checked again by the coordinator
				}
				start := time.Now()
				resp, err := c.Plan(cctx, req)
				if err != nil {
					if from != nil && status.Code(err) == codes.Aborted {
						if cur, cerr := currentGeneration(cctx, c); cerr == nil && cur != from.Generation {
							return staleFileError(cctx, c, "plan", name, from, cur, err)
						}
					}
					return rpcError("plan", err, false)
				}
				p := planToJSON(resp, time.Since(start))
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), p)
				}
				return writePlan(cmd.OutOrStdout(), p, name)
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "wait this long at most for the agents' answers")
	cmd.Flags().BoolVar(&force, "force", false, "plan a pulled file even if its generation is no longer current")
	addOutputFlag(cmd, &output)
	return cmd
}

type planJSON struct {
	ID             string         `json:"id"`
	BaseGeneration uint64         `json:"base_generation"`
	SHA256         string         `json:"sha256"`
	Unchanged      bool           `json:"unchanged_content"`
	Expires        time.Time      `json:"expires"`
	Server         string         `json:"server"`
	ElapsedMS      int64          `json:"elapsed_ms"`
	Nodes          []planNodeJSON `json:"nodes"`
	Totals         planTotals     `json:"totals"`
}

type planNodeJSON struct {
	Name string `json:"name"`
	// State: "changes", "unchanged", "failed" (the dry run found resources
	// that would fail), "offline", "no-answer", "render-error".
	State          string           `json:"state"`
	Changes        []planChangeJSON `json:"changes"`
	LastGeneration uint64           `json:"last_generation,omitempty"`
	Error          string           `json:"error,omitempty"`
	Coordinator    string           `json:"coordinator,omitempty"`
	TookMS         int64            `json:"took_ms,omitempty"`
}

type planChangeJSON struct {
	Key     string `json:"key"`
	Outcome string `json:"outcome"` // planned, failed, skipped
	// Cause of a planned change: "drift" (the node's state is the same:
	// the machine differs from it) or "change" (the site changes it).
	Cause   string `json:"cause,omitempty"`
	Summary string `json:"summary,omitempty"`
	Diff    string `json:"diff,omitempty"`
}

type planTotals struct {
	Nodes       int `json:"nodes"`
	WithChanges int `json:"with_changes"`
	Unchanged   int `json:"unchanged"`
	Failed      int `json:"failed"`
	Offline     int `json:"offline"`
	NoAnswer    int `json:"no_answer"`
	RenderError int `json:"render_error"`
	Resources   int `json:"resources_changing"`
}

func planToJSON(resp *hivev1.PlanResponse, elapsed time.Duration) planJSON {
	p := planJSON{
		ID: resp.GetId(), BaseGeneration: resp.GetBaseGeneration(), SHA256: resp.GetSha256(), Unchanged: resp.GetUnchanged(),
		Expires: resp.GetExpires().AsTime(), Server: resp.GetServer(), ElapsedMS: elapsed.Milliseconds(), Nodes: []planNodeJSON{},
	}
	for _, n := range resp.GetNodes() {
		pn := planNodeJSON{Name: n.GetName(), Changes: []planChangeJSON{}, Error: n.GetError(), Coordinator: n.GetCoordinator()}
		if n.GetTook() != nil {
			pn.TookMS = n.GetTook().AsDuration().Milliseconds()
		}
		p.Totals.Nodes++
		switch n.GetState() {
		case hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED:
			failed := false
			for _, r := range n.GetResults() {
				switch r.GetOutcome() {
				case hivev1.Outcome_OUTCOME_OK:
					continue
				case hivev1.Outcome_OUTCOME_FAILED:
					failed = true
				case hivev1.Outcome_OUTCOME_PLANNED, hivev1.Outcome_OUTCOME_CHANGED:
					p.Totals.Resources++
				}
				pn.Changes = append(pn.Changes, planChangeJSON{Key: r.GetKey(), Outcome: outcomeName(r.GetOutcome()), Cause: causeName(r.GetCause()), Summary: r.GetMessage(), Diff: r.GetDiff()})
			}
			switch {
			case failed:
				pn.State = "failed"
				p.Totals.Failed++
			case len(pn.Changes) > 0:
				pn.State = "changes"
				p.Totals.WithChanges++
			default:
				pn.State = "unchanged"
				p.Totals.Unchanged++
			}
		case hivev1.PlanNodeState_PLAN_NODE_STATE_OFFLINE:
			pn.State, pn.LastGeneration = "offline", n.GetLastGeneration()
			p.Totals.Offline++
		case hivev1.PlanNodeState_PLAN_NODE_STATE_NO_ANSWER:
			pn.State, pn.LastGeneration = "no-answer", n.GetLastGeneration()
			p.Totals.NoAnswer++
		case hivev1.PlanNodeState_PLAN_NODE_STATE_RENDER_ERROR:
			pn.State = "render-error"
			p.Totals.RenderError++
		default:
			pn.State = "unknown"
		}
		p.Nodes = append(p.Nodes, pn)
	}
	sort.Slice(p.Nodes, func(i, j int) bool { return p.Nodes[i].Name < p.Nodes[j].Name })
	return p
}

func writePlan(w io.Writer, p planJSON, name string) error {
	content := ""
	if p.Unchanged {
		content = " (same content as the base generation)"
	}
	fmt.Fprintf(w, "plan %s of %s on generation %d%s, sha256 %s, kept until %s\n",
		esc(p.ID), esc(name), p.BaseGeneration, content, shortHash(p.SHA256), p.Expires.UTC().Format("15:04:05 MST"))
	for _, n := range p.Nodes {
		switch n.State {
		case "changes", "failed":
			fmt.Fprintf(w, "\n%s: %d change(s)", esc(n.Name), len(n.Changes))
			if n.State == "failed" {
				fmt.Fprint(w, ", would FAIL")
			}
			fmt.Fprintln(w)
			for _, c := range n.Changes {
				sign := "~"
				switch c.Outcome {
				case "failed":
					sign = "!"
				case "skipped":
					sign = "-"
				}
				fmt.Fprintf(w, "  %s %s", sign, esc(c.Key))
				if c.Summary != "" {
					fmt.Fprintf(w, "  %s", oneLine(c.Summary))
				}
				if c.Cause == "drift" {
					fmt.Fprint(w, " (drift: the machine differs from its current state)")
				}
				fmt.Fprintln(w)
				if c.Diff != "" {
					for _, line := range strings.Split(strings.TrimRight(c.Diff, "\n"), "\n") {
						fmt.Fprintf(w, "      %s\n", escLines(line))
					}
				}
			}
		case "unchanged":
			fmt.Fprintf(w, "%s: unchanged\n", esc(n.Name))
		case "offline":
			fmt.Fprintf(w, "%s: offline: last known state from generation %d\n", esc(n.Name), n.LastGeneration)
		case "no-answer":
			fmt.Fprintf(w, "%s: no answer in time (watching %s): last known state from generation %d\n", esc(n.Name), orDash(n.Coordinator), n.LastGeneration)
		case "render-error":
			fmt.Fprintf(w, "%s: cannot render the planned site: %s\n", esc(n.Name), oneLine(n.Error))
		default:
			fmt.Fprintf(w, "%s: %s\n", esc(n.Name), esc(n.State))
		}
	}
	t := p.Totals
	fmt.Fprintf(w, "\n%d node(s): %d with changes (%d resource(s)), %d unchanged, %d failing, %d offline, %d no answer, %d render error(s); %s\n",
		t.Nodes, t.WithChanges, t.Resources, t.Unchanged, t.Failed, t.Offline, t.NoAnswer, t.RenderError, (time.Duration(p.ElapsedMS) * time.Millisecond).String())
	fmt.Fprintf(w, "push exactly this with: hivectl push --plan %s -m MESSAGE\n", esc(p.ID))
	return nil
}
