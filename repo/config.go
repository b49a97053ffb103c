// Package repo is hive-repo: the site's own YUM and APT repositories with
// signed metadata, published atomically, plus a pull-through cache for
// upstream distribution mirrors.
//
// Layout of the data directory:
//
//	blobs/aa/<sha256>          every package and hash-named metadata file (package store)
//	meta/<sha256>.json         parsed header of a package, by content hash (the header cache)
//	repos/<name>/pkgs/*.json   which file name maps to which blob, per repository
//	repos/<name>/gens/<N>.json one published generation: root files + path → blob map
//	repos/<name>/current       symlink to the live generation, switched by one rename
//	mirror/<name>/...          mirror cache (package mirror.Cache)
//
// Invariants: a generation only refers to blobs written (and fsync'ed) before
// it; the root files of a repository (repomd.xml + .asc, InRelease, Release,
// Release.gpg) change together by replacing one symlink and one in-memory
// pointer; the last Config.KeepGenerations generations stay servable, so a
// client that read old root files still finds every file they name.
//
// Concurrency: HTTP handlers run on net/http's goroutines; readers never take
// a repository lock (they load the current generation through an atomic
// pointer). Uploads take the repository mutex briefly to update its package
// table. Each repository has one goroutine (started by Run) that publishes
// after uploads settle (debounce); publishes of one repository are
// serialized by a mutex, so a forced reindex and the debouncer never run at
// once. Publishing blocks on disk I/O and signing, never a reader.
package repo

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/hivefleet/hive/repo/mirror"
	"github.com/hivefleet/hive/repo/sign"
)

// DefaultAddr is hive-repo's default listen address.
const DefaultAddr = ":7480"

// Config configures a Server.
type Config struct {
	DataDir string
	Addr    string
	// Signer signs metadata; required.
	Signer *sign.Signer
	// UploadToken is the bearer token for writes; empty only with Dev.
	UploadToken string
	// Dev allows writes without a token (plaintext, local use).
	Dev bool
	// TLS, when set, makes Run serve HTTPS.
	TLS *tls.Config

	MaxUploadSize   int64         // bytes; default 2 GiB
	Debounce        time.Duration // quiet time after the last upload before publishing
	MaxDelay        time.Duration // longest a publish waits under a steady stream of uploads
	KeepGenerations int           // generations kept servable (default 4: current + 3)
	// KeepFor keeps every generation younger than this servable too, so a
	// client mid-update survives a fast series of publishes (default 2 min).
	KeepFor time.Duration

	Suite     string   // APT suite, default "stable"
	Component string   // APT component, default "main"
	AptArchs  []string // always-listed APT architectures (default amd64 arm64)
	// ValidFor sets Release's Valid-Until to Date+ValidFor (0: none).
	ValidFor time.Duration

	// Mirrors are the upstreams served under /mirror/<name>/.
	Mirrors map[string]mirror.Upstream
	// MirrorMaxBytes caps the mirror cache's disk use (default 10 GiB).
	MirrorMaxBytes int64
	// MirrorTTL is how long root metadata is served from cache without
	// asking the upstream (default 0: revalidate every time).
	MirrorTTL time.Duration

	// Registry configures the OCI image registry under /v2/ (registry.go).
	Registry RegistryConfig
}

// DefaultConfig returns a Config with defaults filled in.
func DefaultConfig() Config {
	return Config{
		Addr:            DefaultAddr,
		MaxUploadSize:   2 << 30,
		Debounce:        500 * time.Millisecond,
		MaxDelay:        5 * time.Second,
		KeepGenerations: 4,
		KeepFor:         2 * time.Minute,
		Suite:           "stable",
		Component:       "main",
		AptArchs:        []string{"amd64", "arm64"},
		MirrorMaxBytes:  10 << 30,
		Registry:        defaultRegistryConfig(),
	}
}

// Validate checks c.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.Signer == nil {
		errs = append(errs, errors.New("a signing key is required (hive-repo keygen makes one; --dev generates one)"))
	}
	if c.UploadToken == "" && !c.Dev {
		errs = append(errs, errors.New("an upload token is required unless --dev"))
	}
	if c.MaxUploadSize <= 0 {
		errs = append(errs, errors.New("max upload size must be positive"))
	}
	if c.Debounce < 0 || c.MaxDelay < c.Debounce {
		errs = append(errs, errors.New("debounce must be >= 0 and max delay >= debounce"))
	}
	if c.KeepGenerations < 2 {
		errs = append(errs, errors.New("keep generations must be at least 2"))
	}
	if !nameRe.MatchString(c.Suite) || !nameRe.MatchString(c.Component) {
		errs = append(errs, errors.New("bad suite or component name"))
	}
	for n, u := range c.Mirrors {
		if !nameRe.MatchString(n) {
			errs = append(errs, fmt.Errorf("mirror %q: bad name", n))
		}
		if pu, err := url.Parse(u.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") {
			errs = append(errs, fmt.Errorf("mirror %q: upstream must be an http(s) URL", n))
		}
	}
	errs = append(errs, c.Registry.validate()...)
	return errors.Join(errs...)
}
