// Package packaging builds the .deb and .rpm packages of hive (hive-agent,
// hive-coordinator, hive-repo, hivectl) with goreleaser/nfpm used as a
// library, so that `make packages` needs nothing but Go.
//
// What goes into each package is declared once, in Packages; the unit files,
// default configuration files and maintainer scripts are read from the
// repository's deploy/ directory (Config.DeployDir). The install layout is
// documented in docs/operations.md ("Packages and services") and checked by
// this package's tests against real dpkg, rpm and systemd-analyze.
//
// Build is called from deploy/packaging (the program `make packages` runs);
// it is not safe to run two Builds writing into the same OutDir at once.
package packaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager

	"github.com/hivefleet/hive/internal/atomicfile"
)

// Formats are the package formats Build can write.
var Formats = []string{"deb", "rpm"}

// Arches are the GOARCH values packages can be built for.
var Arches = []string{"amd64", "arm64"}

// Config says what to build from where.
type Config struct {
	// Version is the hive version: a release tag (v1.2.3, v1.2.3-rc.1),
	// `git describe` output (v1.2.3-4-gabcdef0[-dirty]), a bare commit
	// hash or "dev". See PackageVersion.
	Version string
	// Arch is the GOARCH of the binaries in BinDir.
	Arch string
	// BinDir holds hive-agent, hive-coordinator, hive-repo and hivectl
	// built for Arch.
	BinDir string
	// DeployDir is the repository's deploy/ directory.
	DeployDir string
	// OutDir receives the packages; it is created if missing.
	OutDir string
	// Formats to write (default: all of Formats).
	Formats []string
	// Packages to build by name (default: all of Packages).
	Packages []string
	// MTime is stamped on every file, for reproducible packages.
	MTime time.Time
	// Compression of the payload: gzip (the default), xz or zstd; none
	// (deb only) makes packages fast to build in tests.
	Compression string
}

// DefaultConfig returns a Config for the repository's usual layout,
// relative to its root: bin/ → dist/, version "dev", amd64.
func DefaultConfig() Config {
	return Config{
		Version:     "dev",
		Arch:        "amd64",
		BinDir:      "bin",
		DeployDir:   "deploy",
		OutDir:      "dist",
		Formats:     slices.Clone(Formats),
		MTime:       time.Unix(0, 0).UTC(),
		Compression: "gzip",
	}
}

// Validate checks c without touching the file system.
func (c Config) Validate() error {
	var errs []error
	if _, _, _, err := PackageVersion(c.Version); err != nil {
		errs = append(errs, err)
	}
	if !slices.Contains(Arches, c.Arch) {
		errs = append(errs, fmt.Errorf("arch %q: want one of %v", c.Arch, Arches))
	}
	if c.BinDir == "" || c.DeployDir == "" || c.OutDir == "" {
		errs = append(errs, errors.New("bin, deploy and out directories must be set"))
	}
	if len(c.Formats) == 0 {
		errs = append(errs, errors.New("no package format"))
	}
	for _, f := range c.Formats {
		if !slices.Contains(Formats, f) {
			errs = append(errs, fmt.Errorf("format %q: want one of %v", f, Formats))
		}
	}
	switch c.Compression {
	case "", "gzip", "xz", "zstd":
	case "none":
		if slices.Contains(c.Formats, "rpm") {
			errs = append(errs, errors.New("compression none is for deb only"))
		}
	default:
		errs = append(errs, fmt.Errorf("compression %q: want gzip, xz, zstd or none", c.Compression))
	}
	for _, p := range c.Packages {
		if _, ok := Lookup(p); !ok {
			errs = append(errs, fmt.Errorf("unknown package %q", p))
		}
	}
	return errors.Join(errs...)
}

// Artifact is one package file written by Build.
type Artifact struct {
	Package string // hive-agent, ...
	Format  string // deb or rpm
	Arch    string // GOARCH
	Path    string
}

// Build writes every requested package and returns the files written. It
// fails before writing anything if a source file is missing.
func Build(ctx context.Context, cfg Config, log *slog.Logger) ([]Artifact, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("packaging config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "packaging")
	version, pre, meta, _ := PackageVersion(cfg.Version)

	specs := Packages
	if len(cfg.Packages) > 0 {
		specs = nil
		for _, name := range cfg.Packages {
			s, _ := Lookup(name)
			specs = append(specs, s)
		}
	}

	scratch, err := os.MkdirTemp("", "hive-packaging-")
	if err != nil {
		return nil, fmt.Errorf("scratch dir: %w", err)
	}
	defer os.RemoveAll(scratch)

	infos := make([]*nfpm.Config, 0, len(specs))
	for _, s := range specs {
		c, err := s.nfpmConfig(cfg, scratch)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		c.Version, c.Prerelease, c.VersionMetadata = version, pre, meta
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		infos = append(infos, c)
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}

	var out []Artifact
	for _, c := range infos {
		for _, format := range cfg.Formats {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			a, err := write(c, format, cfg)
			if err != nil {
				return out, fmt.Errorf("%s %s: %w", c.Name, format, err)
			}
			log.Info("package written", "package", a.Package, "format", format, "arch", cfg.Arch, "path", a.Path)
			out = append(out, a)
		}
	}
	return out, nil
}

func write(c *nfpm.Config, format string, cfg Config) (Artifact, error) {
	info, err := c.Get(format)
	if err != nil {
		return Artifact{}, err
	}
	info = nfpm.WithDefaults(info)
	pkger, err := nfpm.Get(format)
	if err != nil {
		return Artifact{}, err
	}
	// ConventionalFileName and Package normalise info (arch names) in
	// place: give each its own copy.
	nameInfo := *info
	path := filepath.Join(cfg.OutDir, pkger.ConventionalFileName(&nameInfo))
	tmp, err := atomicfile.Create(path, atomicfile.Options{Perm: 0o644})
	if err != nil {
		return Artifact{}, err
	}
	defer tmp.Discard()
	if err := pkger.Package(info, tmp); err != nil {
		return Artifact{}, err
	}
	if err := tmp.Commit(); err != nil {
		return Artifact{}, err
	}
	return Artifact{Package: c.Name, Format: format, Arch: cfg.Arch, Path: path}, nil
}

var (
	releaseRE  = regexp.MustCompile(`^v?(\d+\.\d+\.\d+)(?:-([0-9A-Za-z.]+))?$`)
	describeRE = regexp.MustCompile(`^v?(\d+\.\d+\.\d+)(?:-([0-9A-Za-z.]+))?-(\d+)-g([0-9a-f]{4,40})(-dirty)?$`)
	hashRE     = regexp.MustCompile(`^([0-9a-f]{4,40})(-dirty)?$`)
)

// PackageVersion turns a hive version string into the parts deb and rpm
// versions are made of, ordered the way each format compares them:
//
//	v1.2.3               → 1.2.3
//	v1.2.3-rc.1          → 1.2.3 ~rc.1          (sorts before 1.2.3)
//	v1.2.3-4-gabcdef0    → 1.2.3 +git4.abcdef0  (sorts after 1.2.3)
//	abcdef0[-dirty], dev → 0.0.0 ~git.abcdef0[.dirty], 0.0.0 ~dev
func PackageVersion(v string) (version, prerelease, metadata string, err error) {
	if m := describeRE.FindStringSubmatch(v); m != nil {
		meta := "git" + m[3] + "." + m[4]
		if m[5] != "" {
			meta += ".dirty"
		}
		return m[1], m[2], meta, nil
	}
	if m := releaseRE.FindStringSubmatch(v); m != nil {
		return m[1], m[2], "", nil
	}
	if m := hashRE.FindStringSubmatch(v); m != nil {
		pre := "git." + m[1]
		if m[2] != "" {
			pre += ".dirty"
		}
		return "0.0.0", pre, "", nil
	}
	if v == "dev" {
		return "0.0.0", "dev", "", nil
	}
	if v == "dev-dirty" {
		return "0.0.0", "dev.dirty", "", nil
	}
	return "", "", "", fmt.Errorf("version %q: want vX.Y.Z[-pre], git describe output, a commit hash or dev", v)
}

// Spec declares one package.
type Spec struct {
	Name        string
	Description string
	// Binary is the file name in Config.BinDir, installed as /usr/bin/<Binary>.
	Binary string
	// Unit is the systemd unit (deploy/systemd/<Unit>), "" for none.
	Unit string
	// Config is the default configuration (deploy/config/<Config>),
	// installed as /etc/hive/<Config>; "" for none.
	Config string
	// ConfigGroup owns the configuration file (mode 0640) when not root.
	ConfigGroup string
	// CreateUser makes the preinst create the hive system user.
	CreateUser bool
	// Dirs are directories the package owns beyond the parents of its files.
	Dirs []Dir
	// Extra files: repository path under DeployDir → installed path.
	Extra []File
}

// Dir is a directory a package owns, with its owner and mode.
type Dir struct {
	Path  string
	Owner string
	Group string
	Mode  os.FileMode
}

// File is an extra file of a package.
type File struct {
	Source string // relative to Config.DeployDir
	Dest   string
	Mode   os.FileMode
}

// Installed paths, documented in docs/operations.md.
const (
	BinDir     = "/usr/bin"
	UnitDir    = "/usr/lib/systemd/system"
	ConfigDir  = "/etc/hive"
	TLSDir     = "/etc/hive/tls"
	StateRoot  = "/var/lib/hive"
	LibexecDir = "/usr/lib/hive"
	SysusersD  = "/usr/lib/sysusers.d"
)

var sharedDirs = []Dir{
	{Path: ConfigDir, Mode: 0o755},
	{Path: TLSDir, Mode: 0o755},
	{Path: StateRoot, Mode: 0o755},
}

// Packages are the packages Build makes, in build order.
var Packages = []Spec{
	{
		Name:        "hive-agent",
		Description: "hive agent: converges this machine to the state the hive coordinators hold for it",
		Binary:      "hive-agent",
		Unit:        "hive-agent.service",
		Config:      "agent.yaml",
		Dirs:        append(slices.Clone(sharedDirs), Dir{Path: StateRoot + "/agent", Mode: 0o700}, Dir{Path: LibexecDir, Mode: 0o755}),
		Extra: []File{
			{Source: "packaging/agent-configured", Dest: LibexecDir + "/agent-configured", Mode: 0o755},
			{Source: "image/cloud-init.yaml", Dest: "/usr/share/doc/hive-agent/examples/cloud-init.yaml", Mode: 0o644},
		},
	},
	{
		Name:        "hive-coordinator",
		Description: "hive coordinator: raft-replicated desired state, history and status of a hive site",
		Binary:      "hive-coordinator",
		Unit:        "hive-coordinator.service",
		Config:      "coordinator.yaml",
		ConfigGroup: "hive",
		CreateUser:  true,
		Dirs:        append(slices.Clone(sharedDirs), Dir{Path: StateRoot + "/coordinator", Owner: "hive", Group: "hive", Mode: 0o750}),
		Extra: []File{
			{Source: "sysusers/hive.conf", Dest: SysusersD + "/hive-coordinator.conf", Mode: 0o644},
		},
	},
	{
		Name:        "hive-repo",
		Description: "hive repository server: the site's signed YUM and APT repositories and upstream mirror cache",
		Binary:      "hive-repo",
		Unit:        "hive-repo.service",
		Config:      "repo.yaml",
		ConfigGroup: "hive",
		CreateUser:  true,
		Dirs:        append(slices.Clone(sharedDirs), Dir{Path: StateRoot + "/repo", Owner: "hive", Group: "hive", Mode: 0o750}),
		Extra: []File{
			{Source: "sysusers/hive.conf", Dest: SysusersD + "/hive-repo.conf", Mode: 0o644},
		},
	},
	{
		Name:        "hivectl",
		Description: "hivectl: the hive operator's tool (validate, push, status, rollback, secrets, certificates)",
		Binary:      "hivectl",
	},
}

// Lookup returns the Spec named name.
func Lookup(name string) (Spec, bool) {
	for _, s := range Packages {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// scriptNames maps nfpm's script slots to the files in deploy/packaging/scripts.
var scriptNames = []string{"preinstall", "postinstall", "preremove", "postremove"}

func (s Spec) nfpmConfig(cfg Config, scratch string) (*nfpm.Config, error) {
	var contents files.Contents
	add := func(src, dst, typ string, fi *files.ContentFileInfo) error {
		if src != "" {
			st, err := os.Stat(src)
			if err != nil {
				return fmt.Errorf("source of %s: %w", dst, err)
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("source of %s: %s is not a regular file", dst, src)
			}
		}
		if fi != nil {
			fi.MTime = cfg.MTime
		}
		contents = append(contents, &files.Content{Source: src, Destination: dst, Type: typ, FileInfo: fi})
		return nil
	}
	if err := add(filepath.Join(cfg.BinDir, s.Binary), BinDir+"/"+s.Binary, files.TypeFile, &files.ContentFileInfo{Mode: 0o755}); err != nil {
		return nil, err
	}
	if s.Unit != "" {
		if err := add(filepath.Join(cfg.DeployDir, "systemd", s.Unit), UnitDir+"/"+s.Unit, files.TypeFile, &files.ContentFileInfo{Mode: 0o644}); err != nil {
			return nil, err
		}
	}
	if s.Config != "" {
		fi := &files.ContentFileInfo{Mode: 0o644}
		if s.ConfigGroup != "" {
			fi = &files.ContentFileInfo{Mode: 0o640, Group: s.ConfigGroup}
		}
		if err := add(filepath.Join(cfg.DeployDir, "config", s.Config), ConfigDir+"/"+s.Config, files.TypeConfigNoReplace, fi); err != nil {
			return nil, err
		}
	}
	for _, e := range s.Extra {
		if err := add(filepath.Join(cfg.DeployDir, e.Source), e.Dest, files.TypeFile, &files.ContentFileInfo{Mode: e.Mode}); err != nil {
			return nil, err
		}
	}
	for _, d := range s.Dirs {
		if err := add("", d.Path, files.TypeDir, &files.ContentFileInfo{Owner: d.Owner, Group: d.Group, Mode: d.Mode | os.ModeDir}); err != nil {
			return nil, err
		}
	}

	var scripts nfpm.Scripts
	if s.Unit != "" || s.CreateUser {
		dir := filepath.Join(scratch, s.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		paths := map[string]string{}
		for _, n := range scriptNames {
			if n == "preinstall" && !s.CreateUser {
				continue
			}
			p, err := renderScript(filepath.Join(cfg.DeployDir, "packaging", "scripts", n+".sh"), filepath.Join(dir, n), s)
			if err != nil {
				return nil, err
			}
			paths[n] = p
		}
		scripts = nfpm.Scripts{
			PreInstall:  paths["preinstall"],
			PostInstall: paths["postinstall"],
			PreRemove:   paths["preremove"],
			PostRemove:  paths["postremove"],
		}
	}

	compression := cfg.Compression
	if compression == "" {
		compression = "gzip"
	}
	c := &nfpm.Config{Info: nfpm.Info{
		Name:          s.Name,
		Arch:          cfg.Arch,
		Platform:      "linux",
		VersionSchema: "none",
		Release:       "1",
		Section:       "admin",
		Priority:      "optional",
		Maintainer:    "hive maintainers <hive@hivefleet.invalid>",
		Vendor:        "hivefleet",
		Homepage:      "https://github.com/hivefleet/hive",
		License:       "Apache-2.0",
		Description:   s.Description,
		MTime:         cfg.MTime,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Scripts:  scripts,
			Umask:    0o022,
			RPM: nfpm.RPM{
				Summary:     s.Description,
				Group:       "System Environment/Daemons",
				Compression: compression,
				BuildHost:   "hive-packaging",
			},
			Deb: nfpm.Deb{Compression: compression},
		},
	}}
	return c, nil
}

// renderScript fills a maintainer script template's @PACKAGE@, @UNIT@ and
// @CREATE_USER@ and fails on any placeholder left over.
func renderScript(src, dst string, s Spec) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("maintainer script: %w", err)
	}
	createUser := "no"
	if s.CreateUser {
		createUser = "yes"
	}
	text := strings.NewReplacer("@PACKAGE@", s.Name, "@UNIT@", s.Unit, "@CREATE_USER@", createUser).Replace(string(b))
	if m := regexp.MustCompile(`@[A-Z_]+@`).FindString(text); m != "" {
		return "", fmt.Errorf("maintainer script %s: unknown placeholder %s", src, m)
	}
	if err := os.WriteFile(dst, []byte(text), 0o755); err != nil {
		return "", err
	}
	return dst, nil
}
