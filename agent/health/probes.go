package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Bounds on what a probe reads.
const (
	// MaxBodyBytes is how much of an http check's response body is read
	// and matched.
	MaxBodyBytes = 64 << 10
	// MaxOutputBytes is how much of a command's output is kept (its
	// tail goes into the message when it fails).
	MaxOutputBytes = 4 << 10
)

// FromState returns the checks of a rendered state's roles, named
// "ROLE/NAME". A check the agent cannot build (a body pattern that does not
// compile, say, from a coordinator of another version) fails every run
// with the reason.
func FromState(st *hivev1.NodeState) []Check {
	var out []Check
	for _, hc := range st.GetChecks() {
		out = append(out, FromSpec(hc))
	}
	return out
}

// FromSpec builds the check of one HealthCheck.
func FromSpec(hc *hivev1.HealthCheck) Check {
	def, _ := proto.MarshalOptions{Deterministic: true}.Marshal(hc)
	c := Check{
		Name:     hc.GetRole() + "/" + hc.GetName(),
		Interval: time.Duration(hc.GetIntervalMs()) * time.Millisecond,
		Timeout:  time.Duration(hc.GetTimeoutMs()) * time.Millisecond,
		Failures: int(hc.GetFailures()),
		Def:      string(def),
	}
	if hc.GetRole() == "" {
		c.Name = hc.GetName()
	}
	if c.Interval < time.Second {
		c.Interval = 10 * time.Second
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		c.Timeout = min(5*time.Second, c.Interval)
	}
	if c.Failures < 1 {
		c.Failures = 3
	}
	switch k := hc.GetKind().(type) {
	case *hivev1.HealthCheck_Http:
		c.Kind = "http"
		c.Probe = HTTP(k.Http.GetUrl(), int(k.Http.GetStatus()), k.Http.GetBody())
	case *hivev1.HealthCheck_Tcp:
		c.Kind = "tcp"
		c.Probe = TCP(k.Tcp.GetAddress())
	case *hivev1.HealthCheck_Command:
		c.Kind = "command"
		c.Probe = Command(k.Command.GetArgv())
	default:
		c.Kind = "command"
		c.Probe = func(context.Context) error {
			return errors.New("check of an unknown kind (agent older than the coordinator?)")
		}
	}
	return c
}

// HTTP returns a probe that GETs url and wants status (200 when 0) and, if
// body is not empty, a match of the regular expression body in the first
// MaxBodyBytes of the response. Proxies from the environment are not used;
// redirects are followed (at most 5).
func HTTP(url string, status int, body string) Probe {
	if status == 0 {
		status = http.StatusOK
	}
	var re *regexp.Regexp
	if body != "" {
		var err error
		if re, err = regexp.Compile(body); err != nil {
			return func(context.Context) error { return fmt.Errorf("body pattern: %v", err) }
		}
	}
	tr := &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{}).DialContext,
		TLSClientConfig:   &tls.Config{MinVersion: tls.VersionTLS12},
	}
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			return nil
		},
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "hive-agent health check")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: %w", url, unwrapURL(err))
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("GET %s: reading the body: %w", url, ctx.Err())
		}
		if resp.StatusCode != status {
			return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, status)
		}
		if re != nil && !re.Match(data) {
			return fmt.Errorf("GET %s: body does not match %q", url, body)
		}
		return nil
	}
}

func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if e := ue.Unwrap(); e != nil {
			if errors.Is(e, context.DeadlineExceeded) {
				return errors.New("timed out")
			}
			return e
		}
	}
	return err
}

// TCP returns a probe that opens (and closes) a TCP connection to address.
func TCP(address string) Probe {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("connect %s: timed out", address)
			}
			return fmt.Errorf("connect %s: %v", address, stripOp(err))
		}
		return conn.Close()
	}
}

func stripOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// Command returns a probe that runs argv (no shell) with no stdin and
// wants exit status 0. On timeout the whole process group is killed. At
// most MaxOutputBytes of stdout and stderr together are kept; a failure's
// message ends with the last line of it.
func Command(argv []string) Probe {
	return func(ctx context.Context) error {
		if len(argv) == 0 || argv[0] == "" {
			return errors.New("empty command")
		}
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		out := &tailBuffer{max: MaxOutputBytes}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error {
			if cmd.Process == nil {
				return nil
			}
			return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		if err == nil {
			return nil
		}
		last := lastLine(out.String())
		switch {
		case ctx.Err() != nil:
			err = errors.New("timed out")
		case errors.Is(err, exec.ErrWaitDelay):
			return nil // exited 0; a child kept the output open
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.Exited() {
			err = fmt.Errorf("exit status %d", ee.ExitCode())
		}
		if last != "" {
			return fmt.Errorf("%s: %v: %s", argv[0], err, last)
		}
		return fmt.Errorf("%s: %v", argv[0], err)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) String() string { return string(bytes.ToValidUTF8(t.buf, []byte("?"))) }

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return clip(strings.TrimSpace(s), 160)
}
