// Package pkgrepo is the converge provider for "repo:" resources: package
// repository definitions.
//
// On the Debian family a repo is a deb822 file
// /etc/apt/sources.list.d/hive-<name>.sources whose Signed-By points to the
// repository's key in /etc/apt/keyrings/hive-<name>.asc; on the RHEL family
// it is /etc/yum.repos.d/hive-<name>.repo with gpgkey pointing to
// /etc/pki/rpm-gpg/RPM-GPG-KEY-hive-<name> (or to signing_key_url). The
// files are written through the file provider (atomic, confined to the
// root), so a repo's plan is the unified diff of its files.
//
// The provider does not refresh package metadata itself: the package
// provider refreshes when a repo changed earlier in the run (Batch.Changed)
// or when a wanted package is unknown.
//
// A signing key is checked before anything is written: it must be an
// ASCII-armored OpenPGP public key whose armor checksum and first packet
// are valid (ErrBadKey). A key given by URL is fetched in Plan (read-only
// for the host) with the context's deadline.
//
// Called by the engine from one goroutine at a time.
package pkgrepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/file"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// ErrBadKey is returned for a signing key that is not an armored OpenPGP
// public key, or that cannot be fetched.
var ErrBadKey = errors.New("bad repository signing key")

// Provider manages repository definitions.
type Provider struct {
	files  *file.Provider
	client *http.Client
	// family forces the family when not empty.
	family converge.Family
}

// Config configures the provider.
type Config struct {
	// Family forces the OS family; empty uses Env.Family.
	Family converge.Family
	// HTTPClient fetches keys given by URL (default http.DefaultClient).
	HTTPClient *http.Client
}

// New returns a provider.
func New(cfg Config) *Provider {
	c := cfg.HTTPClient
	if c == nil {
		c = http.DefaultClient
	}
	return &Provider{files: file.New(), client: c, family: cfg.Family}
}

// Kind implements converge.Provider.
func (*Provider) Kind() string { return converge.KindRepo }

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Validate implements converge.Validator.
func (*Provider) Validate(r *hivev1.Resource) error {
	rp := r.GetRepo()
	if rp == nil {
		return fmt.Errorf("%w: not a repo resource", converge.ErrInvalid)
	}
	// The rules hivectl validate applies, so that it refuses first.
	if err := site.CheckRepoName(rp.GetName()); err != nil {
		return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
	}
	if rp.GetUrl() == "" {
		return fmt.Errorf("%w: repo url is empty", converge.ErrInvalid)
	}
	if err := site.CheckRepoWord("URL", rp.GetUrl()); err != nil {
		return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
	}
	for _, s := range append([]string{rp.GetSuite()}, append(rp.GetComponents(), rp.GetArchitectures()...)...) {
		if err := site.CheckRepoWord("suite, component or architecture", s); err != nil {
			return fmt.Errorf("%w: %w", converge.ErrInvalid, err)
		}
	}
	if rp.GetSigningKey() != "" {
		if err := CheckKey([]byte(rp.GetSigningKey())); err != nil {
			return err
		}
	}
	return nil
}

type sub struct {
	changes []*converge.Change
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	fam := p.family
	if fam == converge.FamilyUnknown {
		fam = env.Family
	}
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := &converge.Change{}
		out = append(out, c)
		files, err := p.files4(ctx, fam, it.Resource.GetRepo())
		if err != nil {
			c.Err = err
			continue
		}
		fb := &converge.Batch{Changed: b.Changed}
		for _, f := range files {
			r := &hivev1.Resource{Key: converge.KindFile + ":" + f.GetPath(), Kind: &hivev1.Resource_File{File: f}}
			fb.Items = append(fb.Items, converge.Item{Key: r.Key, Resource: r})
		}
		fchs, err := p.files.Plan(ctx, env, fb)
		if err != nil {
			return nil, err
		}
		s := &sub{}
		var sums, diffs []string
		for i, fc := range fchs {
			fc.Key, fc.Resource = fb.Items[i].Key, fb.Items[i].Resource
			if fc.Err != nil {
				c.Err = fmt.Errorf("%s: %w", files[i].GetPath(), fc.Err)
				break
			}
			if fc.Needed {
				s.changes = append(s.changes, fc)
				sums = append(sums, files[i].GetPath()+": "+fc.Summary)
				diffs = append(diffs, fc.Diff)
			}
		}
		if c.Err == nil && len(s.changes) > 0 {
			c.Needed, c.Data = true, s
			c.Summary = strings.Join(sums, "; ")
			c.Diff = strings.Join(diffs, "")
		}
	}
	return out, nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, c := range changes {
		s, ok := c.Data.(*sub)
		if !ok {
			c.Err = errors.New("pkgrepo: change without plan data")
			continue
		}
		if err := p.files.Apply(ctx, env, s.changes); err != nil {
			return err
		}
		for _, fc := range s.changes {
			if fc.Err != nil {
				c.Err = fmt.Errorf("%s: %w", converge.NameOf(fc.Key), fc.Err)
				break
			}
		}
	}
	return nil
}

// AptPaths returns the .sources file and key paths of an apt repo.
func AptPaths(name string) (sources, key string) {
	return "/etc/apt/sources.list.d/hive-" + name + ".sources", "/etc/apt/keyrings/hive-" + name + ".asc"
}

// YumPaths returns the .repo file and key paths of a yum repo.
func YumPaths(name string) (repo, key string) {
	return "/etc/yum.repos.d/hive-" + name + ".repo", "/etc/pki/rpm-gpg/RPM-GPG-KEY-hive-" + name
}

// files4 returns the files that define the repo on the family.
func (p *Provider) files4(ctx context.Context, fam converge.Family, rp *hivev1.Repo) ([]*hivev1.File, error) {
	typ := rp.GetType()
	switch {
	case typ == hivev1.RepoType_REPO_TYPE_UNSPECIFIED && fam == converge.FamilyDebian:
		typ = hivev1.RepoType_REPO_TYPE_APT
	case typ == hivev1.RepoType_REPO_TYPE_UNSPECIFIED && fam == converge.FamilyRHEL:
		typ = hivev1.RepoType_REPO_TYPE_YUM
	}
	switch {
	case typ == hivev1.RepoType_REPO_TYPE_APT && fam != converge.FamilyDebian,
		typ == hivev1.RepoType_REPO_TYPE_YUM && fam != converge.FamilyRHEL:
		return nil, fmt.Errorf("%s repository on a node of family %q", strings.ToLower(strings.TrimPrefix(typ.String(), "REPO_TYPE_")), fam)
	case typ == hivev1.RepoType_REPO_TYPE_UNSPECIFIED:
		return nil, fmt.Errorf("repository type not given and os family %q unknown", fam)
	}
	var key []byte
	if rp.GetGpgcheck() {
		switch {
		case rp.GetSigningKey() != "":
			key = []byte(rp.GetSigningKey())
		case rp.GetSigningKeyUrl() != "" && typ == hivev1.RepoType_REPO_TYPE_APT:
			var err error
			if key, err = p.fetch(ctx, rp.GetSigningKeyUrl()); err != nil {
				return nil, err
			}
		case rp.GetSigningKeyUrl() == "":
			return nil, fmt.Errorf("%w: gpgcheck is on but no signing_key or signing_key_url is given", ErrBadKey)
		}
		if key != nil {
			if err := CheckKey(key); err != nil {
				return nil, err
			}
		}
	}
	header := "# Managed by hive (repo:" + rp.GetName() + "); local changes are overwritten.\n"
	if typ == hivev1.RepoType_REPO_TYPE_APT {
		srcPath, keyPath := AptPaths(rp.GetName())
		suite := rp.GetSuite()
		if suite == "" {
			suite = "stable"
		}
		comps := rp.GetComponents()
		if len(comps) == 0 {
			comps = []string{"main"}
		}
		var b strings.Builder
		b.WriteString(header)
		fmt.Fprintf(&b, "Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n", rp.GetUrl(), suite, strings.Join(comps, " "))
		if len(rp.GetArchitectures()) > 0 {
			fmt.Fprintf(&b, "Architectures: %s\n", strings.Join(rp.GetArchitectures(), " "))
		}
		files := []*hivev1.File{}
		if key != nil {
			fmt.Fprintf(&b, "Signed-By: %s\n", keyPath)
			files = append(files, &hivev1.File{Path: "/etc/apt/keyrings", State: hivev1.FileState_FILE_STATE_DIRECTORY, Mode: 0o755},
				&hivev1.File{Path: keyPath, Content: string(key), Mode: 0o644})
		} else {
			b.WriteString("Trusted: yes\n")
		}
		return append(files, &hivev1.File{Path: srcPath, Content: b.String(), Mode: 0o644}), nil
	}
	repoPath, keyPath := YumPaths(rp.GetName())
	var b strings.Builder
	b.WriteString(header)
	fmt.Fprintf(&b, "[hive-%s]\nname=%s (hive)\nbaseurl=%s\nenabled=1\n", rp.GetName(), rp.GetName(), rp.GetUrl())
	var files []*hivev1.File
	switch {
	case !rp.GetGpgcheck():
		b.WriteString("gpgcheck=0\n")
	case key != nil:
		fmt.Fprintf(&b, "gpgcheck=1\ngpgkey=file://%s\n", keyPath)
		files = append(files, &hivev1.File{Path: keyPath, Content: string(key), Mode: 0o644})
	default:
		fmt.Fprintf(&b, "gpgcheck=1\ngpgkey=%s\n", rp.GetSigningKeyUrl())
	}
	return append(files, &hivev1.File{Path: repoPath, Content: b.String(), Mode: 0o644}), nil
}

func (p *Provider) fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: fetch %s: %v", ErrBadKey, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: fetch %s: %s", ErrBadKey, url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: fetch %s: %v", ErrBadKey, url, err)
	}
	return b, nil
}
