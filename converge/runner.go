package converge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// ExecRunner runs commands with os/exec. The zero value is ready to use.
type ExecRunner struct {
	// BaseEnv replaces the process environment when not nil.
	BaseEnv []string
}

// Run runs c and waits for it. A non-zero exit is returned as *ExitError
// together with the output.
func (r ExecRunner) Run(ctx context.Context, c Cmd) (Output, error) {
	cmd := exec.CommandContext(ctx, c.Name, c.Args...)
	env := r.BaseEnv
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(append([]string(nil), env...), c.Env...)
	cmd.Dir = c.Dir
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := Output{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		return out, fmt.Errorf("%s: %w", c.Name, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out, &ExitError{Cmd: c.String(), Code: out.ExitCode, Stderr: string(out.Stderr)}
	}
	if err != nil {
		return out, fmt.Errorf("run %s: %w", c.Name, err)
	}
	return out, nil
}

// ExitError is a command that exited non-zero.
type ExitError struct {
	Cmd    string
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if len(msg) > 600 {
		msg = "…" + msg[len(msg)-600:]
	}
	return fmt.Sprintf("%s: exit status %d: %s", e.Cmd, e.Code, msg)
}
