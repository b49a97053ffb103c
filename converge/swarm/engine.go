package swarm

// The engine's settings for the site registry (Swarm.registry): its
// address in registry-mirrors of /etc/docker/daemon.json (other keys and
// other mirrors are kept), and the site CA as
// /etc/docker/certs.d/HOST:PORT/ca.crt, or, for a plain-HTTP registry
// (insecure), the address in insecure-registries. dockerd reads both only
// when it starts: when either changed, the engine is restarted (once, after
// both are written, before any swarm step), and only then.

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
	"time"

	"github.com/moby/moby/client"

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
	d.steps = append(d.steps, step{kind: "engine", files: files, text: "restart the Docker engine to load its registry settings"})
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

// applyEngine writes the files and restarts the engine, then waits for
// its API.
func (p *Provider) applyEngine(ctx context.Context, env *converge.Env, st step) error {
	for _, f := range st.files {
		if err := atomicfile.Write(f.path, f.data, atomicfile.Options{Perm: f.perm, MkdirPerm: 0o755}); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	restart := p.cfg.RestartEngine
	if restart == nil {
		restart = func(ctx context.Context) error {
			out, err := env.Runner.Run(ctx, converge.Cmd{Name: "systemctl", Args: []string{"restart", "docker.service"}})
			if err != nil {
				return fmt.Errorf("systemctl restart docker.service: %w: %s", err, bytes.TrimSpace(out.Stderr))
			}
			return nil
		}
	}
	if err := restart(ctx); err != nil {
		return fmt.Errorf("restart the Docker engine: %w", err)
	}
	p.log.Info("docker engine restarted for its registry settings")
	deadline := time.Now().Add(p.cfg.EngineWait)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := p.cli.Ping(pctx, client.PingOptions{})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("docker engine not answering %v after its restart: %w", p.cfg.EngineWait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
