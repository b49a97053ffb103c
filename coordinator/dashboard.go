package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hivefleet/hive/pki"

	"github.com/hivefleet/hive/coordinator/ui"
)

// dashboard is the read-only web dashboard (package ui) under /ui/ on the
// HTTP address: it reads through this server's own API handlers, so what
// it shows is what `hivectl status`/`history`/`diff` against this server
// show.
func (s *Server) dashboard() http.Handler {
	var extra []ui.Page
	for _, p := range dashboardPages {
		extra = append(extra, p(s))
	}
	return ui.New(ui.Config{
		Backend:  &api{s: s},
		Server:   s.cfg.Name,
		CAFile:   s.cfg.TLSCA,
		Dev:      s.cfg.Dev,
		Extra:    extra,
		OnDenied: func() { s.metrics.denied.Inc() },
		OnSignIn: func(r *http.Request, id pki.Identity, exp time.Time) error {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyTimeout)
			defer cancel()
			return s.auditAs(ctx, id.String(), "POST /ui/login", fmt.Sprintf("dashboard sign-in from %s with a token expiring %s", r.RemoteAddr, exp.UTC().Format(time.RFC3339)))
		},
		Logger: s.root.With("component", "dashboard"),
	})
}

// dashboardPages make the extra dashboard pages (ui.Page) every server
// mounts under /ui/PATH, behind the dashboard's authentication and in its
// navigation. A page's file adds its constructor from an init function
// (events_page.go, rollouts_page.go):
//
//	func init() {
//		dashboardPages = append(dashboardPages, func(s *Server) ui.Page {
//			return ui.Page{Title: "Rollouts", Path: "rollouts", Content: s.rolloutsHTML, Live: s.rolloutsLive}
//		})
//	}
//
// Content returns the page's body, rendered with html/template (agents'
// text is hostile: printable drops control characters); the dashboard
// wraps it in its layout and navigation. Live, with a
// <div id="live" data-live="/ui/live/PATH"> in the content, keeps it
// current (see ui.Page).
var dashboardPages []func(*Server) ui.Page
