package repocli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/hivefleet/hive/repo"
)

// registryFlags are the flags of the image registry under /v2/ (docs/repo.md, "Image registry").
type registryFlags struct {
	on, anonPull             bool
	upstream, user, passFile string
	cacheTTL                 time.Duration
}

func addRegistryFlags(fl *pflag.FlagSet, f *registryFlags) {
	def := repo.DefaultConfig().Registry
	fl.BoolVar(&f.on, "registry", true, "serve the OCI image registry under /v2/ (push with the upload token)")
	fl.BoolVar(&f.anonPull, "registry-anonymous-pull", def.AnonymousPull, "let image pulls through without credentials (false: pulls need the upload token)")
	fl.StringVar(&f.upstream, "registry-upstream", "", "registry URL cached pull-through for repositories not pushed here (e.g. https://registry-1.docker.io; empty: off)")
	fl.StringVar(&f.user, "registry-upstream-user", "", "user name for the upstream registry")
	fl.StringVar(&f.passFile, "registry-upstream-password-file", "", "file holding the upstream registry's password")
	fl.DurationVar(&f.cacheTTL, "registry-cache-ttl", def.CacheTTL, "how long pulled-through content is kept (0: forever)")
}

func (f *registryFlags) apply(cfg *repo.Config) error {
	r := &cfg.Registry
	r.Disabled, r.AnonymousPull = !f.on, f.anonPull
	r.Upstream, r.UpstreamUsername, r.CacheTTL = f.upstream, f.user, f.cacheTTL
	if f.passFile != "" {
		b, err := os.ReadFile(f.passFile)
		if err != nil {
			return fmt.Errorf("--registry-upstream-password-file: %w", err)
		}
		r.UpstreamPassword = strings.TrimSpace(string(b))
	}
	return nil
}
