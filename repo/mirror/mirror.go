// Package mirror is hive-repo's pull-through cache for upstream distribution
// mirrors (Debian, Rocky, ...), served under /mirror/<name>/<path>.
//
// Files fall in three classes by path:
//   - immutable: packages (.deb, .udeb, .rpm), by-hash/<ALGO>/<hex> and
//     hash-named repodata/<hex>-*. Fetched once, verified (against the hash in
//     their name, or for packages against the hash an already cached index
//     lists), then cached until evicted. A package no cached index vouches
//     for is proxied without being cached.
//   - metadata: everything else (InRelease, Release, repomd.xml, non-hashed
//     Packages.gz, ...). Revalidated with the upstream (conditional GET) on
//     every request or after Config.TTL; when the upstream cannot be reached
//     a cached copy is served stale while the Release's Valid-Until (or
//     Config.MaxStale for files without one) has not passed.
//
// Concurrent misses for one file are fetched once (singleflight); every
// client is then served from the cached file, with Range support. Disk use
// is capped at Config.MaxBytes by evicting least-recently-used files.
//
// Cache is safe for concurrent use; Serve blocks on the upstream fetch. The
// in-memory index (sizes, access times, validators, expected hashes) is
// guarded by one mutex held only for map updates, never across I/O.
package mirror

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"container/list"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ulikunitz/xz"
	"golang.org/x/sync/singleflight"

	"github.com/hivefleet/hive/internal/atomicfile"
)

// Upstream is one mirrored repository.
type Upstream struct {
	URL string `json:"url"` // base URL, e.g. http://deb.debian.org/debian
}

// Config configures a Cache.
type Config struct {
	Dir       string
	Upstreams map[string]Upstream
	MaxBytes  int64         // disk cap (default 10 GiB)
	TTL       time.Duration // metadata served without revalidation for this long (0: always revalidate)
	MaxStale  time.Duration // stale limit for metadata without Valid-Until (default 7 days)
	Client    *http.Client  // default: 30 s to connect and get the response header
	Now       func() time.Time
}

// DefaultConfig returns defaults.
func DefaultConfig() Config {
	return Config{MaxBytes: 10 << 30, MaxStale: 7 * 24 * time.Hour}
}

// Validate checks c.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("mirror: dir is required")
	}
	if c.MaxBytes <= 0 {
		return errors.New("mirror: max bytes must be positive")
	}
	return nil
}

// ErrBadPath is returned for a request path that is empty, absolute or
// climbs out of the mirror.
var ErrBadPath = errors.New("bad mirror path")

// errVerify marks a fetched file whose content does not match its hash.
var errVerify = errors.New("upstream file failed verification")

type entry struct {
	key        string // name/path
	size       int64
	elem       *list.Element
	ETag       string    `json:"etag,omitempty"`
	LastMod    string    `json:"last_modified,omitempty"`
	Fetched    time.Time `json:"fetched"`
	ValidUntil time.Time `json:"valid_until,omitzero"`
	meta       bool
}

// Cache is a pull-through mirror cache.
type Cache struct {
	cfg   Config
	log   *slog.Logger
	sf    singleflight.Group
	mu    sync.Mutex
	ents  map[string]*entry
	lru   *list.List // front = most recently used
	total int64
	// expected maps name/path of a package to its sha256, learned from cached indexes.
	expected map[string]string

	reqs  *prometheus.CounterVec
	bytes prometheus.Counter
	used  prometheus.Gauge
}

// New opens the cache, indexing what is already on disk.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Cache, error) {
	if cfg.MaxStale == 0 {
		cfg.MaxStale = 7 * 24 * time.Hour
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 10 << 30
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		// No overall timeout: a large package may take long to arrive.
		// Connecting and the response header are bounded instead.
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = 30 * time.Second
		cfg.Client = &http.Client{Transport: tr}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Cache{
		cfg: cfg, log: log.With("component", "repo.mirror"), ents: map[string]*entry{}, lru: list.New(), expected: map[string]string{},
		reqs:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_mirror_requests_total", Help: "Mirror requests by result (hit, miss, revalidated, stale, proxied, error)."}, []string{"mirror", "result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "hive_repo_mirror_fetched_bytes_total", Help: "Bytes fetched from upstreams."}),
		used:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "hive_repo_mirror_cache_bytes", Help: "Bytes held in the mirror cache."}),
	}
	if reg != nil {
		reg.MustRegister(c.reqs, c.bytes, c.used)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cache) load() error {
	type found struct {
		key string
		e   *entry
		at  time.Time
	}
	var all []found
	err := filepath.WalkDir(c.cfg.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(p, ".hive-meta") || strings.Contains(d.Name(), ".hive-tmp") {
			if strings.Contains(d.Name(), ".hive-tmp") {
				os.Remove(p)
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(c.cfg.Dir, p)
		key := filepath.ToSlash(rel)
		e := &entry{key: key, size: fi.Size()}
		if b, err := os.ReadFile(p + ".hive-meta"); err == nil {
			json.Unmarshal(b, e)
			e.meta = true
		}
		all = append(all, found{key, e, fi.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("mirror: index cache: %w", err)
	}
	// Oldest first, so the front of the LRU is the newest.
	for i := 1; i < len(all); i++ {
		for j := i; j > 0 && all[j].at.Before(all[j-1].at); j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	for _, f := range all {
		f.e.elem = c.lru.PushFront(f.e)
		c.ents[f.key] = f.e
		c.total += f.e.size
	}
	c.used.Set(float64(c.total))
	return nil
}

type class int

const (
	classMeta class = iota
	classImmutable
)

func classify(p string) class {
	base := path.Base(p)
	switch {
	case strings.HasSuffix(base, ".deb"), strings.HasSuffix(base, ".udeb"), strings.HasSuffix(base, ".rpm"), strings.HasSuffix(base, ".ddeb"):
		return classImmutable
	case strings.Contains(p, "/by-hash/") || strings.HasPrefix(p, "by-hash/"):
		return classImmutable
	case path.Base(path.Dir(p)) == "repodata" && hashPrefix(base) != "":
		return classImmutable
	}
	return classMeta
}

// hashPrefix returns the hex hash a createrepo-style name starts with.
func hashPrefix(base string) string {
	i := strings.IndexByte(base, '-')
	if i != 32 && i != 40 && i != 64 && i != 128 {
		return ""
	}
	if _, err := hex.DecodeString(base[:i]); err != nil {
		return ""
	}
	return base[:i]
}

// nameHash returns the hash an immutable file's name promises, if any.
func nameHash(p string) (hash.Hash, string) {
	dir, base := path.Split(p)
	if strings.Contains(dir, "by-hash/") {
		switch path.Base(dir) {
		case "SHA256":
			return sha256.New(), base
		case "SHA512":
			return sha512.New(), base
		case "MD5Sum":
			return md5.New(), base
		case "SHA1":
			return sha1.New(), base
		}
		return nil, ""
	}
	if h := hashPrefix(base); h != "" {
		switch len(h) {
		case 64:
			return sha256.New(), h
		case 128:
			return sha512.New(), h
		case 40:
			return sha1.New(), h
		case 32:
			return md5.New(), h
		}
	}
	return nil, ""
}

// CleanPath validates a request path inside a mirror.
func CleanPath(p string) (string, error) {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") || strings.ContainsRune(p, 0) {
		return "", ErrBadPath
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." || seg == "." || seg == "" || strings.HasSuffix(seg, ".hive-meta") || strings.Contains(seg, ".hive-tmp") {
			return "", ErrBadPath
		}
	}
	return p, nil
}

// Serve answers one request for name/p.
func (c *Cache) Serve(w http.ResponseWriter, r *http.Request, name, p string) {
	up, ok := c.cfg.Upstreams[name]
	if !ok {
		http.Error(w, fmt.Sprintf("no mirror named %q", name), http.StatusNotFound)
		return
	}
	p, err := CleanPath(p)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key := name + "/" + p
	if classify(p) == classImmutable {
		c.serveImmutable(w, r, name, up, key, p)
		return
	}
	c.serveMeta(w, r, name, up, key, p)
}

func (c *Cache) count(name, result string) { c.reqs.WithLabelValues(name, result).Inc() }

func (c *Cache) file(key string) string { return filepath.Join(c.cfg.Dir, filepath.FromSlash(key)) }

// lookup returns the entry and marks it used.
func (c *Cache) lookup(key string) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.ents[key]
	if e != nil {
		c.lru.MoveToFront(e.elem)
	}
	return e
}

func (c *Cache) serveImmutable(w http.ResponseWriter, r *http.Request, name string, up Upstream, key, p string) {
	if c.lookup(key) != nil {
		if c.serveFile(w, r, key, "hit") {
			c.count(name, "hit")
			return
		}
	}
	h, want := nameHash(p)
	if h == nil {
		c.mu.Lock()
		want = c.expected[key]
		c.mu.Unlock()
		if want != "" {
			h = sha256.New()
		}
	}
	if h == nil {
		// Nothing vouches for this file: pass it through, do not keep it.
		c.count(name, "proxied")
		c.proxy(w, r, up, p)
		return
	}
	_, err, _ := c.sf.Do(key, func() (any, error) {
		if c.lookup(key) != nil {
			return nil, nil
		}
		return nil, c.fetch(r.Context(), up, key, p, h, want, false)
	})
	if err != nil {
		c.count(name, "error")
		c.fail(w, err)
		return
	}
	c.count(name, "miss")
	if !c.serveFile(w, r, key, "miss") {
		http.Error(w, "cached file vanished", http.StatusServiceUnavailable)
	}
}

func (c *Cache) serveMeta(w http.ResponseWriter, r *http.Request, name string, up Upstream, key, p string) {
	now := c.cfg.Now()
	if e := c.lookup(key); e != nil && c.cfg.TTL > 0 && now.Sub(e.Fetched) < c.cfg.TTL {
		if c.serveFile(w, r, key, "hit") {
			c.count(name, "hit")
			return
		}
	}
	res, err, _ := c.sf.Do("meta:"+key, func() (any, error) {
		return c.revalidate(r.Context(), up, key, p)
	})
	if err == nil {
		c.count(name, res.(string))
		if c.serveFile(w, r, key, res.(string)) {
			return
		}
		http.Error(w, "cached file vanished", http.StatusServiceUnavailable)
		return
	}
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		c.count(name, "notfound")
		http.Error(w, "not found upstream", http.StatusNotFound)
		return
	}
	// Upstream unreachable or failing: serve stale within limits.
	c.mu.Lock()
	e := c.ents[key]
	var limit time.Time
	if e != nil {
		limit = e.ValidUntil
		if limit.IsZero() {
			limit = e.Fetched.Add(c.cfg.MaxStale)
		}
	}
	c.mu.Unlock()
	if e != nil && now.Before(limit) {
		c.log.Warn("upstream failed, serving stale metadata", "mirror", name, "path", p, "err", err)
		c.count(name, "stale")
		w.Header().Set("Warning", `110 hive-repo "Response is Stale"`)
		if c.serveFile(w, r, key, "stale") {
			return
		}
	}
	c.count(name, "error")
	c.fail(w, err)
}

func (c *Cache) fail(w http.ResponseWriter, err error) {
	var se *statusError
	switch {
	case errors.As(err, &se) && se.code == http.StatusNotFound:
		http.Error(w, "not found upstream", http.StatusNotFound)
	case errors.Is(err, errVerify):
		http.Error(w, err.Error(), http.StatusBadGateway)
	default:
		http.Error(w, "upstream unavailable: "+err.Error(), http.StatusBadGateway)
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("upstream answered %d", e.code) }

// revalidate asks the upstream whether the cached copy is current and
// refreshes it; it returns "revalidated" (304) or "miss" (new content).
func (c *Cache) revalidate(ctx context.Context, up Upstream, key, p string) (any, error) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, strings.TrimRight(up.URL, "/")+"/"+p, nil)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	e := c.ents[key]
	if e != nil {
		if e.ETag != "" {
			req.Header.Set("If-None-Match", e.ETag)
		}
		if e.LastMod != "" {
			req.Header.Set("If-Modified-Since", e.LastMod)
		}
	}
	c.mu.Unlock()
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && e != nil {
		c.mu.Lock()
		e.Fetched = c.cfg.Now()
		c.mu.Unlock()
		c.writeMeta(key, e)
		return "revalidated", nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{resp.StatusCode}
	}
	if err := c.store(resp, key, p, nil, "", true); err != nil {
		return nil, err
	}
	return "miss", nil
}

// fetch downloads an immutable file and stores it after verification.
func (c *Cache) fetch(ctx context.Context, up Upstream, key, p string, h hash.Hash, want string, meta bool) error {
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, strings.TrimRight(up.URL, "/")+"/"+p, nil)
	if err != nil {
		return err
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.StatusCode}
	}
	return c.store(resp, key, p, h, want, meta)
}

// store writes resp's body into the cache (temp file, verify, rename).
func (c *Cache) store(resp *http.Response, key, p string, h hash.Hash, want string, meta bool) error {
	dst := c.file(key)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	// The temporary file's name holds ".hive-tmp" (atomicfile.TempPrefix),
	// which the cache skips and removes at start.
	tmp, err := atomicfile.Create(dst, atomicfile.Options{Perm: 0o644})
	if err != nil {
		return err
	}
	defer tmp.Discard()
	var wr io.Writer = tmp
	if h != nil {
		wr = io.MultiWriter(tmp, h)
	}
	n, err := io.Copy(wr, resp.Body)
	c.bytes.Add(float64(n))
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("short read from upstream: %d of %d bytes", n, resp.ContentLength)
	}
	if err != nil {
		return err
	}
	if h != nil {
		if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(want) {
			c.log.Warn("upstream file failed verification", "path", key, "want", want, "got", got)
			return fmt.Errorf("%w: %s", errVerify, p)
		}
	}
	e := &entry{key: key, size: n, ETag: resp.Header.Get("ETag"), LastMod: resp.Header.Get("Last-Modified"), Fetched: c.cfg.Now(), meta: meta}
	base := path.Base(p)
	isRelease := base == "InRelease" || base == "Release"
	if isRelease || n < 256<<20 {
		if b, err := os.ReadFile(tmp.File().Name()); err == nil {
			if isRelease {
				e.ValidUntil = validUntil(b)
			}
			c.learn(key, p, b)
		}
	}
	if meta {
		if err := c.writeMeta(key, e); err != nil {
			return err
		}
	}
	if err := tmp.Commit(); err != nil {
		return err
	}
	c.mu.Lock()
	if old := c.ents[key]; old != nil {
		c.total -= old.size
		c.lru.Remove(old.elem)
	}
	e.elem = c.lru.PushFront(e)
	c.ents[key] = e
	c.total += n
	c.mu.Unlock()
	c.evict()
	return nil
}

func (c *Cache) writeMeta(key string, e *entry) error {
	b, _ := json.Marshal(e)
	return atomicfile.WriteFile(c.file(key)+".hive-meta", b, 0o644)
}

// evict removes least-recently-used files until the cache fits.
func (c *Cache) evict() {
	for {
		c.mu.Lock()
		if c.total <= c.cfg.MaxBytes || c.lru.Len() <= 1 {
			c.used.Set(float64(c.total))
			c.mu.Unlock()
			return
		}
		e := c.lru.Back().Value.(*entry)
		c.lru.Remove(e.elem)
		delete(c.ents, e.key)
		c.total -= e.size
		c.mu.Unlock()
		os.Remove(c.file(e.key))
		os.Remove(c.file(e.key) + ".hive-meta")
		c.log.Debug("evicted", "path", e.key, "size", e.size)
	}
}

// serveFile serves a cached file; false if it is gone.
func (c *Cache) serveFile(w http.ResponseWriter, r *http.Request, key, result string) bool {
	f, err := os.Open(c.file(key))
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	w.Header().Set("X-Hive-Mirror", result)
	if classify(key) == classImmutable {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, path.Base(key), fi.ModTime(), f)
	return true
}

// proxy streams an upstream file without caching it.
func (c *Cache) proxy(w http.ResponseWriter, r *http.Request, up Upstream, p string) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, strings.TrimRight(up.URL, "/")+"/"+p, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if rg := r.Header.Get("Range"); rg != "" {
		req.Header.Set("Range", rg)
	}
	resp, err := c.cfg.Client.Do(req)
	if err != nil {
		c.fail(w, err)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Content-Length", "Content-Range", "Last-Modified", "ETag"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("X-Hive-Mirror", "proxied")
	w.WriteHeader(resp.StatusCode)
	n, _ := io.Copy(w, resp.Body)
	c.bytes.Add(float64(n))
}

// validUntil reads Valid-Until from a Release or InRelease file.
func validUntil(b []byte) time.Time {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Valid-Until:"); ok {
			for _, layout := range []string{time.RFC1123Z, time.RFC1123, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
				if t, err := time.Parse(layout, strings.TrimSpace(v)); err == nil {
					return t
				}
			}
		}
		if line == "" {
			// Signature block of InRelease starts after an empty line; the fields come first.
			continue
		}
	}
	return time.Time{}
}

// learn records the package hashes an index file lists, so that packages
// fetched later can be verified. It recognises APT Packages files and YUM
// primary.xml by content, in plain, gzip or xz form.
func (c *Cache) learn(key, p string, b []byte) {
	data := decompress(b)
	if data == nil {
		return
	}
	name := key[:strings.IndexByte(key, '/')]
	found := map[string]string{}
	switch {
	case bytes.HasPrefix(data, []byte("Package: ")):
		var file, sum string
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if file != "" && sum != "" {
					found[name+"/"+file] = sum
				}
				file, sum = "", ""
			case strings.HasPrefix(line, "Filename: "):
				file = strings.TrimSpace(line[len("Filename: "):])
			case strings.HasPrefix(line, "SHA256: "):
				sum = strings.TrimSpace(line[len("SHA256: "):])
			}
		}
		if file != "" && sum != "" {
			found[name+"/"+file] = sum
		}
	case bytes.Contains(data[:min(len(data), 512)], []byte("http://linux.duke.edu/metadata/common")):
		root := ""
		if i := strings.Index(p, "repodata/"); i >= 0 {
			root = p[:i]
		}
		dec := xml.NewDecoder(bytes.NewReader(data))
		var sum, typ string
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			se, ok := tok.(xml.StartElement)
			if !ok {
				continue
			}
			switch se.Name.Local {
			case "checksum":
				typ = ""
				for _, a := range se.Attr {
					if a.Name.Local == "type" {
						typ = a.Value
					}
				}
				var s string
				if dec.DecodeElement(&s, &se) == nil && typ == "sha256" {
					sum = strings.TrimSpace(s)
				}
			case "location":
				for _, a := range se.Attr {
					if a.Name.Local == "href" && sum != "" {
						found[name+"/"+root+a.Value] = sum
					}
				}
				sum = ""
			}
		}
	}
	if len(found) == 0 {
		return
	}
	c.mu.Lock()
	for k, v := range found {
		c.expected[k] = v
	}
	c.mu.Unlock()
}

func decompress(b []byte) []byte {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil
		}
		out, err := io.ReadAll(io.LimitReader(r, 1<<30))
		if err != nil {
			return nil
		}
		return out
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		r, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil
		}
		out, err := io.ReadAll(io.LimitReader(r, 1<<30))
		if err != nil {
			return nil
		}
		return out
	}
	return b
}

// Bytes returns the cache's current disk use.
func (c *Cache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
