package repo_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/repo"
	"github.com/hivefleet/hive/repo/repotest"
	"github.com/hivefleet/hive/repo/sign"
)

var (
	keyOnce   sync.Once
	keySigner *sign.Signer
)

func testSigner(t testing.TB) *sign.Signer {
	keyOnce.Do(func() {
		s, err := sign.Generate(sign.Ed25519, "hive test", "test@hive.invalid")
		if err != nil {
			t.Fatal(err)
		}
		keySigner = s
	})
	return keySigner
}

type env struct {
	t     testing.TB
	srv   *repo.Server
	url   string
	token string
	dir   string
	cfg   repo.Config
	stop  func()
}

const token = "s3cret-token"

func start(t testing.TB, mod func(*repo.Config)) *env {
	t.Helper()
	cfg := repo.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Signer = testSigner(t)
	cfg.UploadToken = token
	cfg.Debounce = 50 * time.Millisecond
	cfg.MaxDelay = 500 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	return startCfg(t, cfg)
}

func startCfg(t testing.TB, cfg repo.Config) *env {
	t.Helper()
	lvl := slog.LevelInfo
	if os.Getenv("HIVE_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	var w io.Writer = tlog{t}
	if _, bench := t.(*testing.B); bench && lvl == slog.LevelInfo {
		w = io.Discard // keep benchmark output to the figures
	}
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
	srv, err := repo.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return &env{t: t, srv: srv, url: "http://" + ln.Addr().String(), token: cfg.UploadToken, dir: cfg.DataDir, cfg: cfg, stop: stop}
}

type tlog struct{ t testing.TB }

func (l tlog) Write(b []byte) (int, error) { l.t.Log(strings.TrimSpace(string(b))); return len(b), nil }

func (e *env) do(method, path string, body []byte, tok string) (int, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *env) upload(repoName, file string, data []byte) {
	e.t.Helper()
	code, b := e.do("PUT", "/api/v1/repos/"+repoName+"/packages/"+file, data, e.token)
	if code != http.StatusCreated && code != http.StatusOK {
		e.t.Fatalf("upload %s: %d %s", file, code, b)
	}
}

func (e *env) reindex(repoName string) int64 {
	e.t.Helper()
	code, b := e.do("POST", "/api/v1/repos/"+repoName+"/reindex", nil, e.token)
	if code != 200 {
		e.t.Fatalf("reindex: %d %s", code, b)
	}
	var r struct{ Generation int64 }
	json.Unmarshal(b, &r)
	return r.Generation
}

func (e *env) get(path string) []byte {
	e.t.Helper()
	code, b := e.do("GET", path, nil, "")
	if code != 200 {
		e.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	return b
}

func rpmPkg(t testing.TB, name, ver string, signed bool) []byte {
	t.Helper()
	r := repotest.RPM{Name: name, Version: ver, Arch: "noarch"}
	if signed {
		r.Signer = testSigner(t)
	}
	b, err := repotest.BuildRPM(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func debPkg(t testing.TB, name, ver, comp string) []byte {
	t.Helper()
	b, err := repotest.BuildDeb(repotest.Deb{Name: name, Version: ver, Arch: "all", Compression: comp})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzip(t testing.TB, b []byte) string {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// TestPublishAndServe walks the published tree as a client would and
// checks every hash and signature.
func TestPublishAndServe(t *testing.T) {
	e := start(t, nil)
	e.upload("site", "hello-1.0-1.noarch.rpm", rpmPkg(t, "hello", "1.0", false))
	e.upload("site", "tool_2.0_all.deb", debPkg(t, "tool", "2.0", "xz"))
	e.reindex("site")

	s := testSigner(t)
	repomd := e.get("/yum/site/repodata/repomd.xml")
	if err := s.Verify(repomd, e.get("/yum/site/repodata/repomd.xml.asc")); err != nil {
		t.Fatalf("repomd.xml signature: %v", err)
	}
	for _, typ := range []string{"primary", "filelists", "other"} {
		i := bytes.Index(repomd, []byte(`-`+typ+`.xml.gz"`))
		j := bytes.LastIndex(repomd[:i], []byte(`repodata/`))
		name := string(repomd[j : i+len(typ)+8])
		b := e.get("/yum/site/" + name)
		if !strings.Contains(name, sha(b)) {
			t.Errorf("%s: content hash %s not in its name", name, sha(b))
		}
		if typ == "primary" && !strings.Contains(gunzip(t, b), "<name>hello</name>") {
			t.Errorf("primary lacks hello")
		}
	}
	e.get("/yum/site/packages/hello-1.0-1.noarch.rpm")

	rel := e.get("/apt/site/dists/stable/Release")
	if err := s.Verify(rel, e.get("/apt/site/dists/stable/Release.gpg")); err != nil {
		t.Fatalf("Release.gpg: %v", err)
	}
	inrel := string(e.get("/apt/site/dists/stable/InRelease"))
	if !strings.Contains(inrel, "-----BEGIN PGP SIGNED MESSAGE-----") || !strings.Contains(inrel, "Acquire-By-Hash: yes") {
		t.Errorf("InRelease:\n%s", inrel)
	}
	pk := e.get("/apt/site/dists/stable/main/binary-amd64/Packages")
	if !bytes.Contains(rel, []byte(sha(pk))) {
		t.Errorf("Release does not list Packages' sha256")
	}
	if got := e.get("/apt/site/dists/stable/main/binary-amd64/by-hash/SHA256/" + sha(pk)); !bytes.Equal(got, pk) {
		t.Errorf("by-hash content differs")
	}
	if !bytes.Contains(pk, []byte("Filename: pool/main/tool_2.0_all.deb")) {
		t.Errorf("Packages:\n%s", pk)
	}
	e.get("/apt/site/pool/main/tool_2.0_all.deb")
	// Architecture all is listed for arm64 too.
	if !bytes.Contains(e.get("/apt/site/dists/stable/main/binary-arm64/Packages"), []byte("Package: tool")) {
		t.Errorf("arch all package missing from binary-arm64")
	}
	if !bytes.Equal(e.get("/keys/site.asc"), s.PublicArmored()) {
		t.Errorf("key differs")
	}
	if m := string(e.get("/metrics")); !strings.Contains(m, `hive_repo_publishes_total{repo="site",result="ok"}`) {
		t.Errorf("metrics lack publishes")
	}
	e.get("/healthz")

	// Restart: the same generation is served from disk.
	n1 := e.get("/apt/site/dists/stable/InRelease")
	gen := e.srvInfo("site").Generation
	e.stop()
	cfg := e.cfg
	e2 := startCfg(t, cfg)
	if !bytes.Equal(e2.get("/apt/site/dists/stable/InRelease"), n1) {
		t.Errorf("InRelease changed across restart")
	}
	code, b := e2.do("GET", "/api/v1/repos/site", nil, "")
	if code != 200 || !strings.Contains(string(b), "hello-1.0-1.noarch.rpm") {
		t.Errorf("show after restart: %d %s", code, b)
	}
	time.Sleep(3 * cfg.MaxDelay)
	if g := e2.srvInfo("site").Generation; g != gen {
		t.Errorf("restart republished an unchanged repository: generation %d, was %d", g, gen)
	}
}

// TestKeyRotation: restarted with a new signing key, the server publishes
// again on its own, and everything is signed by the new key.
func TestKeyRotation(t *testing.T) {
	e := start(t, nil)
	e.upload("site", "aa_1_all.deb", debPkg(t, "aa", "1", "gz"))
	e.reindex("site")
	e.stop()
	newKey, err := sign.Generate(sign.Ed25519, "rotated", "r@hive.invalid")
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.cfg
	cfg.Signer = newKey
	e2 := startCfg(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rel := e2.get("/apt/site/dists/stable/Release")
		if newKey.Verify(rel, e2.get("/apt/site/dists/stable/Release.gpg")) == nil &&
			newKey.Verify(e2.get("/yum/site/repodata/repomd.xml"), e2.get("/yum/site/repodata/repomd.xml.asc")) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not republished with the new key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !bytes.Equal(e2.get("/keys/site.asc"), newKey.PublicArmored()) {
		t.Errorf("/keys serves the old key")
	}
}

// TestRestartPublishesPendingUploads: an upload acknowledged but not yet
// published when the server stopped is published after the restart.
func TestRestartPublishesPendingUploads(t *testing.T) {
	e := start(t, func(c *repo.Config) { c.Debounce, c.MaxDelay = time.Hour, time.Hour })
	e.upload("site", "aa_1_all.deb", debPkg(t, "aa", "1", "gz"))
	e.reindex("site")
	e.upload("site", "bb_1_all.deb", debPkg(t, "bb", "1", "gz"))
	e.stop()
	cfg := e.cfg
	cfg.Debounce, cfg.MaxDelay = 10*time.Millisecond, 100*time.Millisecond
	e2 := startCfg(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(e2.get("/apt/site/dists/stable/main/binary-amd64/Packages"), []byte("Package: bb")) {
		if time.Now().After(deadline) {
			t.Fatal("pending upload not published after restart")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDebounce: a burst of uploads makes a few publishes, not one each.
func TestDebounce(t *testing.T) {
	def := repo.DefaultConfig()
	e := start(t, func(c *repo.Config) { c.Debounce, c.MaxDelay = def.Debounce, def.MaxDelay })
	const n = 500
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			e.upload("burst", fmt.Sprintf("p%d_1.0_all.deb", i), debPkg(t, fmt.Sprintf("p%d", i), "1.0", "none")) // uncompressed members: cheap under -race
		}()
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, b := e.do("GET", "/apt/burst/dists/stable/main/binary-amd64/Packages", nil, "")
		if code == 200 && bytes.Count(b, []byte("Package: ")) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all %d packages published in time", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, b := e.do("GET", "/api/v1/repos/burst", nil, "")
	var info repo.RepoInfo
	json.Unmarshal(b, &info)
	if code != 200 || info.Generation < 1 || info.Generation > 5 {
		t.Errorf("%d uploads made %d publishes, want 1..5", n, info.Generation)
	}
	t.Logf("%d uploads -> %d publishes", n, info.Generation)
}

func (e *env) srvInfo(name string) repo.RepoInfo {
	e.t.Helper()
	_, b := e.do("GET", "/api/v1/repos/"+name, nil, "")
	var info repo.RepoInfo
	json.Unmarshal(b, &info)
	return info
}

func sha256sum(b []byte) [32]byte { return sha256.Sum256(b) }

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
