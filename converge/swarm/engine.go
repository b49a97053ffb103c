package swarm

// The engine's settings for the site registry (Swarm.registry): its
// address in registry-mirrors of /etc/docker/daemon.json (other keys and
// other mirrors are kept), and the site CA as
// /etc/docker/certs.d/HOST:PORT/ca.crt, or, for a plain-HTTP registry
// (insecure), the address in insecure-registries. dockerd reloads
// registry-mirrors and insecure-registries on SIGHUP and reads certs.d at
// each pull: when daemon.json changed, the engine is reloaded (once, after
// the files are written, before any swarm step), and only then; a reload
// keeps the engine and its tasks running, where a restart would stop every
// task of the node.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Paths of the engine's settings (below Env.Root).
const (
	DaemonJSON = "/etc/docker/daemon.json"
	CertsDir   = "/etc/docker/certs.d"
)

// engineFile is a file the engine settings need written.
type engineFile struct {
	path string // host path
	data []byte
	perm os.FileMode
}

// planEngine plans the engine's registry settings: the files to write
// and, when one changes, a restart of the engine.
func (p *Provider) planEngine(env *converge.Env, s *hivev1.Swarm, d *planData) error {
	reg := s.GetRegistry()
	if reg.GetAddress() == "" {
		return nil
	}
	path, err := env.Path(DaemonJSON)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", DaemonJSON, err)
	}
	cfg := map[string]any{}
	if len(bytes.TrimSpace(old)) > 0 {
		if err := json.Unmarshal(old, &cfg); err != nil {
			return fmt.Errorf("%w: %s is not a JSON object: %v (fix it by hand; hive only adds its registry keys)", ErrInvalid, DaemonJSON, err)
		}
	}
	var added []string
	add := func(key, val string) error {
		var list []string
		switch v := cfg[key].(type) {
		case nil:
		case []any:
			for _, e := range v {
				s, ok := e.(string)
				if !ok {
					return fmt.Errorf("%w: %s: %s holds a non-string", ErrInvalid, DaemonJSON, key)
				}
				list = append(list, s)
			}
		default:
			return fmt.Errorf("%w: %s: %s is not a list", ErrInvalid, DaemonJSON, key)
		}
		if slices.Contains(list, val) {
			return nil
		}
		cfg[key] = append(list, val)
		added = append(added, key+" "+val)
		return nil
	}
	scheme := "https://"
	if reg.GetInsecure() {
		scheme = "http://"
		if err := add("insecure-registries", reg.GetAddress()); err != nil {
			return err
		}
	}
	if reg.GetMirror() {
		if err := add("registry-mirrors", scheme+reg.GetAddress()); err != nil {
			return err
		}
	}
	var files []engineFile
	var notes []string
	reload := len(added) > 0
	if len(added) > 0 {
		data, _ := json.MarshalIndent(cfg, "", "  ")
		files = append(files, engineFile{path: path, data: append(data, '\n'), perm: 0o644})
		notes = append(notes, fmt.Sprintf("%s: add %v", DaemonJSON, added))
	}
	if !reg.GetInsecure() {
		ca, err := p.siteCA()
		if err != nil {
			return err
		}
		cpath, err := env.Path(filepath.Join(CertsDir, reg.GetAddress(), "ca.crt"))
		if err != nil {
			return err
		}
		if cur, err := os.ReadFile(cpath); err != nil || !bytes.Equal(cur, ca) {
			files = append(files, engineFile{path: cpath, data: ca, perm: 0o644})
			notes = append(notes, fmt.Sprintf("write the site CA to %s/%s/ca.crt", CertsDir, reg.GetAddress()))
		}
	}
	if len(files) == 0 {
		return nil
	}
	// The notes only describe; the engine step writes and restarts.
	for _, n := range notes {
		d.steps = append(d.steps, step{kind: "note", text: n})
	}
	text := "site CA written (read at each pull; no reload needed)"
	if reload {
		text = "reload the Docker engine (SIGHUP) to load its registry settings"
	}
	d.steps = append(d.steps, step{kind: "engine", files: files, reload: reload, text: text})
	return nil
}

// siteCA returns the site CA (Config.CAFile).
func (p *Provider) siteCA() ([]byte, error) {
	if p.cfg.CAFile == "" {
		return nil, fmt.Errorf("%w: the registry is served over TLS but the agent has no site CA file (--tls-ca): set registry.insecure for a plain-HTTP registry", ErrInvalid)
	}
	b, err := os.ReadFile(p.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read the site CA: %w", err)
	}
	return b, nil
}

// applyEngine writes the files and, when daemon.json changed, reloads the
// engine (which keeps running: nothing to wait for).
func (p *Provider) applyEngine(ctx context.Context, env *converge.Env, st step) error {
	for _, f := range st.files {
		if err := atomicfile.Write(f.path, f.data, atomicfile.Options{Perm: f.perm, MkdirPerm: 0o755}); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	if !st.reload {
		return nil
	}
	argv := p.cfg.ReloadCommand
	if len(argv) == 0 {
		argv = []string{"systemctl", "reload", "docker.service"}
	}
	c := converge.Cmd{Name: argv[0], Args: argv[1:]}
	out, err := env.Runner.Run(ctx, c)
	if err == nil && out.ExitCode != 0 {
		err = fmt.Errorf("exit status %d", out.ExitCode)
	}
	if err != nil {
		return fmt.Errorf("reload the Docker engine (%s): %w: %s", c, err, bytes.TrimSpace(out.Stderr))
	}
	p.log.Info("docker engine reloaded for its registry settings")
	return nil
}
