package pkg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/hivefleet/hive/converge"
)

// dnf drives dnf with --installroot and reads the database with rpm --root.
type dnf struct {
	env  *converge.Env
	args []string
	db   string // host path of the rpm database, once known
}

func (d *dnf) debian() bool { return false }

func (d *dnf) root() string {
	if d.env.Root == "" {
		return "/"
	}
	return d.env.Root
}

func (d *dnf) run(ctx context.Context, args ...string) (converge.Output, error) {
	full := append([]string{"--installroot=" + d.root(), "-q"}, d.args...)
	return d.env.Runner.Run(ctx, converge.Cmd{Name: "dnf", Args: append(full, args...), Env: []string{"LC_ALL=C"}})
}

func (d *dnf) installed(ctx context.Context) (map[string]installed, error) {
	// rpm -qa creates an empty database where there is none; reading
	// must not change the machine, so a missing database is "nothing".
	db, err := d.dbPath(ctx)
	if err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(db); errors.Is(err, fs.ErrNotExist) || (err == nil && len(ents) == 0) {
		return map[string]installed{}, nil
	}
	out, err := d.env.Runner.Run(ctx, converge.Cmd{Name: "rpm", Args: []string{"--root", d.root(), "-qa",
		"--queryformat", `%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n`}, Env: []string{"LC_ALL=C"}})
	if err != nil {
		return nil, err
	}
	res := map[string]installed{}
	sc := bufio.NewScanner(bytes.NewReader(out.Stdout))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 || f[0] == "gpg-pubkey" {
			continue
		}
		res[f[0]] = installed{Version: f[1], Arch: f[2]}
	}
	return res, sc.Err()
}

// dbPath returns the host path of the rpm database inside the root
// (rpm's %{_dbpath}: /var/lib/rpm on RHEL, ~/.rpmdb with Debian's rpm).
func (d *dnf) dbPath(ctx context.Context) (string, error) {
	if d.db != "" {
		return d.db, nil
	}
	out, err := d.env.Runner.Run(ctx, converge.Cmd{Name: "rpm", Args: []string{"--eval", "%{_dbpath}"}})
	if err != nil {
		return "", err
	}
	d.db, err = d.env.Path(path.Clean(strings.TrimSpace(string(out.Stdout))))
	return d.db, err
}

func (d *dnf) lockFiles(ctx context.Context) ([]string, error) {
	db, err := d.dbPath(ctx)
	if err != nil {
		return nil, err
	}
	return []string{filepath.Join(db, ".rpm.lock")}, nil
}

func (d *dnf) available(ctx context.Context, names []string) (map[string][]string, error) {
	out, err := d.run(ctx, append([]string{"--cacheonly", "repoquery", "--available", "--qf", `%{name}\t%{epoch}:%{version}-%{release}\n`}, names...)...)
	if err != nil {
		return nil, err
	}
	res := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out.Stdout))
	for sc.Scan() {
		n, v, ok := strings.Cut(sc.Text(), "\t")
		if ok {
			res[n] = append(res[n], v)
		}
	}
	return res, nil
}

func (d *dnf) refresh(ctx context.Context) error {
	_, err := d.run(ctx, "--setopt=skip_if_unavailable=False", "makecache", "--refresh")
	return err
}

func (d *dnf) transact(ctx context.Context, install []want, remove []string) error {
	var specs []string
	for _, w := range install {
		switch {
		case w.exact != "":
			specs = append(specs, w.name+"-"+w.exact)
		case w.version != "":
			specs = append(specs, w.name+"-"+w.version)
		default:
			specs = append(specs, w.name)
		}
	}
	switch {
	case len(remove) == 0:
		_, err := d.run(ctx, append([]string{"-y", "install"}, specs...)...)
		return err
	case len(install) == 0:
		_, err := d.run(ctx, append([]string{"-y", "remove"}, remove...)...)
		return err
	}
	// Installs and removals together: one transaction through dnf shell.
	// Its exit status does not reflect failures, so Apply judges each
	// change by the database; dnf's messages become the error.
	script := "install " + strings.Join(specs, " ") + "\nremove " + strings.Join(remove, " ") + "\nrun\nexit\n"
	full := append([]string{"--installroot=" + d.root(), "-q"}, d.args...)
	out, err := d.env.Runner.Run(ctx, converge.Cmd{Name: "dnf", Args: append(full, "-y", "shell"),
		Env: []string{"LC_ALL=C"}, Stdin: []byte(script)})
	if err != nil {
		return err
	}
	if msg := strings.TrimSpace(string(out.Stderr)); msg != "" {
		return fmt.Errorf("dnf shell (install and remove in one transaction): %s", msg)
	}
	return nil
}
