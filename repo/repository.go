package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hivefleet/hive/repo/aptindex"
	"github.com/hivefleet/hive/repo/catalog"
	"github.com/hivefleet/hive/repo/store"
	"github.com/hivefleet/hive/repo/yumindex"
)

// errInvalidPackage wraps the parser's error for an upload that is not an
// intact package of the kind its name says.
var errInvalidPackage = errors.New("invalid package")

// record is one package file of a repository (repos/<name>/pkgs/<file>.json).
type record struct {
	Filename string    `json:"filename"`
	Kind     string    `json:"kind"`
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	Uploaded time.Time `json:"uploaded"`
	meta     *catalog.Meta
	id       string // meta.Identity()
	key      string // SHA256 + "|" + Filename: the index entry caches' key
	served   string // served path of the package file ("yum/packages/...", "apt/pool/...")
}

// prepare fills rec's derived fields (once, before rec is shared).
func (s *Server) prepare(rec *record) {
	rec.key = rec.SHA256 + "|" + rec.Filename
	rec.id = rec.meta.Identity()
	if rec.Kind == catalog.KindDeb {
		rec.served = "apt/pool/" + s.cfg.Component + "/" + rec.Filename
	} else {
		rec.served = "yum/packages/" + rec.Filename
	}
}

// Generation is one published state of a repository.
type Generation struct {
	N     int64             `json:"n"`
	Date  time.Time         `json:"date"`
	Key   string            `json:"key"`   // fingerprint of the signing key
	Files map[string]string `json:"files"` // served path ("yum/...", "apt/...") → blob sha256
	Root  map[string][]byte `json:"root"`  // root files, switched together
}

// encode is json.Marshal(g) without the reflection and key sorting for
// Files (thousands of entries, one per package file): the generation file
// is written on every publish and only read back by json.Unmarshal.
func (g *Generation) encode() ([]byte, error) {
	head, err := json.Marshal(struct {
		N    int64             `json:"n"`
		Date time.Time         `json:"date"`
		Key  string            `json:"key"`
		Root map[string][]byte `json:"root"`
	}{g.N, g.Date, g.Key, g.Root})
	if err != nil {
		return nil, err
	}
	size := len(head) + 16
	for p, sum := range g.Files {
		size += len(p) + len(sum) + 6
	}
	b := make([]byte, 0, size)
	b = append(b, head[:len(head)-1]...)
	b = append(b, `,"files":{`...)
	first := true
	for p, sum := range g.Files {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendJSONString(b, p)
		b = append(b, ':')
		b = appendJSONString(b, sum)
	}
	return append(b, "}}"...), nil
}

// appendJSONString appends s as a JSON string: verbatim when it holds only
// characters that need no escaping, else as encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Repo is one named repository.
type Repo struct {
	s    *Server
	name string
	dir  string

	mu      sync.Mutex // guards pkgs, ids, changes
	pkgs    map[string]*record
	ids     map[string][]*record // by meta.Identity(): one package version, normally one file
	changes int64

	pubMu      sync.Mutex // serializes Publish; guards yumCache, aptCache, published
	yumCache   map[string]*yumindex.Entry
	aptCache   map[string]*aptindex.Entry
	chunks     *yumindex.Chunks
	lastApt    *aptindex.Result // reused while the set of .deb files is unchanged
	lastAptKey string
	published  int64 // changes counter at the last successful publish
	cur        atomic.Pointer[Generation]
	gens       atomic.Pointer[[]*Generation] // retained, oldest first, current last
	kick       chan struct{}
	lastFailed atomic.Bool
	pins       pins // which generation each client got a signed document from
}

// UploadResult is the upload API's answer.
type UploadResult struct {
	Repo      string `json:"repo"`
	Filename  string `json:"filename"`
	SHA256    string `json:"sha256"`
	Size      int64  `json:"size"`
	Package   string `json:"package"`
	Unchanged bool   `json:"unchanged,omitempty"`
	Replaced  bool   `json:"replaced,omitempty"`
}

func (s *Server) openRepo(name string) (*Repo, error) {
	r := &Repo{s: s, name: name, dir: filepath.Join(s.cfg.DataDir, "repos", name), pkgs: map[string]*record{}, ids: map[string][]*record{},
		yumCache: map[string]*yumindex.Entry{}, aptCache: map[string]*aptindex.Entry{}, chunks: yumindex.NewChunks(), kick: make(chan struct{}, 1)}
	for _, d := range []string{"pkgs", "gens"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("open repo %s: %w", name, err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(r.dir, "pkgs"))
	if err != nil {
		return nil, fmt.Errorf("open repo %s: %w", name, err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, "pkgs", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("open repo %s: %w", name, err)
		}
		rec := &record{}
		if err := json.Unmarshal(b, rec); err != nil {
			return nil, fmt.Errorf("open repo %s: %s: %w", name, e.Name(), err)
		}
		if rec.meta, err = s.loadMeta(rec.Kind, rec.SHA256); err != nil {
			return nil, fmt.Errorf("open repo %s: %s: %w", name, e.Name(), err)
		}
		s.prepare(rec)
		r.pkgs[rec.Filename] = rec
	}
	// Index in name order, so that which of two clashing files (stored
	// before clashes were refused) is named first does not depend on
	// directory order.
	names := make([]string, 0, len(r.pkgs))
	for n := range r.pkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rec := r.pkgs[n]
		if h := r.holderLocked(rec.meta, rec.id, n); h != nil {
			s.log.Warn("two files hold one package version; clients see both: remove one", "repo", name, "file", n, "other", h.Filename, "package", rec.meta.Describe())
		}
		r.ids[rec.id] = append(r.ids[rec.id], rec)
	}
	// Generations: retained ones, and the current one by the symlink.
	var gens []*Generation
	gents, _ := os.ReadDir(filepath.Join(r.dir, "gens"))
	for _, e := range gents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, "gens", e.Name()))
		if err != nil {
			continue
		}
		g := &Generation{}
		if json.Unmarshal(b, g) == nil {
			gens = append(gens, g)
		}
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].N < gens[j].N })
	if link, err := os.Readlink(filepath.Join(r.dir, "current")); err == nil {
		n, _ := strconv.ParseInt(strings.TrimSuffix(path.Base(link), ".json"), 10, 64)
		var kept []*Generation
		for _, g := range gens {
			if g.N <= n { // newer files are leftovers of a publish that never switched
				kept = append(kept, g)
			}
			if g.N == n {
				r.cur.Store(g)
			}
		}
		gens = kept
	} else {
		gens = nil
	}
	r.gens.Store(&gens)
	r.published = 0
	if cur := r.cur.Load(); cur == nil {
		if len(r.pkgs) > 0 {
			r.changes = 1
		}
	} else if !r.matches(cur) {
		r.changes = 1 // uploads or removals after the last publish (crash or stop in the debounce window)
	} else if cur.Key != s.cfg.Signer.Fingerprint() {
		r.changes = 1 // signing key rotated: sign again with the new key
		s.log.Info("signing key changed; the repository will be published again", "repo", name, "old", cur.Key, "new", s.cfg.Signer.Fingerprint())
	}
	s.updateCount(r)
	return r, nil
}

// matches reports whether g publishes exactly the current package files.
func (r *Repo) matches(g *Generation) bool {
	n := 0
	for p, sum := range g.Files {
		var name string
		switch {
		case strings.HasPrefix(p, "yum/packages/"):
			name = strings.TrimPrefix(p, "yum/packages/")
		case strings.HasPrefix(p, "apt/pool/"+r.s.cfg.Component+"/"):
			name = strings.TrimPrefix(p, "apt/pool/"+r.s.cfg.Component+"/")
		default:
			continue
		}
		n++
		if rec, ok := r.pkgs[name]; !ok || rec.SHA256 != sum {
			return false
		}
	}
	return n == len(r.pkgs)
}

func (s *Server) metaPath(sum string) string {
	return filepath.Join(s.cfg.DataDir, "meta", sum[:2], sum+".json")
}

func (s *Server) loadMeta(kind, sum string) (*catalog.Meta, error) {
	if !store.ValidSum(sum) {
		return nil, fmt.Errorf("bad sum %q", sum)
	}
	b, err := os.ReadFile(s.metaPath(sum))
	if err == nil {
		m := &catalog.Meta{}
		if json.Unmarshal(b, m) == nil && m.Kind == kind && (m.RPM != nil || m.Deb != nil) {
			return m, nil
		}
	}
	// Header cache lost: parse the blob again.
	f, err := s.store.Open(sum)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := catalog.Parse(kind, f)
	if err != nil {
		return nil, err
	}
	return m, s.saveMeta(m)
}

// cachedMeta returns the header cache entry for sum, or nil.
func (s *Server) cachedMeta(kind, sum string) *catalog.Meta {
	b, err := os.ReadFile(s.metaPath(sum))
	if err != nil {
		return nil
	}
	m := &catalog.Meta{}
	if json.Unmarshal(b, m) != nil || m.Kind != kind || (m.RPM == nil && m.Deb == nil) || m.SHA256() != sum {
		return nil
	}
	if m.Checks != catalog.Checks {
		return nil // read by an older parser that checked less: parse again
	}
	return m
}

func (s *Server) saveMeta(m *catalog.Meta) error {
	p := s.metaPath(m.SHA256())
	if s.cachedMeta(m.Kind, m.SHA256()) != nil {
		return nil // a current entry exists; one written by an older parser is replaced
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// A cache (rebuilt from the blob when lost): no fsync.
	return store.WriteFileNoSync(p, b, s.store.TempDir())
}

func (s *Server) updateCount(r *Repo) {
	r.mu.Lock()
	n := map[string]int{catalog.KindRPM: 0, catalog.KindDeb: 0}
	for _, p := range r.pkgs {
		n[p.Kind]++
	}
	r.mu.Unlock()
	for k, v := range n {
		s.pkgCount.WithLabelValues(r.name, k).Set(float64(v))
	}
}

// ValidFilename reports whether name may be uploaded (no path, no traversal).
func ValidFilename(name string) bool {
	return fileRe.MatchString(name) && !strings.Contains(name, "..")
}

// verified is an upload that passed verification and belongs to no
// repository yet; discard drops it unless add committed it.
type verified struct {
	name, kind string
	pend       *store.Pending
	meta       *catalog.Meta
	done       bool
}

func (v *verified) discard() {
	if !v.done {
		v.pend.Discard()
	}
}

// verify streams body into a pending blob and checks that it is an intact
// package of the kind its file name says.
func (s *Server) verify(name string, body io.Reader) (*verified, error) {
	if !ValidFilename(name) {
		return nil, fmt.Errorf("%w: file %q (want a plain name ending in .rpm or .deb)", ErrBadName, name)
	}
	kind, err := catalog.KindOf(name)
	if err != nil {
		return nil, err
	}
	pend, err := s.store.Put(body, s.cfg.MaxUploadSize)
	if err != nil {
		return nil, err
	}
	// Content verified before (same SHA-256) is not parsed again.
	m := s.cachedMeta(kind, pend.Sum)
	if m == nil {
		m, err = catalog.Parse(kind, pend.File())
	}
	if err == nil && m.SHA256() != pend.Sum {
		err = errors.New("hash changed while reading")
	}
	if err != nil {
		pend.Discard()
		return nil, fmt.Errorf("%w: %s: %w", errInvalidPackage, name, err)
	}
	return &verified{name: name, kind: kind, pend: pend, meta: m}, nil
}

// Upload verifies body as the package file name and adds it.
func (r *Repo) Upload(name string, body io.Reader, replace bool) (*UploadResult, error) {
	v, err := r.s.verify(name, body)
	if err != nil {
		return nil, err
	}
	defer v.discard()
	return r.add(v, replace)
}

// holderLocked returns a file of r other than except that holds the same
// package as m (identity id, a clashing architecture), or nil. r.mu is held.
func (r *Repo) holderLocked(m *catalog.Meta, id, except string) *record {
	for _, rec := range r.ids[id] {
		if rec.Filename != except && catalog.Clash(rec.meta, m) {
			return rec
		}
	}
	return nil
}

// unindexLocked drops rec from r.ids. r.mu is held.
func (r *Repo) unindexLocked(rec *record) {
	recs := slices.DeleteFunc(r.ids[rec.id], func(o *record) bool { return o == rec })
	if len(recs) == 0 {
		delete(r.ids, rec.id)
	} else {
		r.ids[rec.id] = recs
	}
}

// add records a verified upload in the repository. One package version
// (catalog.Meta.Identity and a clashing architecture) is held by one file:
// the same bytes again, under any file name, change nothing; other bytes
// for a version another file holds are a conflict, as are other bytes
// under an existing file name unless replace is asked.
func (r *Repo) add(v *verified, replace bool) (*UploadResult, error) {
	s, name, pend, m := r.s, v.name, v.pend, v.meta
	res := &UploadResult{Repo: r.name, Filename: name, SHA256: pend.Sum, Size: pend.Size, Package: m.Describe()}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	old, exists := r.pkgs[name]
	if exists {
		if old.SHA256 == pend.Sum {
			res.Unchanged = true
			return res, nil
		}
		if !replace {
			return nil, fmt.Errorf("%w: %s in %s holds %s with sha256 %s; the upload is %s with sha256 %s (replace to change it)",
				ErrConflict, name, r.name, old.meta.Describe(), old.SHA256, m.Describe(), pend.Sum)
		}
		res.Replaced = true
	}
	id := m.Identity()
	if h := r.holderLocked(m, id, name); h != nil {
		if h.SHA256 == pend.Sum && !exists {
			// The same bytes under another name: already there.
			res.Filename, res.Unchanged = h.Filename, true
			return res, nil
		}
		return nil, fmt.Errorf("%w: %s %s is already in %s as %s (sha256 %s); the upload %s has sha256 %s: one file per package version (remove %s first)",
			ErrConflict, h.meta.Kind, m.Describe(), r.name, h.Filename, h.SHA256, name, pend.Sum, h.Filename)
	}
	if err := s.saveMeta(m); err != nil {
		return nil, fmt.Errorf("save header cache: %w", err)
	}
	rec := &record{Filename: name, Kind: v.kind, SHA256: pend.Sum, Size: pend.Size, Uploaded: time.Now().UTC(), meta: m}
	s.prepare(rec)
	b, _ := json.Marshal(rec)
	// The blob and its record are fsync'ed together; the record is renamed
	// into place after the blob.
	v.done = true
	if err := pend.Commit(store.File{Path: filepath.Join(r.dir, "pkgs", name+".json"), Data: b}); err != nil {
		return nil, err
	}
	if exists {
		r.unindexLocked(old)
	}
	r.pkgs[name] = rec
	r.ids[rec.id] = append(r.ids[rec.id], rec)
	r.changes++
	r.signal()
	if !res.Replaced { // a replaced file has the same name, so the same kind
		s.pkgCount.WithLabelValues(r.name, v.kind).Inc()
	}
	return res, nil
}

// Remove drops a package file from the repository.
func (r *Repo) Remove(name string) error {
	if !ValidFilename(name) {
		return fmt.Errorf("%w: file %q", ErrBadName, name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old, ok := r.pkgs[name]
	if !ok {
		return fmt.Errorf("%w: %s in %s", ErrNotFound, name, r.name)
	}
	if err := os.Remove(filepath.Join(r.dir, "pkgs", name+".json")); err != nil {
		return err
	}
	delete(r.pkgs, name)
	r.unindexLocked(old)
	r.changes++
	r.signal()
	r.s.pkgCount.WithLabelValues(r.name, old.Kind).Dec()
	return nil
}

func (r *Repo) signal() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run publishes after uploads settle: Debounce of quiet, at most MaxDelay
// after the first change; failed publishes are retried with backoff.
func (r *Repo) run(ctx context.Context) {
	cfg := r.s.cfg
	backoff := time.Second
	if r.dirty() {
		r.signal()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		deadline := time.Now().Add(cfg.MaxDelay)
		t := time.NewTimer(cfg.Debounce)
	settle:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-r.kick:
				t.Stop()
				t = time.NewTimer(min(cfg.Debounce, time.Until(deadline)))
			case <-t.C:
				break settle
			}
		}
		if !r.dirty() {
			continue
		}
		if _, err := r.Publish(ctx); err != nil {
			r.s.log.Error("publish failed; published repository unchanged, will retry", "repo", r.name, "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			r.signal()
			continue
		}
		backoff = time.Second
	}
}

func (r *Repo) dirty() bool {
	r.mu.Lock()
	c := r.changes
	r.mu.Unlock()
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	return c != r.published || r.cur.Load() == nil
}

// Publish indexes, signs and switches to a new generation now.
func (r *Repo) Publish(ctx context.Context) (*Generation, error) {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	start := time.Now()
	g, changes, err := r.publish(ctx)
	r.s.publishTime.Observe(time.Since(start).Seconds())
	if err != nil {
		r.s.publishes.WithLabelValues(r.name, "error").Inc()
		r.lastFailed.Store(true)
		return nil, fmt.Errorf("publish %s: %w", r.name, err)
	}
	r.lastFailed.Store(false)
	r.published = changes
	r.s.publishes.WithLabelValues(r.name, "ok").Inc()
	r.s.log.Info("published", "repo", r.name, "generation", g.N, "files", len(g.Files), "took", time.Since(start).Round(time.Millisecond))
	return g, nil
}

func (r *Repo) publish(ctx context.Context) (*Generation, int64, error) {
	s, cfg := r.s, r.s.cfg
	tStart := time.Now()
	r.mu.Lock()
	recs := make([]*record, 0, len(r.pkgs))
	for _, p := range r.pkgs {
		recs = append(recs, p)
	}
	changes := r.changes
	r.mu.Unlock()

	prev := r.cur.Load()
	date := time.Now().UTC().Truncate(time.Second)
	n := int64(1)
	if prev != nil {
		n = prev.N + 1
		// Release's Date never goes back (apt ignores an older Release)
		// and never lies in the future (apt refuses it as not valid yet):
		// publishes within one second share their Date.
		if date.Before(prev.Date) {
			date = prev.Date
		}
	}
	g := &Generation{N: n, Date: date, Key: cfg.Signer.Fingerprint(), Files: make(map[string]string, len(recs)+32), Root: map[string][]byte{}}

	var yum []*yumindex.Entry
	var apt []*aptindex.Entry
	yumKeep, aptKeep := make(map[string]*yumindex.Entry, len(r.yumCache)+8), make(map[string]*aptindex.Entry, len(r.aptCache)+8)
	for _, p := range recs {
		key := p.key
		g.Files[p.served] = p.SHA256
		switch p.Kind {
		case catalog.KindRPM:
			e := r.yumCache[key]
			if e == nil {
				e = &yumindex.Entry{Pkg: p.meta.RPM, Href: "packages/" + p.Filename, FileTime: p.Uploaded.Unix()}
			}
			yumKeep[key] = e
			yum = append(yum, e)
		case catalog.KindDeb:
			e := r.aptCache[key]
			if e == nil {
				e = &aptindex.Entry{Pkg: p.meta.Deb, Filename: "pool/" + cfg.Component + "/" + p.Filename}
			}
			aptKeep[key] = e
			apt = append(apt, e)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	slices.SortFunc(recs, func(a, b *record) int { return strings.Compare(a.Filename, b.Filename) })
	var aptKey strings.Builder
	for _, p := range recs {
		if p.Kind == catalog.KindDeb {
			aptKey.WriteString(p.key)
			aptKey.WriteByte('\n')
		}
	}
	var (
		yres       *yumindex.Result
		ares       *aptindex.Result
		yerr, aerr error
		wg         sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		yres, yerr = yumindex.Build(yum, yumindex.Options{Revision: date.Unix(), Timestamp: date.Unix(), Chunks: r.chunks})
	}()
	opt := aptindex.Options{Suite: cfg.Suite, Component: cfg.Component, Archs: cfg.AptArchs, Date: date}
	if cfg.ValidFor > 0 {
		opt.ValidUntil = date.Add(cfg.ValidFor)
	}
	release := []byte(nil)
	if r.lastApt != nil && r.lastAptKey == aptKey.String() {
		ares = r.lastApt
		release = ares.Rerelease(opt)
	} else {
		ares, aerr = aptindex.Build(apt, opt)
		if aerr == nil {
			release = ares.Release
		}
	}
	// Release is signed while the YUM metadata is still being built.
	var gpg, inrel []byte
	if aerr == nil {
		if gpg, aerr = cfg.Signer.DetachArmored(release); aerr == nil {
			inrel, aerr = cfg.Signer.ClearSign(release)
		}
	}
	wg.Wait()
	if err := errors.Join(yerr, aerr); err != nil {
		return nil, 0, err
	}
	tBuild := time.Now()
	// 1. Hash-named (and by-hash) files first. Garbage collection
	// waits until this generation is retained, so it never removes a blob
	// that was found already present here.
	s.gcMu.RLock()
	gcLocked := true
	defer func() {
		if gcLocked {
			s.gcMu.RUnlock()
		}
	}()
	// The indexers hashed their files already (the names and Release carry
	// the SHA-256): no second pass over them.
	var blobs [][]byte
	var sums []string
	for _, f := range yres.Files {
		blobs, sums = append(blobs, f.Data), append(sums, f.SHA256)
	}
	for _, f := range ares.Files {
		blobs, sums = append(blobs, f.Data), append(sums, f.SHA256)
	}
	for i, f := range yres.Files {
		g.Files["yum/"+f.Name] = sums[i]
	}
	dists := "apt/dists/" + cfg.Suite + "/"
	for i, f := range ares.Files {
		sum := sums[len(yres.Files)+i]
		g.Files[dists+f.Path] = sum
		for _, bh := range aptindex.ByHash(f) {
			g.Files[dists+bh] = sum
		}
	}
	// 2. Root files, signed.
	sig, err := cfg.Signer.DetachArmored(yres.RepoMD)
	if err != nil {
		return nil, 0, err
	}
	g.Root["yum/repodata/repomd.xml"] = yres.RepoMD
	g.Root["yum/repodata/repomd.xml.asc"] = sig
	g.Root[dists+"Release"] = release
	g.Root[dists+"Release.gpg"] = gpg
	g.Root[dists+"InRelease"] = inrel
	b, err := g.encode()
	if err != nil {
		return nil, 0, err
	}
	tSign := time.Now()
	// 3. The new blobs and the generation file, fsync'ed together (one
	// round of concurrent fsyncs), the generation file renamed last; then
	// the switch: one rename of the symlink. The generation file is not
	// read before the switch names it (newer leftovers are ignored on start).
	gname := strconv.FormatInt(n, 10) + ".json"
	gpath := filepath.Join(r.dir, "gens", gname)
	if err := s.store.PutSums(blobs, sums, store.File{Path: gpath, Data: b}); err != nil {
		return nil, 0, err
	}
	tBlobs := time.Now()
	tmpLink := filepath.Join(r.dir, ".current-"+gname)
	os.Remove(tmpLink)
	if err := os.Symlink("gens/"+gname, tmpLink); err != nil {
		os.Remove(gpath)
		return nil, 0, fmt.Errorf("switch: %w", err)
	}
	if err := os.Rename(tmpLink, filepath.Join(r.dir, "current")); err != nil {
		os.Remove(tmpLink)
		os.Remove(gpath)
		return nil, 0, fmt.Errorf("switch: %w", err)
	}
	r.cur.Store(g)
	s.log.Debug("publish phases", "repo", r.name, "build", tBuild.Sub(tStart), "sign", tSign.Sub(tBuild), "write", tBlobs.Sub(tSign), "switch", time.Since(tBlobs))
	r.yumCache, r.aptCache = yumKeep, aptKeep
	r.lastApt, r.lastAptKey = ares, aptKey.String()

	// 4. Retention and garbage collection.
	old := *r.gens.Load()
	gens := append(append([]*Generation(nil), old...), g)
	var dropped []*Generation
	if k := cfg.KeepGenerations; len(gens) > k {
		cut := len(gens) - k
		for cut > 0 && date.Sub(gens[cut-1].Date) < cfg.KeepFor {
			cut--
		}
		dropped, gens = gens[:cut], gens[cut:]
	}
	r.gens.Store(&gens)
	s.gcMu.RUnlock()
	gcLocked = false
	if len(dropped) > 0 {
		s.collect(r, dropped)
	}
	return g, changes, nil
}

// collect removes the generation files of dropped generations and the blobs
// nothing else refers to.
func (s *Server) collect(r *Repo, dropped []*Generation) {
	cand := map[string]bool{}
	for _, g := range dropped {
		os.Remove(filepath.Join(r.dir, "gens", strconv.FormatInt(g.N, 10)+".json"))
		for _, sum := range g.Files {
			cand[sum] = true
		}
	}
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	s.mu.Lock()
	repos := make([]*Repo, 0, len(s.repos))
	for _, rp := range s.repos {
		repos = append(repos, rp)
	}
	s.mu.Unlock()
	for _, rp := range repos {
		for _, g := range *rp.gens.Load() {
			for _, sum := range g.Files {
				delete(cand, sum)
			}
		}
		rp.mu.Lock()
		for _, p := range rp.pkgs {
			delete(cand, p.SHA256)
		}
		rp.mu.Unlock()
	}
	for sum := range cand {
		s.store.Remove(sum)
	}
}

// serve answers GET /yum/<repo>/<p> and /apt/<repo>/<p>.
func (r *Repo) serve(w http.ResponseWriter, req *http.Request, kind, p string) {
	g := r.cur.Load()
	if g == nil {
		http.Error(w, "repository not published yet", http.StatusNotFound)
		return
	}
	key := kind + "/" + p
	if isSignedDoc(key) {
		if _, ok := g.Root[key]; ok {
			r.pins.record(req.RemoteAddr, key, g.N, time.Now())
		}
	} else if doc, ok := signedDoc(key); ok {
		// Serve the signature of the generation whose document this
		// client got, if a publish came in between and it is retained.
		if n, ok := r.pins.lookup(req.RemoteAddr, doc, time.Now()); ok && n != g.N && r.gens.Load() != nil {
			for _, old := range *r.gens.Load() {
				if old.N == n && old.Root[key] != nil {
					g = old
					break
				}
			}
		}
	}
	if b, ok := g.Root[key]; ok {
		// No Last-Modified: publishes within one second share their Date,
		// so a time validator could answer 304 for changed content. The
		// ETag names the generation.
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Type", contentType(p))
		sum := sha256.Sum256(b)
		w.Header().Set("ETag", `"g`+strconv.FormatInt(g.N, 10)+"-"+hex.EncodeToString(sum[:8])+`"`)
		http.ServeContent(w, req, path.Base(p), time.Time{}, bytes.NewReader(b))
		return
	}
	sum, ok := g.Files[key]
	if !ok {
		gens := *r.gens.Load()
		for i := len(gens) - 1; i >= 0 && !ok; i-- {
			sum, ok = gens[i].Files[key]
		}
	}
	if !ok {
		http.NotFound(w, req)
		return
	}
	f, err := r.s.store.Open(sum)
	if err != nil {
		http.Error(w, "blob missing", http.StatusInternalServerError)
		r.s.log.Error("published blob missing", "repo", r.name, "path", key, "sha256", sum, "err", err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if strings.Contains(p, "by-hash/") || strings.HasPrefix(p, "repodata/") || strings.HasPrefix(p, "packages/") || strings.HasPrefix(p, "pool/") {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Content-Type", contentType(p))
	http.ServeContent(w, req, "", fi.ModTime(), f)
}

func contentType(p string) string {
	switch {
	case strings.HasSuffix(p, ".xml"):
		return "text/xml"
	case strings.HasSuffix(p, ".gz"):
		return "application/gzip"
	case strings.HasSuffix(p, ".xz"):
		return "application/x-xz"
	case strings.HasSuffix(p, ".rpm"):
		return "application/x-rpm"
	case strings.HasSuffix(p, ".deb"):
		return "application/vnd.debian.binary-package"
	case strings.HasSuffix(p, ".asc"), strings.HasSuffix(p, ".gpg"):
		return "application/pgp-signature"
	}
	return "text/plain; charset=utf-8"
}

// Info describes the repository.
func (r *Repo) Info(files bool) RepoInfo {
	r.mu.Lock()
	info := RepoInfo{Name: r.name, Packages: len(r.pkgs)}
	if files {
		for _, p := range r.pkgs {
			info.Files = append(info.Files, PackageInfo{Filename: p.Filename, Kind: p.Kind, SHA256: p.SHA256, Size: p.Size, Package: p.meta.Describe(), Uploaded: p.Uploaded})
		}
	}
	r.mu.Unlock()
	sort.Slice(info.Files, func(i, j int) bool { return info.Files[i].Filename < info.Files[j].Filename })
	if g := r.cur.Load(); g != nil {
		info.Generation, info.Published = g.N, g.Date
	}
	return info
}
