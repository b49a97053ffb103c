package repo

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hivefleet/hive/repo/catalog"
	"github.com/hivefleet/hive/repo/mirror"
	"github.com/hivefleet/hive/repo/store"
)

var (
	nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	fileRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,250}\.(rpm|deb)$`)
)

// Sentinel errors of the upload API, mapped to HTTP status codes by the handlers.
var (
	// ErrBadName is returned for an invalid repository or file name (path traversal included).
	ErrBadName = errors.New("bad repository or file name")
	// ErrConflict is returned for an upload whose content differs from a
	// file of the same name (and replace was not asked), or from the file
	// that holds the same package version (name, version, architecture;
	// for RPMs name, epoch, version, release, architecture) under another
	// name: one package version is one file.
	ErrConflict = errors.New("conflict")
	// ErrNotFound is returned for an unknown repository or package.
	ErrNotFound = errors.New("not found")
)

// Server is hive-repo.
type Server struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	reg   *prometheus.Registry
	mir   *mirror.Cache
	oci   *registry // nil when Config.Registry.Disabled

	mu    sync.Mutex
	repos map[string]*Repo
	// gcMu: uploads hold it shared while committing, garbage collection exclusively.
	gcMu sync.RWMutex

	runCtx  context.Context
	started bool
	wg      sync.WaitGroup

	uploads     *prometheus.CounterVec
	publishes   *prometheus.CounterVec
	publishTime prometheus.Histogram
	pkgCount    *prometheus.GaugeVec
	requests    *prometheus.CounterVec
}

// New opens the data directory and loads every repository's state.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("repo config: %w", err)
	}
	log = log.With("component", "repo")
	st, err := store.Open(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"meta", "repos"} {
		if err := os.MkdirAll(filepath.Join(cfg.DataDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("open data dir: %w", err)
		}
	}
	s := &Server{cfg: cfg, log: log, store: st, reg: prometheus.NewRegistry(), repos: map[string]*Repo{}}
	s.uploads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_uploads_total", Help: "Package uploads by result."}, []string{"result"})
	s.publishes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_publishes_total", Help: "Repository publishes by result."}, []string{"repo", "result"})
	s.publishTime = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "hive_repo_publish_seconds", Help: "Time to index, sign and publish a repository.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)})
	s.pkgCount = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "hive_repo_packages", Help: "Packages per repository and kind."}, []string{"repo", "kind"})
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_http_requests_total", Help: "HTTP requests by area and status code."}, []string{"area", "code"})
	s.reg.MustRegister(s.uploads, s.publishes, s.publishTime, s.pkgCount, s.requests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mc := mirror.DefaultConfig()
	mc.Dir = filepath.Join(cfg.DataDir, "mirror")
	mc.Upstreams = cfg.Mirrors
	if cfg.MirrorMaxBytes > 0 {
		mc.MaxBytes = cfg.MirrorMaxBytes
	}
	mc.TTL = cfg.MirrorTTL
	if s.mir, err = mirror.New(mc, log, s.reg); err != nil {
		return nil, err
	}
	if !cfg.Registry.Disabled {
		if s.oci, err = newRegistry(cfg, s.reg, log.With("area", "registry")); err != nil {
			return nil, err
		}
	}
	ents, err := os.ReadDir(filepath.Join(cfg.DataDir, "repos"))
	if err != nil {
		return nil, fmt.Errorf("open data dir: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || !nameRe.MatchString(e.Name()) {
			continue
		}
		r, err := s.openRepo(e.Name())
		if err != nil {
			return nil, err
		}
		s.repos[e.Name()] = r
	}
	return s, nil
}

// Mirror returns the mirror cache.
func (s *Server) Mirror() *mirror.Cache { return s.mir }

// Signer-visible public key.
func (s *Server) publicKey() []byte { return s.cfg.Signer.PublicArmored() }

// repo returns the named repository, creating it when create is set.
func (s *Server) repo(name string, create bool) (*Repo, error) {
	if !nameRe.MatchString(name) {
		return nil, fmt.Errorf("%w: repository %q", ErrBadName, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.repos[name]; ok {
		return r, nil
	}
	if !create {
		return nil, fmt.Errorf("%w: repository %q", ErrNotFound, name)
	}
	r, err := s.openRepo(name)
	if err != nil {
		return nil, err
	}
	s.repos[name] = r
	if s.started {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); r.run(s.runCtx) }()
	}
	return r, nil
}

// Handler returns the HTTP handler of the whole server.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /keys/{file}", s.handleKey)
	mux.HandleFunc("GET /yum/{repo}/{path...}", s.handleRepoFile("yum"))
	mux.HandleFunc("GET /apt/{repo}/{path...}", s.handleRepoFile("apt"))
	mux.HandleFunc("GET /mirror/{name}/{path...}", func(w http.ResponseWriter, r *http.Request) {
		s.mir.Serve(w, r, r.PathValue("name"), r.PathValue("path"))
	})
	mux.HandleFunc("PUT /api/v1/repos/{repo}/packages/{file}", s.auth(s.handleUpload))
	mux.HandleFunc("DELETE /api/v1/repos/{repo}/packages/{file}", s.auth(s.handleRemove))
	mux.HandleFunc("POST /api/v1/repos/{repo}/reindex", s.auth(s.handleReindex))
	if s.oci != nil {
		mux.Handle("/v2/", s.oci)
	}
	mux.HandleFunc("GET /api/v1/repos", s.handleList)
	mux.HandleFunc("GET /api/v1/repos/{repo}", s.handleShow)
	return s.count(mux)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(c int) { w.code = c; w.ResponseWriter.WriteHeader(c) }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps net/http's sendfile path for files served through the
// counting wrapper (http.ServeContent copies with io.Copy).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

func (s *Server) count(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: 200}
		h.ServeHTTP(sw, r)
		area := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 2)[0]
		switch area {
		case "yum", "apt", "mirror", "api", "keys", "metrics", "healthz", "v2":
		default:
			area = "other"
		}
		s.requests.WithLabelValues(area, fmt.Sprint(sw.code)).Inc()
	})
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.UploadToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || got == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="hive-repo"`)
				httpError(w, http.StatusUnauthorized, "missing bearer token")
				return
			}
			if subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.UploadToken)) != 1 {
				httpError(w, http.StatusForbidden, "wrong token")
				return
			}
		}
		h(w, r)
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func errStatus(err error) int {
	switch {
	case errors.Is(err, ErrBadName), errors.Is(err, catalog.ErrUnknownKind):
		return http.StatusBadRequest
	case errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, store.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errInvalidPackage):
		return http.StatusUnprocessableEntity
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

func (s *Server) handleKey(w http.ResponseWriter, r *http.Request) {
	f := r.PathValue("file")
	name, ok := strings.CutSuffix(f, ".asc")
	if !ok || !(nameRe.MatchString(name) || name == "hive-repo") {
		httpError(w, http.StatusNotFound, "no such key")
		return
	}
	w.Header().Set("Content-Type", "application/pgp-keys")
	w.Write(s.publicKey())
}

func (s *Server) handleUpload(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > s.cfg.MaxUploadSize {
		s.uploads.WithLabelValues("too_large").Inc()
		httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload of %d bytes exceeds the limit of %d", r.ContentLength, s.cfg.MaxUploadSize))
		return
	}
	if !nameRe.MatchString(r.PathValue("repo")) {
		s.uploads.WithLabelValues("bad_name").Inc()
		httpError(w, http.StatusBadRequest, ErrBadName.Error())
		return
	}
	// Verify first: a refused upload must not create the repository.
	v, err := s.verify(r.PathValue("file"), http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadSize+1))
	var rp *Repo
	if err == nil {
		defer v.discard()
		rp, err = s.repo(r.PathValue("repo"), true)
	}
	if err == nil {
		var res *UploadResult
		res, err = rp.add(v, r.URL.Query().Get("replace") == "1" || r.URL.Query().Get("replace") == "true")
		if err == nil {
			s.uploads.WithLabelValues("ok").Inc()
			code := http.StatusCreated
			if res.Unchanged {
				code = http.StatusOK
			}
			writeJSON(w, code, res)
			return
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = fmt.Errorf("%w: limit %d bytes", store.ErrTooLarge, s.cfg.MaxUploadSize)
	}
	code := errStatus(err)
	s.uploads.WithLabelValues(strings.ToLower(strings.ReplaceAll(http.StatusText(code), " ", "_"))).Inc()
	if code >= 500 {
		s.log.Error("upload failed", "repo", r.PathValue("repo"), "file", r.PathValue("file"), "err", err)
	}
	httpError(w, code, err.Error())
}

func (s *Server) handleRemove(w http.ResponseWriter, r *http.Request) {
	rp, err := s.repo(r.PathValue("repo"), false)
	if err == nil {
		err = rp.Remove(r.PathValue("file"))
	}
	if err != nil {
		httpError(w, errStatus(err), err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleReindex(w http.ResponseWriter, r *http.Request) {
	rp, err := s.repo(r.PathValue("repo"), false)
	if err != nil {
		httpError(w, errStatus(err), err.Error())
		return
	}
	g, err := rp.Publish(r.Context())
	if err != nil {
		httpError(w, errStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"generation": g.N, "date": g.Date})
}

// RepoInfo is what the list and show endpoints return.
type RepoInfo struct {
	Name       string        `json:"name"`
	Packages   int           `json:"packages"`
	Generation int64         `json:"generation"`
	Published  time.Time     `json:"published,omitzero"`
	Files      []PackageInfo `json:"files,omitempty"`
}

// PackageInfo describes one package of a repository.
type PackageInfo struct {
	Filename string    `json:"filename"`
	Kind     string    `json:"kind"`
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	Package  string    `json:"package"`
	Uploaded time.Time `json:"uploaded"`
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.repos))
	for n := range s.repos {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := []RepoInfo{}
	for _, n := range names {
		rp, _ := s.repo(n, false)
		out = append(out, rp.Info(false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleShow(w http.ResponseWriter, r *http.Request) {
	rp, err := s.repo(r.PathValue("repo"), false)
	if err != nil {
		httpError(w, errStatus(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rp.Info(true))
}

func (s *Server) handleRepoFile(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rp, err := s.repo(r.PathValue("repo"), false)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		rp.serve(w, r, kind, r.PathValue("path"))
	}
}

// Run starts the per-repository publishers and serves HTTP on cfg.Addr until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.Start(ctx)
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, TLSConfig: s.cfg.TLS,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() {
		if s.cfg.TLS != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	s.log.Info("serving", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil, "dev", s.cfg.Dev)
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
		s.wg.Wait()
		if s.oci != nil {
			s.oci.close()
		}
		return nil
	case err := <-errc:
		return err
	}
}

// Start starts the per-repository publish loops (Serve calls it); they stop
// when ctx ends.
func (s *Server) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return
	}
	s.started, s.runCtx = true, ctx
	for _, r := range s.repos {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); r.run(ctx) }()
	}
}

// Wait waits for the publish loops to stop after Start's ctx ended.
func (s *Server) Wait() { s.wg.Wait() }
