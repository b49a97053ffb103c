package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

func newRolloutCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Follow and control the rollout of the latest push (waves, canary)",
		Long: `A push whose rollout policy (the site file's rollout: sections, or push's
--canary/--max-parallel flags) asks for waves reaches the nodes wave by
wave: the canary first, then the next wave each time every node of the open
one has converged and stayed healthy for min_healthy_time. A failure pauses
the rollout or rolls it back, as on_failure says. See docs/rollouts.md.

  rollout status    the waves and each node's progress (--watch: live)
  rollout pause     open no further wave
  rollout resume    let waves open again
  rollout promote   open the next wave now, whatever the gate says
  rollout abort     stop, and give every touched node its previous generation`,
	}
	cmd.AddCommand(newRolloutStatusCommand(cf))
	var gen uint64
	var reason string
	control := func(use, short string, withReason bool, call func(ctx context.Context, c *client.Conn) (*hivev1.Rollout, error)) *cobra.Command {
		sub := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, args []string) error {
				return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
					cctx, cancel := callCtx(ctx)
					defer cancel()
					r, err := call(cctx, c)
					if err != nil {
						return rpcError("rollout "+use, err, true)
					}
					fmt.Fprintln(cmd.OutOrStdout(), rolloutHeadline(r))
					return nil
				})
			},
		}
		sub.Flags().Uint64Var(&gen, "generation", 0, "the rollout (by its generation) meant; refused if another is the latest (default: the latest)")
		if withReason {
			sub.Flags().StringVar(&reason, "reason", "", "why (kept with the rollout and shown by rollout status)")
		}
		return sub
	}
	cmd.AddCommand(
		control("pause", "Pause the rollout: no further wave opens", true, func(ctx context.Context, c *client.Conn) (*hivev1.Rollout, error) {
			r, err := c.PauseRollout(ctx, &hivev1.PauseRolloutRequest{Generation: gen, Reason: reason})
			return r.GetRollout(), err
		}),
		control("resume", "Resume a paused rollout", false, func(ctx context.Context, c *client.Conn) (*hivev1.Rollout, error) {
			r, err := c.ResumeRollout(ctx, &hivev1.ResumeRolloutRequest{Generation: gen})
			return r.GetRollout(), err
		}),
		control("promote", "Open the next wave now (and resume a paused rollout)", false, func(ctx context.Context, c *client.Conn) (*hivev1.Rollout, error) {
			r, err := c.PromoteRollout(ctx, &hivev1.PromoteRolloutRequest{Generation: gen})
			return r.GetRollout(), err
		}),
		control("abort", "Stop the rollout and give every touched node its previous generation back", true, func(ctx context.Context, c *client.Conn) (*hivev1.Rollout, error) {
			r, err := c.AbortRollout(ctx, &hivev1.AbortRolloutRequest{Generation: gen, Reason: reason})
			return r.GetRollout(), err
		}),
	)
	return cmd
}

func newRolloutStatusCommand(cf *connFlags) *cobra.Command {
	var (
		output  string
		watch   bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the latest rollout: its waves and each node's progress",
		Long: `rollout status shows the latest rollout: its generation, state (running,
paused, completed, rolled back, aborted) and why, its policy, and per wave
each node's target generation, the generation it applied, its phase and
health; while the open wave is healthy, for how long of its
min_healthy_time (kept in raft: a leader change does not restart it). With
--watch it follows the rollout live (a progress bar redrawn in place on a
terminal, one line per change otherwise, one JSON document per change with
-o json) until the rollout is over, Ctrl-C or --timeout.`,
		Example: `  hivectl rollout status
  hivectl rollout status --watch
  hivectl rollout status -o json | jq '.nodes[] | select(.healthy | not)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if timeout < 0 || (timeout > 0 && !watch) {
				return fmt.Errorf("--timeout %v: only with --watch, and not negative", timeout)
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				if watch {
					ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
					defer stop()
					if timeout > 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, timeout)
						defer cancel()
					}
					_, err := followRollout(ctx, c, 0, cmd.OutOrStdout(), output == outJSON, false)
					if err != nil && ctxOver(ctx) {
						return nil
					}
					return err
				}
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.GetRollout(cctx, &hivev1.GetRolloutRequest{})
				if err != nil {
					return rpcError("rollout status", err, false)
				}
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), rolloutToJSON(resp.GetStatus()))
				}
				writeRollout(cmd.OutOrStdout(), resp.GetStatus())
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout live until it is over, interrupted or --timeout")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --watch, stop after this long (exit 0; default: until the rollout is over)")
	addOutputFlag(cmd, &output)
	return cmd
}

// rolloutStateName is the state in the operator's words.
func rolloutStateName(s hivev1.RolloutState) string {
	return strings.ReplaceAll(enumName(s.String(), "ROLLOUT_STATE_"), "_", " ")
}

func rolloutHealthName(h hivev1.Health) string {
	if h == hivev1.Health_HEALTH_UNSPECIFIED {
		return "-"
	}
	return enumName(h.String(), "HEALTH_")
}

func durString(d *durationpb.Duration) string {
	if d == nil {
		return "0s"
	}
	return d.AsDuration().String()
}

// policyString is a policy in site-file words.
func policyString(p *hivev1.RolloutPolicy) string {
	var parts []string
	switch {
	case len(p.GetCanaryNodes()) > 0:
		parts = append(parts, "canary "+strings.Join(p.GetCanaryNodes(), ","))
	case p.GetCanaryCount() > 0:
		parts = append(parts, fmt.Sprintf("canary %d", p.GetCanaryCount()))
	}
	switch {
	case p.GetMaxParallel() > 0:
		parts = append(parts, fmt.Sprintf("max_parallel %d", p.GetMaxParallel()))
	case p.GetMaxParallelPercent() > 0:
		parts = append(parts, fmt.Sprintf("max_parallel %d%%", p.GetMaxParallelPercent()))
	}
	if p.GetMinHealthyTime() != nil {
		parts = append(parts, "min_healthy_time "+durString(p.GetMinHealthyTime()))
	}
	if p.GetHealthyDeadline() != nil {
		parts = append(parts, "healthy_deadline "+durString(p.GetHealthyDeadline()))
	}
	if p.GetOnFailure() == hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK {
		parts = append(parts, "on_failure rollback")
	}
	if len(parts) == 0 {
		return "per role"
	}
	return strings.Join(parts, ", ")
}

// rolloutHeadline: "rollout of generation 5: paused, wave 1 of 3 open (web-1: health failing ...)".
func rolloutHeadline(r *hivev1.Rollout) string {
	s := fmt.Sprintf("rollout of generation %d: %s, wave %d of %d open", r.GetGeneration(), rolloutStateName(r.GetState()), r.GetOpened(), len(r.GetWaves()))
	if r.GetReason() != "" {
		s += " (" + esc(oneLine(r.GetReason())) + ")"
	}
	if r.GetRevertGeneration() > 0 {
		s += fmt.Sprintf("; generation %d restores generation %d's content on every node", r.GetRevertGeneration(), r.GetBaseGeneration())
	}
	return s
}

func writeRollout(w io.Writer, rs *hivev1.RolloutStatus) {
	r := rs.GetRollout()
	fmt.Fprintln(w, rolloutHeadline(r))
	fmt.Fprintf(w, "from generation %d; policy: %s; started %s by %s\n", r.GetBaseGeneration(), esc(policyString(r.GetPolicy())),
		clock(timeOrNil(r.GetStarted())), esc(orDash(r.GetAuthor())))
	if r.GetChangedBy() != "" {
		fmt.Fprintf(w, "last changed by %s\n", esc(r.GetChangedBy()))
	}
	if hf := rs.GetWaveHealthyFor(); hf != nil && r.GetOpened() > 0 && int(r.GetOpened()) <= len(r.GetWaves()) {
		fmt.Fprintf(w, "wave %d healthy for %s of its min_healthy_time %s\n", r.GetOpened(), hf.AsDuration().Round(100*time.Millisecond),
			durString(r.GetWaves()[r.GetOpened()-1].GetMinHealthyTime()))
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "WAVE\tNODE\tTARGET\tAPPLIED\tPHASE\tHEALTH\tHEALTHY\tMESSAGE")
	for _, n := range rs.GetNodes() {
		wave := r.GetWaves()[n.GetWave()]
		label := strconv.Itoa(int(n.GetWave()) + 1)
		if wave.GetCanary() {
			label += " canary"
		}
		if n.GetWave() >= r.GetOpened() {
			label += " (closed)"
		}
		healthy := "no"
		if n.GetHealthy() {
			healthy = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", label, esc(n.GetName()), n.GetTargetGeneration(), n.GetAppliedGeneration(),
			phaseName(n.GetPhase()), rolloutHealthName(n.GetHealth()), healthy, esc(orDash(oneLine(n.GetMessage()))))
	}
	tw.Flush()
	for i, wv := range r.GetWaves() {
		fmt.Fprintf(w, "wave %d: %d node(s), gate: healthy for %s (deadline %s), on failure %s\n", i+1, len(wv.GetNodes()),
			durString(wv.GetMinHealthyTime()), durString(wv.GetHealthyDeadline()), enumName(wv.GetOnFailure().String(), "ROLLOUT_ON_FAILURE_"))
	}
}

// rolloutJSON is the -o json form of rollout status.
type rolloutJSON struct {
	Generation     uint64            `json:"generation"`
	BaseGeneration uint64            `json:"base_generation"`
	State          string            `json:"state"`
	Reason         string            `json:"reason,omitempty"`
	Opened         uint32            `json:"opened_waves"`
	Policy         string            `json:"policy"`
	Author         string            `json:"author,omitempty"`
	ChangedBy      string            `json:"changed_by,omitempty"`
	Started        *time.Time        `json:"started"`
	Waves          []rolloutWaveJSON `json:"waves"`
	Nodes          []rolloutNodeJSON `json:"nodes"`
	Counts         map[string]int    `json:"counts"`
	Revert         uint64            `json:"revert_generation,omitempty"`
	// How long the open wave has been healthy (absent: not healthy).
	WaveHealthyForS *float64 `json:"wave_healthy_for_s,omitempty"`
}

type rolloutWaveJSON struct {
	Nodes            []string   `json:"nodes"`
	Canary           bool       `json:"canary,omitempty"`
	Opened           *time.Time `json:"opened"`
	MinHealthyTimeS  float64    `json:"min_healthy_time_s"`
	HealthyDeadlineS float64    `json:"healthy_deadline_s"`
	OnFailure        string     `json:"on_failure"`
}

type rolloutNodeJSON struct {
	Name              string `json:"name"`
	Wave              uint32 `json:"wave"`
	TargetGeneration  uint64 `json:"target_generation"`
	FromGeneration    uint64 `json:"from_generation"`
	AppliedGeneration uint64 `json:"applied_generation"`
	Phase             string `json:"phase"`
	Health            string `json:"health"`
	Healthy           bool   `json:"healthy"`
	Message           string `json:"message,omitempty"`
}

func rolloutToJSON(rs *hivev1.RolloutStatus) rolloutJSON {
	r := rs.GetRollout()
	c := rolloutCounts(rs)
	out := rolloutJSON{
		Generation: r.GetGeneration(), BaseGeneration: r.GetBaseGeneration(), State: rolloutStateName(r.GetState()),
		Reason: r.GetReason(), Opened: r.GetOpened(), Policy: policyString(r.GetPolicy()), Author: r.GetAuthor(),
		ChangedBy: r.GetChangedBy(), Started: timeOrNil(r.GetStarted()), Waves: []rolloutWaveJSON{}, Nodes: []rolloutNodeJSON{},
		Counts: map[string]int{"healthy": c.converged, "in_progress": c.applying, "failed": c.failed, "waiting": c.pending},
		Revert: r.GetRevertGeneration(),
	}
	if hf := rs.GetWaveHealthyFor(); hf != nil {
		v := hf.AsDuration().Seconds()
		out.WaveHealthyForS = &v
	}
	for _, w := range r.GetWaves() {
		out.Waves = append(out.Waves, rolloutWaveJSON{
			Nodes: nonNilSlice(w.GetNodes()), Canary: w.GetCanary(), Opened: timeOrNil(w.GetOpened()),
			MinHealthyTimeS: w.GetMinHealthyTime().AsDuration().Seconds(), HealthyDeadlineS: w.GetHealthyDeadline().AsDuration().Seconds(),
			OnFailure: enumName(w.GetOnFailure().String(), "ROLLOUT_ON_FAILURE_"),
		})
	}
	for _, n := range rs.GetNodes() {
		out.Nodes = append(out.Nodes, rolloutNodeJSON{
			Name: n.GetName(), Wave: n.GetWave() + 1, TargetGeneration: n.GetTargetGeneration(), FromGeneration: n.GetFromGeneration(),
			AppliedGeneration: n.GetAppliedGeneration(), Phase: phaseName(n.GetPhase()), Health: rolloutHealthName(n.GetHealth()),
			Healthy: n.GetHealthy(), Message: n.GetMessage(),
		})
	}
	return out
}

// rolloutCounts counts a rollout's nodes for the progress bar: healthy on
// the rollout's generation (converged), in an open wave but not healthy
// yet (applying), failing (failed), and waiting for their wave or rolled
// back (pending).
func rolloutCounts(rs *hivev1.RolloutStatus) fleetCounts {
	var c fleetCounts
	r := rs.GetRollout()
	for _, n := range rs.GetNodes() {
		switch {
		case n.GetMessage() != "":
			c.failed++
		case n.GetTargetGeneration() != r.GetGeneration():
			c.pending++
		case n.GetHealthy():
			c.converged++
		default:
			c.applying++
		}
	}
	return c
}

// followRollout follows the rollout of generation gen (0: the latest) over
// WatchRollout, showing each change, until it is over (or, with
// stopOnPause, paused); it returns the last rollout seen. A lost stream is
// opened again (the connection moves to another coordinator) until ctx
// ends.
func followRollout(ctx context.Context, c *client.Conn, gen uint64, out io.Writer, asJSON, stopOnPause bool) (*hivev1.Rollout, error) {
	line := newLiveLine(out)
	defer line.end()
	var last *hivev1.Rollout
	for {
		stream, err := c.WatchRollout(ctx, &hivev1.WatchRolloutRequest{})
		for err == nil {
			var m *hivev1.WatchRolloutResponse
			if m, err = stream.Recv(); err != nil {
				break
			}
			rs := m.GetStatus()
			r := rs.GetRollout()
			if gen != 0 && r.GetGeneration() != gen {
				return r, fmt.Errorf("the rollout of generation %d was superseded by generation %d", gen, r.GetGeneration())
			}
			last = r
			if asJSON {
				if err := writeJSON(out, rolloutToJSON(rs)); err != nil {
					return last, err
				}
			} else {
				cnt := rolloutCounts(rs)
				line.show(fmt.Sprintf("generation %d: %s, wave %d/%d: %s", r.GetGeneration(), rolloutStateName(r.GetState()), r.GetOpened(), len(r.GetWaves()), cnt), cnt)
			}
			if rolloutOver(r.GetState()) || (stopOnPause && r.GetState() == hivev1.RolloutState_ROLLOUT_STATE_PAUSED) {
				return last, nil
			}
		}
		if ctxOver(ctx) {
			return last, ctx.Err()
		}
		switch status.Code(err) {
		case codes.NotFound, codes.PermissionDenied, codes.Unauthenticated, codes.Unimplemented:
			return last, rpcError("rollout status", err, false)
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func rolloutOver(s hivev1.RolloutState) bool {
	switch s {
	case hivev1.RolloutState_ROLLOUT_STATE_COMPLETED, hivev1.RolloutState_ROLLOUT_STATE_ROLLED_BACK, hivev1.RolloutState_ROLLOUT_STATE_ABORTED:
		return true
	}
	return false
}

// rolloutFlags are push's overrides of the site's rollout policy.
type rolloutFlags struct {
	canary, maxParallel, onFailure  string
	minHealthyTime, healthyDeadline time.Duration
}

func (f *rolloutFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.canary, "canary", "", "rollout: canary wave, a count of nodes or node names (a,b); overrides the site file's")
	cmd.Flags().StringVar(&f.maxParallel, "max-parallel", "", `rollout: nodes per wave, a count or a percent ("25%")`)
	cmd.Flags().DurationVar(&f.minHealthyTime, "min-healthy-time", 0, "rollout: how long a wave must stay healthy before the next opens")
	cmd.Flags().DurationVar(&f.healthyDeadline, "healthy-deadline", 0, "rollout: a node not healthy this long after its wave opened fails it")
	cmd.Flags().StringVar(&f.onFailure, "on-failure", "", "rollout: pause or rollback when a node of a wave fails")
}

// override builds the PushRequest's rollout override from the flags given
// (nil when none was).
func (f *rolloutFlags) override(cmd *cobra.Command) (*hivev1.RolloutOverride, error) {
	o := &hivev1.RolloutOverride{}
	set := false
	if cmd.Flags().Changed("canary") {
		set = true
		if n, err := strconv.ParseUint(f.canary, 10, 32); err == nil {
			v := uint32(n)
			o.CanaryCount = &v
		} else {
			for _, name := range strings.Split(f.canary, ",") {
				if name = strings.TrimSpace(name); name != "" {
					o.CanaryNodes = append(o.CanaryNodes, name)
				}
			}
			if len(o.CanaryNodes) == 0 {
				return nil, fmt.Errorf("--canary %q: a count or node names separated by commas", f.canary)
			}
		}
	}
	if cmd.Flags().Changed("max-parallel") {
		set = true
		count, pct, err := site.ParseMaxParallel(f.maxParallel)
		if err != nil {
			return nil, fmt.Errorf("--max-parallel: %v", err)
		}
		if pct > 0 {
			o.MaxParallelPercent = &pct
		} else {
			o.MaxParallel = &count
		}
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		dst  **durationpb.Duration
	}{{"min-healthy-time", f.minHealthyTime, &o.MinHealthyTime}, {"healthy-deadline", f.healthyDeadline, &o.HealthyDeadline}} {
		if !cmd.Flags().Changed(d.flag) {
			continue
		}
		set = true
		if d.v < 0 || d.v > site.MaxRolloutDuration {
			return nil, fmt.Errorf("--%s %v: expected a duration from 0s to 24h", d.flag, d.v)
		}
		*d.dst = durationpb.New(d.v)
	}
	if cmd.Flags().Changed("on-failure") {
		set = true
		switch f.onFailure {
		case "pause":
			o.OnFailure = hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_PAUSE
		case "rollback":
			o.OnFailure = hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK
		default:
			return nil, fmt.Errorf("--on-failure %q: pause or rollback", f.onFailure)
		}
	}
	if !set {
		return nil, nil
	}
	return o, nil
}

// waitRollout is push --wait for a push delivered in waves: it follows the
// rollout until it completes (exit 0) or pauses, rolls back or is aborted
// (exit 1, with the reason). found is false when gen has no rollout (the
// push reached every node at once: wait for status as before).
func waitRollout(ctx context.Context, cmd *cobra.Command, c *client.Conn, gen uint64, progress io.Writer) (found bool, err error) {
	cctx, cancel := callCtx(ctx)
	resp, err := c.GetRollout(cctx, &hivev1.GetRolloutRequest{})
	cancel()
	if status.Code(err) == codes.NotFound || status.Code(err) == codes.Unimplemented || (err == nil && resp.GetStatus().GetRollout().GetGeneration() != gen) {
		return false, nil
	}
	if err != nil {
		return true, rpcError("rollout status", err, false)
	}
	r, err := followRollout(ctx, c, gen, progress, false, true)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return true, err
		}
		return true, err
	}
	if r.GetState() != hivev1.RolloutState_ROLLOUT_STATE_COMPLETED {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s\n(see 'hivectl rollout status'; resume, promote or abort it with 'hivectl rollout')\n", rolloutHeadline(r))
		return true, &exitError{code: 1}
	}
	return true, nil
}
