// Package catalog turns package files into parsed metadata, once per content
// hash, and runs the pipeline-mode indexers (hive-repo index --yum/--apt)
// that write repository metadata in place, like createrepo_c and
// apt-ftparchive. Meta.Identity and Clash define "one package version", of
// which a repository holds one file: the server refuses a second one on
// upload, the indexers refuse a directory holding two (ErrDuplicate).
//
// A Cache maps SHA-256 → parsed metadata (and path+size+mtime → SHA-256 as a
// hint that spares hashing unchanged files); it is safe for concurrent use
// and can be saved to a file between runs. The indexers parse new files on
// 2×GOMAXPROCS goroutines and block on disk I/O; ctx cancels them. IndexYum
// streams: each package is written into the metadata and dropped in path
// order, so its memory does not grow with the directory.
package catalog

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/repo/aptindex"
	"github.com/hivefleet/hive/repo/debmeta"
	"github.com/hivefleet/hive/repo/rpmmeta"
	"github.com/hivefleet/hive/repo/sign"
	"github.com/hivefleet/hive/repo/store"
	"github.com/hivefleet/hive/repo/yumindex"
)

// Package kinds.
const (
	KindRPM = "rpm"
	KindDeb = "deb"
)

// ErrUnknownKind is returned for a file name that is neither .rpm nor .deb.
var ErrUnknownKind = errors.New("package file name must end in .rpm or .deb")

// ErrDuplicate is returned by the pipeline indexers when two files of the
// directory are one package version (Identity and Clash): the index would
// offer clients two candidates.
var ErrDuplicate = errors.New("two files of one package version")

// Checks names the verification a parse of this version performs (every
// .deb member read to its end, the RPM payload digest). Cached metadata from
// an older parser has a lower value and is not trusted to vouch for a file:
// the file is parsed again.
const Checks = 2

// Meta is the parsed metadata of one package file.
type Meta struct {
	Kind   string
	RPM    *rpmmeta.Package
	Deb    *debmeta.Package
	Checks int `json:",omitempty"` // the Checks of the parser that read it
}

// SHA256 returns the package file's hash.
func (m *Meta) SHA256() string {
	if m.RPM != nil {
		return m.RPM.SHA256
	}
	return m.Deb.SHA256
}

// Size returns the package file's size.
func (m *Meta) Size() int64 {
	if m.RPM != nil {
		return m.RPM.Size
	}
	return m.Deb.Size
}

// Describe returns "name version arch".
func (m *Meta) Describe() string {
	if m.RPM != nil {
		return m.RPM.Name + " " + m.RPM.Epoch + ":" + m.RPM.Version + "-" + m.RPM.Release + " " + m.RPM.Arch
	}
	return m.Deb.Name + " " + m.Deb.Version + " " + m.Deb.Architecture
}

// Identity returns the key under which a repository holds one file per
// package: kind, name and version, the version in the form the package
// manager compares (debmeta.CanonicalVersion; for RPMs epoch, version and
// release, rpmmeta.CanonicalVersion), so that "1.0" and "1.00" are one
// version as apt and dnf see them. The architecture is compared by Clash.
func (m *Meta) Identity() string {
	if m.RPM != nil {
		epoch := strings.TrimLeft(m.RPM.Epoch, "0")
		return KindRPM + "\x00" + m.RPM.Name + "\x00" + epoch + ":" + rpmmeta.CanonicalVersion(m.RPM.Version) + "-" + rpmmeta.CanonicalVersion(m.RPM.Release)
	}
	return KindDeb + "\x00" + m.Deb.Name + "\x00" + debmeta.CanonicalVersion(m.Deb.Version)
}

// Arch returns the package's architecture.
func (m *Meta) Arch() string {
	if m.RPM != nil {
		return m.RPM.Arch
	}
	return m.Deb.Architecture
}

// Clash reports whether a and b, of one Identity, are the same package to
// a client: the same architecture, or for debs either of architecture
// "all", which APT lists in every architecture's index.
func Clash(a, b *Meta) bool {
	return clashArch(a.Kind, a.Arch(), b.Arch())
}

// clashArch is Clash for two packages of one kind and Identity.
func clashArch(kind, a, b string) bool {
	return a == b || kind == KindDeb && (a == "all" || b == "all")
}

// KindOf returns the kind for a file name.
func KindOf(name string) (string, error) {
	switch {
	case strings.HasSuffix(name, ".rpm"):
		return KindRPM, nil
	case strings.HasSuffix(name, ".deb"):
		return KindDeb, nil
	}
	return "", ErrUnknownKind
}

// Parse reads a package of the given kind.
func Parse(kind string, r io.Reader) (*Meta, error) {
	switch kind {
	case KindRPM:
		p, err := rpmmeta.Parse(r)
		if err != nil {
			return nil, err
		}
		return &Meta{Kind: kind, RPM: p, Checks: Checks}, nil
	case KindDeb:
		p, err := debmeta.Parse(r)
		if err != nil {
			return nil, err
		}
		return &Meta{Kind: kind, Deb: p, Checks: Checks}, nil
	}
	return nil, ErrUnknownKind
}

type hint struct {
	Size, MTime int64
	Sum         string
}

// Cache holds parsed metadata by content hash.
type Cache struct {
	mu    sync.Mutex
	BySum map[string]*Meta
	Hints map[string]hint
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{BySum: map[string]*Meta{}, Hints: map[string]hint{}} }

// LoadCache reads a cache file; a missing or unreadable file gives an empty
// cache (it is only a cache), a read error other than not-exist is returned.
func LoadCache(path string) (*Cache, error) {
	c := NewCache()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load cache: %w", err)
	}
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(c); err != nil {
		return NewCache(), nil
	}
	if c.BySum == nil || c.Hints == nil {
		return NewCache(), nil
	}
	return c, nil
}

// Save writes the cache atomically.
func (c *Cache) Save(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(c); err != nil {
		return fmt.Errorf("save cache: %w", err)
	}
	return store.WriteFile(path, b.Bytes(), "")
}

// Get returns the metadata for sum, or nil.
func (c *Cache) Get(sum string) *Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.BySum[sum]
}

// Put records m under its hash.
func (c *Cache) Put(m *Meta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.BySum[m.SHA256()] = m
}

// Len returns the number of cached packages.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.BySum)
}

// Prune drops entries whose hash is not in keep.
func (c *Cache) Prune(keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.BySum {
		if !keep[s] {
			delete(c.BySum, s)
		}
	}
	for p, h := range c.Hints {
		if !keep[h.Sum] {
			delete(c.Hints, p)
		}
	}
}

// readBufs holds file buffers of ParseFile (*[]byte).
var readBufs sync.Pool

// ParseFile returns the metadata of the file at path, from the cache when
// the file's path, size and mtime match a previous parse.
func (c *Cache) ParseFile(path string) (*Meta, os.FileInfo, error) {
	m, fi, _, err := c.parseFile(path)
	return m, fi, err
}

// parseFile is ParseFile, also reporting whether the file was read (not
// served by the cache). A nil cache reads every file and keeps nothing.
func (c *Cache) parseFile(path string) (m *Meta, fi os.FileInfo, read bool, err error) {
	kind, err := KindOf(path)
	if err != nil {
		return nil, nil, false, err
	}
	var h hint
	ok := false
	if c != nil {
		c.mu.Lock()
		h, ok = c.Hints[path]
		c.mu.Unlock()
	}
	if ok {
		// A previous run saw this path: a stat decides whether to read it.
		if fi, err = os.Stat(path); err != nil {
			return nil, nil, false, err
		}
		if h.Size == fi.Size() && h.MTime == fi.ModTime().UnixNano() {
			c.mu.Lock()
			m = c.BySum[h.Sum]
			c.mu.Unlock()
		}
		if m != nil && m.Checks == Checks {
			return m, fi, false, nil
		}
		m = nil
	}
	// Not cached: one open, its fstat, one read of the whole file.
	f, fi, err := openRaw(path)
	if err != nil {
		return nil, nil, false, err
	}
	defer f.Close()
	if kind == KindRPM && fi.Size() < 64<<20 {
		// Small packages: one read, parsed from memory.
		// The buffer is reused: the parser copies what it keeps.
		bp, _ := readBufs.Get().(*[]byte)
		if bp == nil || int64(cap(*bp)) < fi.Size() {
			b := make([]byte, fi.Size())
			bp = &b
		}
		b := (*bp)[:fi.Size()]
		if _, err = io.ReadFull(f, b); err == nil {
			var p *rpmmeta.Package
			if p, err = rpmmeta.ParseBytes(b); err == nil {
				m = &Meta{Kind: kind, RPM: p, Checks: Checks}
			}
		}
		if cap(b) <= 1<<20 {
			readBufs.Put(bp)
		}
	} else {
		m, err = Parse(kind, f)
	}
	if err != nil {
		return nil, nil, true, fmt.Errorf("%s: %w", path, err)
	}
	if c != nil {
		c.mu.Lock()
		c.BySum[m.SHA256()] = m
		c.Hints[path] = hint{Size: fi.Size(), MTime: fi.ModTime().UnixNano(), Sum: m.SHA256()}
		c.mu.Unlock()
	}
	return m, fi, true, nil
}

// writeFile replaces a file atomically for readers. Pipeline runs are
// re-run after a crash, so they skip fsync, as createrepo_c and
// apt-ftparchive do.
func writeFile(path string, data []byte, tmp string) error {
	return store.WriteFileNoSync(path, data, tmp)
}

// Options for the pipeline indexers.
type Options struct {
	Cache  *Cache       // nil: a fresh cache
	Signer *sign.Signer // nil: unsigned
	Now    time.Time    // zero: time.Now()
}

// Stats reports what an index run did.
type Stats struct {
	Packages int
	Parsed   int // packages read from disk (not served by the cache)
}

type found struct {
	rel  string
	meta *Meta
	fi   os.FileInfo
}

// walk returns the regular files under dir with the given suffix, skipping
// skipDir and hidden directories, in WalkDir's order.
func walk(dir, suffix, skipDir string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && (d.Name() == skipDir || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), suffix) && d.Type().IsRegular() {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", dir, err)
	}
	return paths, nil
}

// scan parses every file under dir with the given suffix (skipping skipDir).
func scan(ctx context.Context, dir, suffix, skipDir string, c *Cache) ([]found, int, error) {
	paths, err := walk(dir, suffix, skipDir)
	if err != nil {
		return nil, 0, err
	}
	before := c.Len()
	out := make([]found, len(paths))
	errs := make([]error, len(paths))
	idx := make(chan int)
	var wg sync.WaitGroup
	for range 2 * runtime.GOMAXPROCS(0) { // twice: overlap file reads with parsing
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				m, fi, err := c.ParseFile(paths[i])
				rel, _ := filepath.Rel(dir, paths[i])
				out[i], errs[i] = found{rel: filepath.ToSlash(rel), meta: m, fi: fi}, err
			}
		}()
	}
	for i := range paths {
		if ctx.Err() != nil {
			break
		}
		idx <- i
	}
	close(idx)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	if err := unique(out); err != nil {
		return nil, 0, err
	}
	return out, c.Len() - before, nil
}

// unique refuses two files of one package version, naming both.
func unique(fs []found) error {
	var v versions
	var errs []error
	for _, f := range fs {
		if err := v.add(f.rel, f.meta); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// versions records the package versions of the files seen so far, for
// ErrDuplicate: by Identity, each file's path, architecture and hash (not
// its metadata, so that a streamed index does not keep it).
type versions map[string][]seenFile

type seenFile struct{ rel, arch, sum string }

// add records the file rel and returns ErrDuplicate if an earlier file is
// the same package version.
func (v *versions) add(rel string, m *Meta) error {
	if *v == nil {
		*v = versions{}
	}
	id := m.Identity()
	for _, o := range (*v)[id] {
		if clashArch(m.Kind, o.arch, m.Arch()) {
			same := "different content"
			if o.sum == m.SHA256() {
				same = "identical copies"
			}
			return fmt.Errorf("%w: %s and %s are both %s (%s): keep one", ErrDuplicate, o.rel, rel, m.Describe(), same)
		}
	}
	(*v)[id] = append((*v)[id], seenFile{rel: rel, arch: m.Arch(), sum: m.SHA256()})
	return nil
}

// parsed is one file's outcome in parseOrdered.
type parsed struct {
	meta *Meta
	fi   os.FileInfo
	read bool
	err  error
}

// parseOrdered parses paths on 2×GOMAXPROCS goroutines (twice: file reads
// overlap parsing) and calls use with each outcome in the order of paths,
// from the calling goroutine. At most window files are parsed ahead of the
// one use waits for, so memory holds a bounded number of packages whatever
// the directory's size. It returns ctx's error if ctx ends first.
func parseOrdered(ctx context.Context, paths []string, c *Cache, window int, use func(i int, p parsed)) error {
	// File i's outcome goes to slot i%window: at most window files are
	// out, so a slot is free again when its next file is handed out.
	out := make([]chan parsed, window)
	for i := range out {
		out[i] = make(chan parsed, 1)
	}
	idx := make(chan int)
	tokens := make(chan struct{}, window)
	var wg sync.WaitGroup
	for range 2 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				m, fi, read, err := c.parseFile(paths[i])
				out[i%window] <- parsed{meta: m, fi: fi, read: read, err: err}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(idx)
		for i := range paths {
			select {
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case idx <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer wg.Wait()
	for i := range paths {
		select {
		case p := <-out[i%window]:
			<-tokens
			use(i, p)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// IndexYum writes dir/repodata for the .rpm files under dir. Hash-named files
// are written first, then repomd.xml.asc (if signing), then repomd.xml by
// rename; files of the previous generation stay, older ones are removed.
//
// Files are parsed in parallel and consumed in href order by a
// yumindex.Stream: each package is rendered, compressed and dropped, so the
// memory used does not grow with the number of packages (beyond what
// opt.Cache keeps, when given). Every file is parsed even after an error,
// so that the error names every bad file; nothing is written on error.
func IndexYum(ctx context.Context, dir string, opt Options) (Stats, error) {
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	paths, err := walk(dir, ".rpm", "repodata")
	if err != nil {
		return Stats{}, err
	}
	rels := make([]string, len(paths))
	for i, p := range paths {
		rel, _ := filepath.Rel(dir, p)
		rels[i] = filepath.ToSlash(rel)
	}
	// yumindex orders packages by href.
	order := make([]int, len(paths))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(rels[a], rels[b]) })
	sorted := make([]string, len(paths))
	for i, j := range order {
		sorted[i] = paths[j]
	}
	stream, err := yumindex.NewStream(len(paths), yumindex.Options{Revision: opt.Now.Unix(), Timestamp: opt.Now.Unix()})
	if err != nil {
		return Stats{}, err
	}
	var (
		st              Stats
		parseErrs, dups []error
		seen            versions
		streamErr       error
	)
	err = parseOrdered(ctx, sorted, opt.Cache, 64, func(i int, p parsed) {
		if p.read {
			st.Parsed++
		}
		if p.err != nil {
			parseErrs = append(parseErrs, p.err)
			return
		}
		rel := rels[order[i]]
		if err := seen.add(rel, p.meta); err != nil {
			dups = append(dups, err)
		}
		if len(parseErrs) == 0 && len(dups) == 0 && streamErr == nil {
			streamErr = stream.Add(&yumindex.Entry{Pkg: p.meta.RPM, Href: rel, FileTime: p.fi.ModTime().Unix()})
		}
	})
	if err != nil {
		return Stats{}, err
	}
	if err := errors.Join(parseErrs...); err != nil {
		return Stats{}, err
	}
	if err := errors.Join(dups...); err != nil {
		return Stats{}, err
	}
	if streamErr != nil {
		return Stats{}, streamErr
	}
	res, err := stream.Close()
	if err != nil {
		return Stats{}, err
	}
	st.Packages = len(paths)
	rd := filepath.Join(dir, "repodata")
	if err := os.MkdirAll(rd, 0o755); err != nil {
		return Stats{}, err
	}
	keep := map[string]bool{"repomd.xml": true, "repomd.xml.asc": true}
	if old, err := os.ReadFile(filepath.Join(rd, "repomd.xml")); err == nil {
		for _, h := range hrefs(old) {
			keep[strings.TrimPrefix(h, "repodata/")] = true
		}
	}
	for _, f := range res.Files {
		keep[strings.TrimPrefix(f.Name, "repodata/")] = true
		if err := writeFile(filepath.Join(dir, f.Name), f.Data, ""); err != nil {
			return Stats{}, err
		}
	}
	if opt.Signer != nil {
		sig, err := opt.Signer.DetachArmored(res.RepoMD)
		if err != nil {
			return Stats{}, err
		}
		if err := writeFile(filepath.Join(rd, "repomd.xml.asc"), sig, ""); err != nil {
			return Stats{}, err
		}
	} else {
		os.Remove(filepath.Join(rd, "repomd.xml.asc"))
	}
	if err := writeFile(filepath.Join(rd, "repomd.xml"), res.RepoMD, ""); err != nil {
		return Stats{}, err
	}
	if ents, err := os.ReadDir(rd); err == nil {
		for _, e := range ents {
			if !keep[e.Name()] && !e.IsDir() {
				os.Remove(filepath.Join(rd, e.Name()))
			}
		}
	}
	return st, nil
}

// hrefs extracts location hrefs from a repomd.xml.
func hrefs(repomd []byte) []string {
	var out []string
	s := string(repomd)
	for {
		i := strings.Index(s, `<location href="`)
		if i < 0 {
			return out
		}
		s = s[i+len(`<location href="`):]
		j := strings.IndexByte(s, '"')
		if j < 0 {
			return out
		}
		out = append(out, s[:j])
		s = s[j:]
	}
}

// IndexApt writes a flat APT repository in dir for the .deb files under it:
// Packages, Packages.gz, Packages.xz, then (signing) Release.gpg and
// InRelease, with Release renamed into place last but one.
func IndexApt(ctx context.Context, dir string, opt Options) (Stats, error) {
	if opt.Cache == nil {
		opt.Cache = NewCache()
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	fs, parsed, err := scan(ctx, dir, ".deb", "", opt.Cache)
	if err != nil {
		return Stats{}, err
	}
	entries := make([]*aptindex.Entry, len(fs))
	for i, f := range fs {
		entries[i] = &aptindex.Entry{Pkg: f.meta.Deb, Filename: "./" + f.rel}
	}
	res, err := aptindex.Build(entries, aptindex.Options{Flat: true, Date: opt.Now})
	if err != nil {
		return Stats{}, err
	}
	for _, f := range res.Files {
		if err := writeFile(filepath.Join(dir, f.Path), f.Data, ""); err != nil {
			return Stats{}, err
		}
	}
	if opt.Signer != nil {
		gpg, err := opt.Signer.DetachArmored(res.Release)
		if err != nil {
			return Stats{}, err
		}
		in, err := opt.Signer.ClearSign(res.Release)
		if err != nil {
			return Stats{}, err
		}
		if err := writeFile(filepath.Join(dir, "Release.gpg"), gpg, ""); err != nil {
			return Stats{}, err
		}
		if err := writeFile(filepath.Join(dir, "Release"), res.Release, ""); err != nil {
			return Stats{}, err
		}
		if err := writeFile(filepath.Join(dir, "InRelease"), in, ""); err != nil {
			return Stats{}, err
		}
	} else {
		os.Remove(filepath.Join(dir, "InRelease"))
		os.Remove(filepath.Join(dir, "Release.gpg"))
		if err := writeFile(filepath.Join(dir, "Release"), res.Release, ""); err != nil {
			return Stats{}, err
		}
	}
	return Stats{Packages: len(fs), Parsed: parsed}, nil
}
