package repo

// The site's OCI image registry: the distribution/distribution registry
// (registry/handlers.App, filesystem driver) served under /v2/ on
// hive-repo's own listener, behind hive-repo's own authentication.
//
// Two Apps at most: the local one (push and pull, storage
// <data-dir>/registry) and, when Config.Registry.Upstream is set, a
// pull-through cache of the upstream (read-only, storage
// <data-dir>/registry-cache). A GET or HEAD of a repository that was never
// pushed locally goes to the cache, so engines can name hive-repo in
// registry-mirrors and pull the site's own images from the same address.
//
// Auth: pushes need the upload token, as HTTP basic (any user name, the
// token as password: `docker login`) or as a bearer token; pulls are
// anonymous unless Config.Registry.AnonymousPull is false. Docker clients
// only send credentials after a challenge on /v2/, and a basic challenge
// would make anonymous pulls fail, so hive-repo answers with a Bearer
// challenge whose realm is its own /v2/token endpoint (the Docker token
// protocol): the endpoint hands out a short-lived HMAC-signed token, with
// push rights when the basic credentials carry the upload token.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/hivefleet/hive/internal/atomicfile"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // registers the driver
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
)

// RegistryConfig configures the image registry under /v2/.
type RegistryConfig struct {
	// Disabled turns /v2/ off.
	Disabled bool
	// AnonymousPull lets pulls through without credentials (default true);
	// when false, pulls need the upload token too.
	AnonymousPull bool
	// Upstream, when set, is the URL of a registry cached pull-through
	// (https://registry-1.docker.io for Docker Hub).
	Upstream string
	// UpstreamUsername and UpstreamPassword authenticate to the upstream.
	UpstreamUsername, UpstreamPassword string
	// CacheTTL is how long cached upstream content is kept (default 7 days, 0 keeps it).
	CacheTTL time.Duration
	// TokenTTL is the life of the tokens /v2/token hands out (default 5 min).
	TokenTTL time.Duration
}

func defaultRegistryConfig() RegistryConfig {
	return RegistryConfig{AnonymousPull: true, CacheTTL: 7 * 24 * time.Hour, TokenTTL: 5 * time.Minute}
}

func (c *RegistryConfig) validate() []error {
	var errs []error
	if c.Upstream != "" {
		if u, err := url.Parse(c.Upstream); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("registry upstream %q: must be an http(s) URL", c.Upstream))
		}
	}
	if c.CacheTTL < 0 {
		errs = append(errs, errors.New("registry cache TTL must be >= 0"))
	}
	if c.TokenTTL < 0 {
		errs = append(errs, errors.New("registry token TTL must be >= 0"))
	}
	return errs
}

type registry struct {
	cfg       RegistryConfig
	token     string // upload token; "" in --dev: everything allowed
	local     *handlers.App
	cache     *handlers.App // nil without an upstream
	localRoot string
	key       []byte // HMAC key of issued tokens
	cancel    context.CancelFunc
	log       *slog.Logger

	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	tokens   *prometheus.CounterVec
}

// newRegistry builds the registry Apps; NewApp panics on bad configuration,
// which is turned into an error here.
func newRegistry(cfg Config, reg *prometheus.Registry, log *slog.Logger) (r *registry, err error) {
	rc := cfg.Registry
	if rc.TokenTTL == 0 {
		rc.TokenTTL = 5 * time.Minute
	}
	r = &registry{cfg: rc, log: log, token: cfg.UploadToken, localRoot: filepath.Join(cfg.DataDir, "registry")}
	r.key = make([]byte, 32)
	rand.Read(r.key)
	secret, err := loadSecret(filepath.Join(r.localRoot, "http-secret"))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	// The library logs through logrus, every refused request at error
	// level (a HEAD of a blob not pushed yet included): its lines go to
	// hive-repo's log at debug; 5xx answers are logged at error by ServeHTTP.
	libLog.Store(log)
	libLogOnce.Do(func() { logrus.SetOutput(io.Discard); logrus.AddHook(slogHook{}) })
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	defer func() {
		if p := recover(); p != nil {
			cancel()
			r, err = nil, fmt.Errorf("registry: %v", p)
		}
	}()
	r.local = handlers.NewApp(ctx, appConfig(filepath.Join(r.localRoot, "store"), secret))
	if rc.Upstream != "" {
		c := appConfig(filepath.Join(cfg.DataDir, "registry-cache"), "")
		c.Proxy = configuration.Proxy{RemoteURL: rc.Upstream, Username: rc.UpstreamUsername, Password: rc.UpstreamPassword, TTL: &rc.CacheTTL}
		r.cache = handlers.NewApp(ctx, c)
	}
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_registry_requests_total", Help: "Image registry requests by operation (pull, push, cache for upstream pulls, token, other) and status code."}, []string{"op", "code"})
	r.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_registry_bytes_total", Help: "Image registry bytes received (push) and sent (pull)."}, []string{"dir"})
	r.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hive_repo_registry_tokens_total", Help: "Registry tokens issued by access (pull, push) and refusals (denied)."}, []string{"result"})
	reg.MustRegister(r.requests, r.bytes, r.tokens)
	return r, nil
}

func appConfig(root, secret string) *configuration.Configuration {
	c := &configuration.Configuration{}
	c.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": root},
		"delete":      configuration.Parameters{"enabled": true},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": true, "age": "168h", "interval": "24h", "dryrun": false}},
	}
	c.HTTP.Secret = secret
	c.HTTP.RelativeURLs = true
	c.Log.Level = "warn"
	return c
}

// loadSecret reads the upload-state HMAC secret, making it on first use, so
// an upload survives a restart.
func loadSecret(file string) (string, error) {
	if b, err := os.ReadFile(file); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", err
	}
	b := make([]byte, 32)
	rand.Read(b)
	s := hex.EncodeToString(b)
	if err := atomicfile.WriteFile(file, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

func (r *registry) close() {
	r.local.Shutdown()
	if r.cache != nil {
		r.cache.Shutdown()
	}
	r.cancel()
}

// access is what a request's credentials allow.
type access int

const (
	accessNone access = iota
	accessPull
	accessPush
)

func (a access) String() string { return [...]string{"denied", "pull", "push"}[a] }

// credentials returns the access the request's Authorization header grants
// (valid reports false for a malformed or wrong credential).
func (r *registry) credentials(req *http.Request) (a access, valid bool) {
	if r.token == "" {
		return accessPush, true
	}
	h := req.Header.Get("Authorization")
	if h == "" {
		if r.cfg.AnonymousPull {
			return accessPull, true
		}
		return accessNone, true
	}
	if _, pw, ok := req.BasicAuth(); ok {
		if subtle.ConstantTimeCompare([]byte(pw), []byte(r.token)) == 1 {
			return accessPush, true
		}
		return accessNone, false
	}
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(r.token)) == 1 {
			return accessPush, true
		}
		if a, ok := r.checkToken(tok); ok {
			return a, true
		}
	}
	return accessNone, false
}

type tokenClaims struct {
	Access int   `json:"a"`
	Exp    int64 `json:"e"`
}

func (r *registry) issueToken(a access) (string, time.Time) {
	exp := time.Now().Add(r.cfg.TokenTTL)
	b, _ := json.Marshal(tokenClaims{Access: int(a), Exp: exp.Unix()})
	m := hmac.New(sha256.New, r.key)
	m.Write(b)
	return "hv1." + base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), exp
}

func (r *registry) checkToken(tok string) (access, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] != "hv1" {
		return accessNone, false
	}
	b, err1 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err2 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return accessNone, false
	}
	m := hmac.New(sha256.New, r.key)
	m.Write(b)
	if !hmac.Equal(sig, m.Sum(nil)) {
		return accessNone, false
	}
	var c tokenClaims
	if json.Unmarshal(b, &c) != nil || time.Now().Unix() > c.Exp || c.Access < int(accessPull) || c.Access > int(accessPush) {
		return accessNone, false
	}
	return access(c.Access), true
}

// repoPathRe splits a pull URL into the repository name and the rest.
var (
	repoPathRe = regexp.MustCompile(`^/v2/(.+?)/(manifests/[^/]+|blobs/[^/]+|tags/list)$`)
	repoNameRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
)

// ServeHTTP serves /v2/.
func (r *registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	cw := &countWriter{ResponseWriter: w, code: http.StatusOK}
	op := "other"
	defer func() { r.requests.WithLabelValues(op, strconv.Itoa(cw.code)).Inc() }()
	if req.URL.Path == "/v2/token" {
		op = "token"
		r.serveToken(cw, req)
		return
	}
	need := accessPush
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		need, op = accessPull, "pull"
	default:
		op = "push"
	}
	got, valid := r.credentials(req)
	ping := req.URL.Path == "/v2/" || req.URL.Path == "/v2"
	if ping && r.token != "" && req.Header.Get("Authorization") == "" {
		// The ping is how Docker clients learn where to get a token; the
		// challenge must come even when anonymous pulls are allowed.
		r.challenge(cw, req, "authentication required")
		return
	}
	if !valid {
		r.challenge(cw, req, "invalid credentials")
		return
	}
	if got < need {
		r.challenge(cw, req, need.String()+" access requires the upload token")
		return
	}
	app := r.local
	if need == accessPull && r.cache != nil {
		if m := repoPathRe.FindStringSubmatch(req.URL.Path); m != nil && repoNameRe.MatchString(m[1]) {
			if _, err := os.Stat(filepath.Join(r.localRoot, "store", "docker/registry/v2/repositories", m[1])); errors.Is(err, os.ErrNotExist) {
				app, op = r.cache, "cache"
			}
		}
	}
	if op == "push" && req.Body != nil {
		req.Body = &countReader{ReadCloser: req.Body, c: r.bytes.WithLabelValues("in")}
	}
	cw.out = r.bytes.WithLabelValues("out")
	app.ServeHTTP(cw, req)
	if cw.code >= 500 {
		r.log.Error("registry request failed", "method", req.Method, "path", req.URL.Path, "code", cw.code)
	}
}

// The library logs through logrus's global logger: one hook, to the log of
// the Server made last (one per process outside tests).
var (
	libLog     atomic.Pointer[slog.Logger]
	libLogOnce sync.Once
)

// slogHook sends the library's logrus entries to hive-repo's log at debug.
type slogHook struct{}

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }
func (slogHook) Fire(e *logrus.Entry) error {
	log := libLog.Load()
	if log == nil || !log.Enabled(context.Background(), slog.LevelDebug) {
		return nil
	}
	args := []any{"level", e.Level.String()}
	for _, k := range []string{"err.code", "err.detail", "http.request.method", "http.request.uri", "http.response.status"} {
		if v, ok := e.Data[k]; ok {
			args = append(args, k, v)
		}
	}
	log.Debug("registry: "+e.Message, args...)
	return nil
}

func (r *registry) challenge(w http.ResponseWriter, req *http.Request, msg string) {
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s://%s/v2/token",service="hive-repo"`, scheme, req.Host))
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": msg}}})
}

// serveToken is the token endpoint of the Docker token protocol.
func (r *registry) serveToken(w http.ResponseWriter, req *http.Request) {
	a, valid := r.credentials(req)
	if req.Header.Get("Authorization") != "" && valid && a < accessPush && r.token != "" {
		valid = false // a token endpoint takes the upload token, not an issued token
	}
	if !valid || a == accessNone {
		r.tokens.WithLabelValues("denied").Inc()
		w.Header().Set("WWW-Authenticate", `Basic realm="hive-repo"`)
		httpError(w, http.StatusUnauthorized, "the registry token needs the upload token as the basic-auth password")
		return
	}
	r.tokens.WithLabelValues(a.String()).Inc()
	tok, exp := r.issueToken(a)
	writeJSON(w, http.StatusOK, map[string]any{
		"token": tok, "access_token": tok,
		"expires_in": int(time.Until(exp).Seconds()), "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

type countWriter struct {
	http.ResponseWriter
	code int
	out  prometheus.Counter
}

func (w *countWriter) WriteHeader(c int) { w.code = c; w.ResponseWriter.WriteHeader(c) }
func (w *countWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	if w.out != nil {
		w.out.Add(float64(n))
	}
	return n, err
}
func (w *countWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w *countWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

type countReader struct {
	io.ReadCloser
	c prometheus.Counter
}

func (r *countReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	r.c.Add(float64(n))
	return n, err
}
