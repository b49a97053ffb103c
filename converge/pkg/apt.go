package pkg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hivefleet/hive/converge"
)

// apt drives apt-get/apt-cache and reads dpkg's status file.
type apt struct {
	env         *converge.Env
	args        []string
	lockTimeout time.Duration
}

func (a *apt) debian() bool { return true }

// cmd runs an apt tool, inside the root with chroot unless it is "/".
func (a *apt) cmd(ctx context.Context, tool string, args ...string) (converge.Output, error) {
	full := append(append([]string{}, a.args...), args...)
	c := converge.Cmd{Name: tool, Args: full, Env: []string{"DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"}}
	if !a.env.HostRoot() {
		c = converge.Cmd{Name: "chroot", Args: append([]string{a.env.Root, tool}, full...), Env: c.Env}
	}
	return a.env.Runner.Run(ctx, c)
}

func (a *apt) installed(ctx context.Context) (map[string]installed, error) {
	p, err := a.env.Path("/var/lib/dpkg/status")
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]installed{}, nil // a fresh sandbox root: nothing installed
	}
	if err != nil {
		return nil, err
	}
	return parseDpkgStatus(data), nil
}

// parseDpkgStatus returns the packages whose Status is "… installed".
func parseDpkgStatus(data []byte) map[string]installed {
	out := map[string]installed{}
	for _, stanza := range bytes.Split(data, []byte("\n\n")) {
		var name, status, version, arch string
		sc := bufio.NewScanner(bytes.NewReader(stanza))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if line == "" || line[0] == ' ' || line[0] == '\t' {
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "Package":
				name = v
			case "Status":
				status = v
			case "Version":
				version = v
			case "Architecture":
				arch = v
			}
		}
		f := strings.Fields(status)
		if name != "" && len(f) == 3 && f[2] == "installed" {
			out[name] = installed{Version: version, Arch: arch}
		}
	}
	return out
}

func (a *apt) lockFiles(ctx context.Context) ([]string, error) {
	var out []string
	for _, p := range []string{"/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock"} {
		hp, err := a.env.Path(p)
		if err != nil {
			return nil, err
		}
		out = append(out, hp)
	}
	return out, nil
}

// available asks apt-cache madison, which lists repository versions only.
func (a *apt) available(ctx context.Context, names []string) (map[string][]string, error) {
	out, err := a.cmd(ctx, "apt-cache", append([]string{"madison"}, names...)...)
	if err != nil {
		return nil, err
	}
	return parseMadison(out.Stdout), nil
}

func parseMadison(data []byte) map[string][]string {
	res := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) < 3 || !strings.Contains(f[2], "Packages") {
			continue
		}
		n, v := strings.TrimSpace(f[0]), strings.TrimSpace(f[1])
		dup := false
		for _, x := range res[n] {
			dup = dup || x == v
		}
		if !dup {
			res[n] = append(res[n], v)
		}
	}
	return res
}

func (a *apt) lockOpt() []string {
	return []string{"-o", "DPkg::Lock::Timeout=" + strconv.Itoa(int(a.lockTimeout.Seconds()))}
}

func (a *apt) refresh(ctx context.Context) error {
	_, err := a.cmd(ctx, "apt-get", append(a.lockOpt(), "update", "-q", "--error-on=any")...)
	return err
}

func (a *apt) transact(ctx context.Context, install []want, remove []string) error {
	args := append(a.lockOpt(), "install", "-y", "-q", "--no-install-recommends", "--allow-downgrades",
		"-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")
	for _, w := range install {
		switch {
		case w.exact != "":
			args = append(args, w.name+"="+w.exact)
		case w.version != "":
			args = append(args, w.name+"="+w.version)
		default:
			args = append(args, w.name)
		}
	}
	for _, n := range remove {
		args = append(args, n+"-")
	}
	_, err := a.cmd(ctx, "apt-get", args...)
	if err != nil {
		var ee *converge.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("apt-get install (one transaction, nothing changed when it fails before dpkg runs): %w", err)
		}
	}
	return err
}
