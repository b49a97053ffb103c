// Package ui is the coordinators' read-only web dashboard, served under
// /ui/ on the HTTP address that serves /metrics (--http-addr).
//
// Pages are rendered on the server with html/template (every value is
// escaped for its context; values from agents — node names, labels,
// messages, diffs — are hostile input and additionally have control and
// bidirectional-override characters made visible, see visible). A little
// plain JavaScript (assets/live.js, no build step, no CDN: everything is
// embedded with go:embed) keeps a page current without reloading: it
// long-polls /ui/live/PAGE, which blocks in the coordinator's blocking
// status read (GetStatus min_index/max_wait, statuswait.go) and answers
// with the page's fragment re-rendered once the status index moved.
//
// Access: the HTTP listener is plain HTTP and sees no client certificate,
// so a caller presents a dashboard token (package uitoken: signed by an
// admin certificate's key, made with `hivectl dashboard token`) as
// "Authorization: Bearer TOKEN" or as the cookie the login page sets. No
// token or a bad one is 401, a token of a non-admin certificate 403. With
// --dev, callers from a loopback address need no token (as the rest of
// the dev API). The content security policy allows only this origin's
// own script and style.
//
// Rollout progress and live events are pages of other features
// (coordinator/rollouts_page.go, events_page.go): they hook in through
// Config.Extra (see Page); a server without them shows placeholders.
package ui

import (
	"context"
	"crypto/x509"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/coordinator/ui/uitoken"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

//go:embed assets
var assets embed.FS

// Backend is what the dashboard reads: the coordinator's own API
// handlers (the gRPC CoordinatorService methods, called in-process).
type Backend interface {
	GetStatus(context.Context, *hivev1.GetStatusRequest) (*hivev1.GetStatusResponse, error)
	ListGenerations(context.Context, *hivev1.ListGenerationsRequest) (*hivev1.ListGenerationsResponse, error)
	GetGeneration(context.Context, *hivev1.GetGenerationRequest) (*hivev1.GetGenerationResponse, error)
	DiffGenerations(context.Context, *hivev1.DiffGenerationsRequest) (*hivev1.DiffGenerationsResponse, error)
	ListDriftRepairs(context.Context, *hivev1.ListDriftRepairsRequest) (*hivev1.ListDriftRepairsResponse, error)
}

// Page is an extra page another feature adds (rollouts, events): its
// navigation title, its path under /ui/ (for example "rollouts"), and
// either Content, the page's body (HTML the feature rendered and escaped
// itself, with html/template), shown inside the dashboard's layout, or
// Handler, which answers the whole request itself. Both run behind the
// dashboard's authentication.
//
// Live, if set, keeps a Content page current: the page's content holds
// <div id="live" data-live="/ui/live/PATH?..." data-index="N">, and
// assets/live.js long-polls that URL; Live is then called with the
// index the page shows and how long it may block, and returns the div's
// new inner HTML (escaped by the feature) and its index once that moved
// (or the same index when the wait ended without a change).
type Page struct {
	Title   string
	Path    string
	Content func(r *http.Request) (template.HTML, error)
	Handler http.Handler
	Live    func(r *http.Request, index uint64, wait time.Duration) (template.HTML, uint64, error)
}

// Config configures the dashboard.
type Config struct {
	Backend Backend
	// Server is the coordinator's name, shown in the header.
	Server string
	// CAFile is the site's CA certificate: dashboard tokens must chain to
	// it. Empty (a --dev server without --tls-ca): only loopback callers
	// of a Dev server get in.
	CAFile string
	// Dev opens the dashboard to loopback callers without a token.
	Dev bool
	// LiveWait is how long a live request blocks at most (default 25s).
	LiveWait time.Duration
	// Extra pages (rollouts, events) mounted under /ui/PATH.
	Extra []Page
	// OnDenied is called for every refused request (metrics).
	OnDenied func()
	// OnSignIn, if set, is called when the sign-in form accepts a token
	// (the coordinator records it in the audit log); it may block briefly.
	// An error refuses the sign-in (503).
	OnSignIn func(r *http.Request, id pki.Identity, expires time.Time) error
	Logger   *slog.Logger
	// Now is the clock (tests).
	Now func() time.Time
}

// Handler serves /ui/.
type Handler struct {
	cfg   Config
	mux   *http.ServeMux
	pages *pages

	rootsMu   sync.Mutex
	roots     *x509.CertPool
	rootsErr  error
	rootsTime time.Time
}

// CookieName is the cookie the login page sets.
const CookieName = "hive_dashboard"

// New returns the dashboard handler; mount it at "/ui/".
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LiveWait <= 0 {
		cfg.LiveWait = 25 * time.Second
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), pages: newPages()}
	h.routes()
	return h
}

type ctxKey struct{}

// caller returns the identity the request was let in as.
func caller(r *http.Request) pki.Identity {
	id, _ := r.Context().Value(ctxKey{}).(pki.Identity)
	return id
}

func (h *Handler) routes() {
	m := h.mux
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err) // embedded: cannot happen
	}
	m.Handle("GET /ui/static/{file}", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	csrf := http.NewCrossOriginProtection()
	m.HandleFunc("GET /ui/login", h.loginForm)
	m.Handle("POST /ui/login", csrf.Handler(http.HandlerFunc(h.login)))
	m.Handle("POST /ui/logout", csrf.Handler(http.HandlerFunc(h.logout)))
	m.Handle("GET /ui/{$}", h.auth(h.fleet))
	m.Handle("GET /ui/node", h.auth(h.node))
	m.Handle("GET /ui/generations", h.auth(h.generations))
	m.Handle("GET /ui/generation", h.auth(h.generation))
	m.Handle("GET /ui/live/{page}", h.auth(h.live))
	extra := map[string]bool{}
	for _, p := range h.cfg.Extra {
		extra[p.Path] = true
		switch {
		case p.Content != nil:
			m.Handle("GET /ui/"+p.Path, h.auth(h.extraPage(p)))
		case p.Handler != nil:
			m.Handle("/ui/"+p.Path, h.auth(p.Handler.ServeHTTP))
		}
	}
	// Placeholders for the rollouts and events pages when no feature
	// mounted them (the coordinator always does).
	for _, p := range []struct{ path, title string }{{"rollouts", "Rollouts"}, {"events", "Events"}} {
		if !extra[p.path] {
			m.Handle("GET /ui/"+p.path, h.auth(h.pending(p.title)))
		}
	}
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
}

// ServeHTTP serves /ui/ with the security headers on every answer.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: with no-referrer browsers send
	// "Origin: null" on form posts, which the sign-in form's cross-origin
	// protection must refuse (over plain HTTP there is no Sec-Fetch-Site).
	hd.Set("Referrer-Policy", "same-origin")
	hd.Set("Cache-Control", "no-store")
	h.mux.ServeHTTP(w, r)
}

// auth lets a request in with a valid admin dashboard token, or from
// loopback on a --dev server.
func (h *Handler) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, code, err := h.authenticate(r)
		if err != nil {
			if h.cfg.OnDenied != nil {
				h.cfg.OnDenied()
			}
			h.cfg.Logger.Info("dashboard request refused", "path", r.URL.Path, "from", r.RemoteAddr, "status", code, "err", err)
			h.refuse(w, r, code, err)
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// authenticate returns the caller's identity, or the HTTP status and the
// reason to refuse it.
func (h *Handler) authenticate(r *http.Request) (pki.Identity, int, error) {
	tok := ""
	if a := r.Header.Get("Authorization"); a != "" {
		t, ok := strings.CutPrefix(a, "Bearer ")
		if !ok {
			return pki.Identity{}, http.StatusUnauthorized, errors.New("the Authorization header must be \"Bearer TOKEN\"")
		}
		tok = strings.TrimSpace(t)
	} else if c, err := r.Cookie(CookieName); err == nil {
		tok = c.Value
	}
	if tok == "" {
		if h.cfg.Dev && loopback(r.RemoteAddr) {
			return pki.Identity{Kind: pki.KindAdmin, Name: "dev"}, 0, nil
		}
		return pki.Identity{}, http.StatusUnauthorized, errors.New("no dashboard token: sign in with a token from `hivectl dashboard token`")
	}
	roots, err := h.caPool()
	if err != nil {
		return pki.Identity{}, http.StatusUnauthorized, err
	}
	id, _, err := uitoken.Verify(tok, roots, h.cfg.Now())
	if err != nil {
		if errors.Is(err, uitoken.ErrForbidden) {
			return id, http.StatusForbidden, err
		}
		return id, http.StatusUnauthorized, err
	}
	return id, 0, nil
}

// caPool returns the site's CA, re-read at most every 30 s (a rotated CA
// file is picked up without a restart).
func (h *Handler) caPool() (*x509.CertPool, error) {
	if h.cfg.CAFile == "" {
		return nil, errors.New("this coordinator has no CA to check dashboard tokens with (--dev without --tls-ca): use it from loopback")
	}
	h.rootsMu.Lock()
	defer h.rootsMu.Unlock()
	if now := time.Now(); h.rootsTime.IsZero() || now.Sub(h.rootsTime) > 30*time.Second {
		h.roots, h.rootsErr = pki.LoadCertPool(h.cfg.CAFile)
		h.rootsTime = now
	}
	return h.roots, h.rootsErr
}

func loopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// refuse answers 401/403: the login page for a browser's page request,
// plain text otherwise.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hive dashboard"`)
	}
	if strings.HasPrefix(r.URL.Path, "/ui/live/") || !strings.Contains(r.Header.Get("Accept"), "text/html") {
		http.Error(w, err.Error(), code)
		return
	}
	h.pages.render(w, code, "login", h.base(r, "Sign in", loginData{Error: err.Error()}))
}

func (h *Handler) loginForm(w http.ResponseWriter, r *http.Request) {
	h.pages.render(w, http.StatusOK, "login", h.base(r, "Sign in", loginData{}))
}

type loginData struct{ Error string }

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		h.pages.render(w, http.StatusBadRequest, "login", h.base(r, "Sign in", loginData{Error: "form: " + err.Error()}))
		return
	}
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	roots, err := h.caPool()
	var exp time.Time
	var id pki.Identity
	if err == nil {
		id, exp, err = uitoken.Verify(tok, roots, h.cfg.Now())
	}
	if err != nil {
		if h.cfg.OnDenied != nil {
			h.cfg.OnDenied()
		}
		code := http.StatusUnauthorized
		if errors.Is(err, uitoken.ErrForbidden) {
			code = http.StatusForbidden
		}
		h.cfg.Logger.Info("dashboard sign-in refused", "from", r.RemoteAddr, "err", err)
		h.pages.render(w, code, "login", h.base(r, "Sign in", loginData{Error: err.Error()}))
		return
	}
	if h.cfg.OnSignIn != nil {
		if err := h.cfg.OnSignIn(r, id, exp); err != nil {
			h.cfg.Logger.Warn("dashboard sign-in not recorded", "from", r.RemoteAddr, "err", err)
			h.pages.render(w, http.StatusServiceUnavailable, "login", h.base(r, "Sign in", loginData{Error: "sign-in could not be recorded in the audit log; try again: " + err.Error()}))
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: tok, Path: "/ui/", Expires: exp,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// extraPage shows p's content inside the layout.
func (h *Handler) extraPage(p Page) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := p.Content(r)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.pages.render(w, http.StatusOK, "extra", h.base(r, p.Title, body))
	}
}

// pending is the placeholder of a page another feature has not mounted yet.
func (h *Handler) pending(title string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.pages.render(w, http.StatusOK, "pending", h.base(r, title, title))
	}
}
