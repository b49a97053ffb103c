package coordinator

import (
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// checkSite re-validates a pushed site on the server (the client's
// validation is never trusted).
func checkSite(s *hivev1.Site) error { return site.Check(s) }

// siteHash is the hex sha256 of the site's canonical form.
func siteHash(s *hivev1.Site) (string, error) { return site.Hash(s), nil }
