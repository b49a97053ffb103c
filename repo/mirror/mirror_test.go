package mirror_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hivefleet/hive/repo/mirror"
)

// upstream is a test's own HTTP server holding a small APT-like tree.
type upstream struct {
	mu    sync.Mutex
	files map[string][]byte
	hits  map[string]int
	down  atomic.Bool
	delay time.Duration
	mod   time.Time
	url   string
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{files: map[string][]byte{}, hits: map[string]int{}, mod: time.Now().Add(-time.Hour).Truncate(time.Second)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p := strings.TrimPrefix(r.URL.Path, "/")
		u.mu.Lock()
		u.hits[p]++
		b, ok := u.files[p]
		u.mu.Unlock()
		if u.delay > 0 {
			time.Sleep(u.delay)
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", u.mod, bytes.NewReader(b))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	u.url = "http://" + ln.Addr().String()
	return u
}

func (u *upstream) set(p string, b []byte) { u.mu.Lock(); u.files[p] = b; u.mu.Unlock() }
func (u *upstream) count(p string) int     { u.mu.Lock(); defer u.mu.Unlock(); return u.hits[p] }

type front struct {
	c   *mirror.Cache
	url string
}

func newFront(t *testing.T, up *upstream, mod func(*mirror.Config)) *front {
	cfg := mirror.DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Upstreams = map[string]mirror.Upstream{"deb": {URL: up.url}}
	if mod != nil {
		mod(&cfg)
	}
	c, err := mirror.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /mirror/{name}/{path...}", func(w http.ResponseWriter, r *http.Request) {
		c.Serve(w, r, r.PathValue("name"), r.PathValue("path"))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &front{c: c, url: "http://" + ln.Addr().String() + "/mirror/deb/"}
}

func get(t *testing.T, url string, hdr ...string) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func hexsum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// tree fills the upstream with a Release, a Packages file (plain and by
// hash) listing one package, and the package.
func tree(u *upstream, validUntil time.Time) (deb, packages []byte) {
	deb = bytes.Repeat([]byte("debian package bytes "), 5000)
	packages = []byte(fmt.Sprintf("Package: hello\nVersion: 1\nArchitecture: all\nFilename: pool/main/h/hello/hello_1_all.deb\nSize: %d\nSHA256: %s\n\n", len(deb), hexsum(deb)))
	rel := "Origin: test\nDate: " + time.Now().UTC().Format(time.RFC1123Z) + "\n"
	if !validUntil.IsZero() {
		rel += "Valid-Until: " + validUntil.UTC().Format(time.RFC1123Z) + "\n"
	}
	rel += "SHA256:\n " + hexsum(packages) + " " + fmt.Sprint(len(packages)) + " main/binary-amd64/Packages\n"
	u.set("dists/stable/InRelease", []byte(rel))
	u.set("dists/stable/main/binary-amd64/Packages", packages)
	u.set("dists/stable/main/binary-amd64/by-hash/SHA256/"+hexsum(packages), packages)
	u.set("pool/main/h/hello/hello_1_all.deb", deb)
	return deb, packages
}

func TestMirrorCachesVerifiesAndRevalidates(t *testing.T) {
	u := newUpstream(t)
	deb, packages := tree(u, time.Now().Add(time.Hour))
	f := newFront(t, u, nil)

	// Root metadata: fetched, then revalidated on each request (304 from upstream).
	for i := range 3 {
		code, b, h := get(t, f.url+"dists/stable/InRelease")
		if code != 200 || !bytes.HasPrefix(b, []byte("Origin: test")) {
			t.Fatalf("InRelease: %d %s", code, b)
		}
		if want := map[int]string{0: "miss", 1: "revalidated", 2: "revalidated"}[i]; h.Get("X-Hive-Mirror") != want {
			t.Errorf("request %d: X-Hive-Mirror %q, want %q", i, h.Get("X-Hive-Mirror"), want)
		}
	}
	if n := u.count("dists/stable/InRelease"); n != 3 {
		t.Errorf("upstream saw %d InRelease requests, want 3 (revalidation each time)", n)
	}
	// Index by hash, then the package verified against it; later hits stay local.
	bh := "dists/stable/main/binary-amd64/by-hash/SHA256/" + hexsum(packages)
	for range 2 {
		if code, b, _ := get(t, f.url+bh); code != 200 || !bytes.Equal(b, packages) {
			t.Fatalf("by-hash: %d", code)
		}
		code, b, h := get(t, f.url+"pool/main/h/hello/hello_1_all.deb")
		if code != 200 || !bytes.Equal(b, deb) {
			t.Fatalf("deb: %d %q", code, h.Get("X-Hive-Mirror"))
		}
	}
	if u.count(bh) != 1 || u.count("pool/main/h/hello/hello_1_all.deb") != 1 {
		t.Errorf("immutable files fetched more than once: %d %d", u.count(bh), u.count("pool/main/h/hello/hello_1_all.deb"))
	}
	// Range from cache.
	code, b, _ := get(t, f.url+"pool/main/h/hello/hello_1_all.deb", "Range", "bytes=100-199")
	if code != 206 || !bytes.Equal(b, deb[100:200]) {
		t.Errorf("range: %d %d bytes", code, len(b))
	}
	if u.count("pool/main/h/hello/hello_1_all.deb") != 1 {
		t.Errorf("range request went upstream")
	}

	// Upstream down: metadata served stale within Valid-Until; cached packages still served.
	u.down.Store(true)
	code, b, h := get(t, f.url+"dists/stable/InRelease")
	if code != 200 || h.Get("X-Hive-Mirror") != "stale" || !bytes.HasPrefix(b, []byte("Origin: test")) {
		t.Errorf("stale InRelease: %d %q", code, h.Get("X-Hive-Mirror"))
	}
	if code, _, _ := get(t, f.url+"pool/main/h/hello/hello_1_all.deb"); code != 200 {
		t.Errorf("cached deb with upstream down: %d", code)
	}
	if code, _, _ := get(t, f.url+"dists/stable/Release"); code != 502 {
		t.Errorf("uncached file with upstream down: %d, want 502", code)
	}
}

func TestMirrorStaleLimitedByValidUntil(t *testing.T) {
	u := newUpstream(t)
	tree(u, time.Now().Add(-time.Minute)) // already expired
	f := newFront(t, u, nil)
	if code, _, _ := get(t, f.url+"dists/stable/InRelease"); code != 200 {
		t.Fatal(code)
	}
	u.down.Store(true)
	if code, _, _ := get(t, f.url+"dists/stable/InRelease"); code != 502 {
		t.Errorf("expired InRelease served stale: %d, want 502", code)
	}
}

func TestMirrorRefusesCorruptUpstream(t *testing.T) {
	u := newUpstream(t)
	_, packages := tree(u, time.Time{})
	f := newFront(t, u, nil)
	get(t, f.url+"dists/stable/main/binary-amd64/Packages")
	u.set("pool/main/h/hello/hello_1_all.deb", []byte("tampered"))
	if code, _, _ := get(t, f.url+"pool/main/h/hello/hello_1_all.deb"); code != 502 {
		t.Errorf("tampered package: %d, want 502", code)
	}
	u.set("dists/stable/main/binary-amd64/by-hash/SHA256/"+hexsum(packages), []byte("wrong"))
	if code, _, _ := get(t, f.url+"dists/stable/main/binary-amd64/by-hash/SHA256/"+hexsum(packages)); code != 502 {
		t.Errorf("wrong by-hash content: %d, want 502", code)
	}
	if f.c.Bytes() != int64(len(packages)) {
		t.Errorf("cache holds %d bytes; refused files must not be cached", f.c.Bytes())
	}
}

func TestMirrorSingleflight(t *testing.T) {
	u := newUpstream(t)
	_, packages := tree(u, time.Time{})
	u.delay = 200 * time.Millisecond
	f := newFront(t, u, nil)
	p := "dists/stable/main/binary-amd64/by-hash/SHA256/" + hexsum(packages)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, b, _ := get(t, f.url+p); code != 200 || !bytes.Equal(b, packages) {
				t.Errorf("concurrent get: %d", code)
			}
		}()
	}
	wg.Wait()
	if n := u.count(p); n != 1 {
		t.Errorf("20 concurrent misses made %d upstream requests, want 1", n)
	}
}

func TestMirrorLRUCap(t *testing.T) {
	u := newUpstream(t)
	var names []string
	for i := range 4 {
		b := bytes.Repeat([]byte{byte('a' + i)}, 4000)
		n := "by-hash/SHA256/" + hexsum(b)
		u.set(n, b)
		names = append(names, n)
	}
	f := newFront(t, u, func(c *mirror.Config) { c.MaxBytes = 10000 })
	for _, n := range names[:2] {
		get(t, f.url+n)
	}
	get(t, f.url+names[0]) // names[1] is now least recently used
	get(t, f.url+names[2])
	get(t, f.url+names[3])
	if f.c.Bytes() > 10000 {
		t.Errorf("cache holds %d bytes over the 10000 cap", f.c.Bytes())
	}
	before := u.count(names[3])
	get(t, f.url+names[3])
	if u.count(names[3]) != before {
		t.Errorf("most recent file was evicted")
	}
	before = u.count(names[1])
	get(t, f.url+names[1])
	if u.count(names[1]) != before+1 {
		t.Errorf("least recently used file was not evicted")
	}
}

func TestCleanPath(t *testing.T) {
	for _, p := range []string{"", "/etc/passwd", "a/../../x", "..", "a//b", "a/./b", `a\b`, "x.hive-meta"} {
		if _, err := mirror.CleanPath(p); err == nil {
			t.Errorf("CleanPath(%q) accepted", p)
		}
	}
	if _, err := mirror.CleanPath("dists/stable/InRelease"); err != nil {
		t.Error(err)
	}
}

func TestMirrorTTL(t *testing.T) {
	u := newUpstream(t)
	tree(u, time.Time{})
	f := newFront(t, u, func(c *mirror.Config) { c.TTL = time.Hour })
	for i := range 3 {
		if code, _, h := get(t, f.url+"dists/stable/InRelease"); code != 200 || (i > 0 && h.Get("X-Hive-Mirror") != "hit") {
			t.Errorf("request %d: %d %q", i, code, h.Get("X-Hive-Mirror"))
		}
	}
	if n := u.count("dists/stable/InRelease"); n != 1 {
		t.Errorf("upstream saw %d requests within the TTL, want 1", n)
	}
}

// TestMirrorRestart: a new Cache on the same directory serves what the old
// one cached, without asking the upstream for immutable files.
func TestMirrorRestart(t *testing.T) {
	u := newUpstream(t)
	_, packages := tree(u, time.Time{})
	dir := t.TempDir()
	p := "dists/stable/main/binary-amd64/by-hash/SHA256/" + hexsum(packages)
	f := newFront(t, u, func(c *mirror.Config) { c.Dir = dir })
	get(t, f.url+p)
	f2 := newFront(t, u, func(c *mirror.Config) { c.Dir = dir })
	if code, b, h := get(t, f2.url+p); code != 200 || !bytes.Equal(b, packages) || h.Get("X-Hive-Mirror") != "hit" {
		t.Errorf("after restart: %d %q", code, h.Get("X-Hive-Mirror"))
	}
	if u.count(p) != 1 {
		t.Errorf("upstream asked again after restart")
	}
	if f2.c.Bytes() != int64(len(packages)) {
		t.Errorf("restarted cache accounts %d bytes", f2.c.Bytes())
	}
}
