package coordinator

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// checkSite re-validates a pushed site on the server (the client's
// validation is never trusted).
func checkSite(s *hivev1.Site) error { return site.Check(s) }

// checkSource verifies that a pushed source text is the pushed site: it
// parses the text with the parser hivectl uses (site.Parse reads that one
// file and nothing else, so the server sees everything the client saw)
// and compares the result with proto.Equal. A push without source text is
// accepted: it carries no text that could disagree (pull then says so).
// Only then can `hivectl pull` promise text that parses to the generation.
func checkSource(name string, src []byte, s *hivev1.Site) error {
	if len(src) == 0 {
		return nil
	}
	parsed, err := site.Parse(name, src)
	if err != nil {
		return fmt.Errorf("source does not parse: %w", err)
	}
	if proto.Equal(parsed, s) {
		return nil
	}
	return fmt.Errorf("source and site disagree: %s", siteMismatch(parsed, s))
}

// siteMismatch says where the site parsed from the source (src) first
// differs from the pushed site.
func siteMismatch(src, pushed *hivev1.Site) string {
	if src.GetName() != pushed.GetName() {
		return fmt.Sprintf("site name: source %q, site %q", src.GetName(), pushed.GetName())
	}
	if strings.Join(src.GetSecrets(), "\x00") != strings.Join(pushed.GetSecrets(), "\x00") {
		return fmt.Sprintf("secrets: source %v, site %v", src.GetSecrets(), pushed.GetSecrets())
	}
	if len(src.GetSelectors()) != len(pushed.GetSelectors()) {
		return fmt.Sprintf("selectors: source has %d, site %d", len(src.GetSelectors()), len(pushed.GetSelectors()))
	}
	for i := range src.GetSelectors() {
		if !proto.Equal(src.GetSelectors()[i], pushed.GetSelectors()[i]) {
			return fmt.Sprintf("selectors[%d] differ", i)
		}
	}
	if len(src.GetRoles()) != len(pushed.GetRoles()) {
		return fmt.Sprintf("roles: source has %d, site %d", len(src.GetRoles()), len(pushed.GetRoles()))
	}
	for i, sr := range src.GetRoles() {
		pr := pushed.GetRoles()[i]
		if sr.GetName() != pr.GetName() {
			return fmt.Sprintf("roles[%d]: source has role %q, site %q", i, sr.GetName(), pr.GetName())
		}
		if len(sr.GetResources()) != len(pr.GetResources()) {
			return fmt.Sprintf("role %q: source has %d resources, site %d", sr.GetName(), len(sr.GetResources()), len(pr.GetResources()))
		}
		for j, sres := range sr.GetResources() {
			pres := pr.GetResources()[j]
			if !proto.Equal(sres, pres) {
				return fmt.Sprintf("role %q: resource %s at %s differs from the site's %s", sr.GetName(), sres.GetKey(), sres.GetSource(), pres.GetKey())
			}
		}
		if !proto.Equal(sr, pr) {
			return fmt.Sprintf("role %q differs", sr.GetName())
		}
	}
	return "the sites differ"
}

// siteHash is the hex sha256 of the site's canonical form.
func siteHash(s *hivev1.Site) (string, error) { return site.Hash(s), nil }
