// Package command is the converge provider of the "command" resource kind:
// a guarded command for what no other kind covers.
//
// Plan decides whether the command would run: not when `creates` exists,
// not when `unless` exits 0, not when `onlyif` exits non-zero, and, for an
// `on_notify` command, only when a resource that notifies it changed (or
// would change, in a dry run) earlier in the run. The guards run in Plan,
// also in dry runs, so they must only look: that is the operator's
// contract, written in docs/resources.md. Every command needs a guard or
// on_notify (site.CheckCommand), so that a second run is a no-op.
//
// Apply runs the command under timeout(1), which kills the command's whole
// process group when the timeout expires (and KILLs it 5 s later), so a
// shell's children cannot outlive it. Its output (stdout and stderr,
// interleaved, through a scratch file so that it never fills the agent's
// memory) is bounded to the last MaxOutput bytes and goes to the result's
// diff with
// the node's secret values masked; a non-zero exit or a timeout fails the
// resource with a message that says which. Secrets the command names are
// in its environment as HIVE_SECRET_<NAME>, never on its command line.
//
// Nothing is pruned: a command leaves nothing hive could know to undo.
// The engine calls Plan and Apply from one goroutine per run; commands run
// one at a time through env.Runner and block for at most their timeout.
package command

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Kind is the resource kind.
const Kind = "command"

// MaxOutput bounds the output kept in a result.
const MaxOutput = 4 << 10

// KillAfter is how long timeout(1) waits after TERM before KILL.
const KillAfter = 5 * time.Second

// Errors, wrapped in Change.Err.
var (
	// ErrTimeout is returned when a command (or a guard) ran past its timeout.
	ErrTimeout = errors.New("timed out")
	// ErrFailed is returned when a command exits non-zero.
	ErrFailed = errors.New("command failed")
	// ErrSecret is returned when a secret the command names has no value.
	ErrSecret = errors.New("secret has no value")
)

// Provider converges command resources.
type Provider struct{}

// New returns a provider.
func New() *Provider { return &Provider{} }

var (
	_ converge.Provider  = (*Provider)(nil)
	_ converge.Validator = (*Provider)(nil)
)

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return Kind }

// Validate implements converge.Validator.
func (p *Provider) Validate(r *hivev1.Resource) error {
	c := r.GetCommand()
	if c == nil {
		return fmt.Errorf("%w: not a command resource", converge.ErrInvalid)
	}
	if err := site.FirstProblem(site.CheckCommand(c)); err != nil {
		return fmt.Errorf("%w: %v", converge.ErrInvalid, err)
	}
	return nil
}

func timeout(c *hivev1.GuardedCommand) time.Duration {
	if c.GetTimeoutSeconds() == 0 {
		return site.DefaultCommandTimeout
	}
	return time.Duration(c.GetTimeoutSeconds()) * time.Second
}

// environment returns the command's extra environment: its own, then its
// secrets.
func environment(env *converge.Env, c *hivev1.GuardedCommand) ([]string, error) {
	out := append([]string(nil), c.GetEnvironment()...)
	for _, s := range c.GetSecrets() {
		v, ok := env.Secrets[s]
		if !ok {
			return nil, fmt.Errorf("%w: %s (set it with hivectl secret set)", ErrSecret, s)
		}
		out = append(out, site.CommandSecretEnv(s)+"="+string(v))
	}
	return out, nil
}

// describe is the command for messages: argv or the shell line, cut.
func describe(c *hivev1.GuardedCommand) string {
	s := c.GetShell()
	if s == "" {
		s = strings.Join(c.GetArgv(), " ")
	}
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}

// run runs argv under timeout(1) and returns the exit code (0 with a nil
// error on success), the bounded output and an error for a timeout or a
// failure to start.
func run(ctx context.Context, env *converge.Env, c *hivev1.GuardedCommand, argv []string) (int, string, error) {
	vars, err := environment(env, c)
	if err != nil {
		return -1, "", err
	}
	t := timeout(c)
	dir := ""
	if c.GetDir() != "" {
		if dir, err = env.Path(c.GetDir()); err != nil {
			return -1, "", err
		}
	}
	// A backstop past timeout(1)'s own deadline and KILL.
	cctx, cancel := context.WithTimeout(ctx, t+KillAfter+10*time.Second)
	defer cancel()
	// The output goes to a scratch file, not through memory: a command
	// that prints gigabytes costs disk for a moment, never the agent's
	// memory; its last MaxOutput bytes are kept.
	f, err := os.CreateTemp("", "hive-command-*.out")
	if err != nil {
		return -1, "", fmt.Errorf("output file: %w", err)
	}
	outPath := f.Name()
	f.Close()
	defer os.Remove(outPath)
	args := append([]string{"--kill-after=" + strconv.Itoa(int(KillAfter/time.Second)), strconv.Itoa(int(t / time.Second)),
		"/bin/sh", "-c", `exec "$@" >"$HIVE_COMMAND_OUTPUT" 2>&1`, "sh"}, argv...)
	start := time.Now()
	out, err := env.Runner.Run(cctx, converge.Cmd{Name: "timeout", Args: args, Env: append(vars, "HIVE_COMMAND_OUTPUT="+outPath), Dir: dir})
	raw, cut := tailFile(outPath, MaxOutput)
	raw = append(append(out.Stdout, out.Stderr...), raw...) // the wrapper's own messages, if any
	output := env.Mask(mask(string(raw), env, c))
	if cut > 0 {
		output = fmt.Sprintf("[… %d bytes cut]\n%s", cut, output)
	}
	if ctx.Err() != nil {
		return -1, output, ctx.Err()
	}
	var ee *converge.ExitError
	switch {
	case err == nil:
		return 0, output, nil
	case errors.As(err, &ee) && (ee.Code == 124 || ee.Code == 137):
		return ee.Code, output, fmt.Errorf("%w after %s (killed; ran %s)", ErrTimeout, t, time.Since(start).Round(time.Millisecond))
	case cctx.Err() != nil:
		return -1, output, fmt.Errorf("%w after %s (killed)", ErrTimeout, t)
	case errors.As(err, &ee):
		return ee.Code, output, nil
	}
	return -1, output, err
}

// mask replaces the values of the command's own secrets (even short ones)
// before the node-wide mask.
func mask(s string, env *converge.Env, c *hivev1.GuardedCommand) string {
	for _, n := range c.GetSecrets() {
		if v := env.Secrets[n]; len(v) > 0 {
			s = strings.ReplaceAll(s, string(v), "<secret:"+n+">")
		}
	}
	return s
}

// tailFile returns the last max bytes of a file and how many came before.
func tailFile(path string, max int64) ([]byte, int64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0
	}
	cut := fi.Size() - max
	if cut < 0 {
		cut = 0
	}
	b := make([]byte, fi.Size()-cut)
	n, _ := f.ReadAt(b, cut)
	return b[:n], cut
}

func argv(c *hivev1.GuardedCommand) []string {
	if c.GetShell() != "" {
		return []string{"/bin/sh", "-c", c.GetShell()}
	}
	return c.GetArgv()
}

// guard runs a shell guard and reports whether it exited 0.
func guard(ctx context.Context, env *converge.Env, c *hivev1.GuardedCommand, name, shell string) (bool, error) {
	code, out, err := run(ctx, env, c, []string{"/bin/sh", "-c", shell})
	if err != nil {
		return false, fmt.Errorf("%s guard: %w%s", name, err, tail(out))
	}
	return code == 0, nil
}

func tail(out string) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	if i := strings.LastIndexByte(out, '\n'); i >= 0 && len(out)-i < 300 {
		return ": " + out[i+1:]
	}
	if len(out) > 300 {
		out = "…" + out[len(out)-300:]
	}
	return ": " + out
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{}
		out[i] = ch
		ch.Needed, ch.Summary, ch.Err = p.plan(ctx, env, it)
		ch.Data = it.Resource.GetCommand()
	}
	return out, nil
}

func (p *Provider) plan(ctx context.Context, env *converge.Env, it converge.Item) (bool, string, error) {
	c := it.Resource.GetCommand()
	if c.GetOnNotify() && len(it.Notified) == 0 {
		return false, "runs only when notified", nil
	}
	if _, err := environment(env, c); err != nil {
		return false, "", err
	}
	if cr := c.GetCreates(); cr != "" {
		hp, err := env.Path(cr)
		if err != nil {
			return false, "", err
		}
		_, err = os.Lstat(hp)
		switch {
		case err == nil:
			return false, cr + " exists", nil
		case !errors.Is(err, fs.ErrNotExist):
			return false, "", fmt.Errorf("creates %s: %w", cr, err)
		}
	}
	if u := c.GetUnless(); u != "" {
		ok, err := guard(ctx, env, c, "unless", u)
		if err != nil {
			return false, "", err
		}
		if ok {
			return false, "unless guard passed", nil
		}
	}
	if o := c.GetOnlyif(); o != "" {
		ok, err := guard(ctx, env, c, "onlyif", o)
		if err != nil {
			return false, "", err
		}
		if !ok {
			return false, "onlyif guard failed", nil
		}
	}
	why := ""
	if len(it.Notified) > 0 {
		why = " (notified by " + strings.Join(it.Notified, ", ") + ")"
	}
	return true, "run " + describe(c) + why, nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, ok := ch.Data.(*hivev1.GuardedCommand)
		if !ok {
			ch.Err = errors.New("command: change without its command")
			continue
		}
		start := time.Now()
		code, out, err := run(ctx, env, c, argv(c))
		ch.Diff = out
		took := time.Since(start).Round(time.Millisecond)
		switch {
		case err != nil:
			ch.Err = fmt.Errorf("%s: %w%s", describe(c), err, tail(out))
		case code != 0:
			ch.Err = fmt.Errorf("%w: %s: exit status %d after %s%s", ErrFailed, describe(c), code, took, tail(out))
		default:
			ch.Summary = fmt.Sprintf("%s: exit status 0 after %s", strings.TrimPrefix(ch.Summary, "run "), took)
			if cr := c.GetCreates(); cr != "" {
				if hp, err := env.Path(cr); err == nil {
					if _, err := os.Lstat(hp); err != nil {
						ch.Summary += fmt.Sprintf("; %s still missing: it will run again", cr)
					}
				}
			}
		}
	}
	return nil
}
