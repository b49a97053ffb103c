package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/proto"
)

// checkSite re-validates a pushed site on the server.
// TODO(site): replace with site.Check once package site lands.
func checkSite(s *hivev1.Site) error {
	if s == nil {
		return errors.New("push without a site")
	}
	var errs []error
	roles := map[string]bool{}
	for i, r := range s.GetRoles() {
		if r.GetName() == "" {
			errs = append(errs, fmt.Errorf("roles[%d]: role without a name", i))
			continue
		}
		if roles[r.GetName()] {
			errs = append(errs, fmt.Errorf("role %q is defined twice", r.GetName()))
		}
		roles[r.GetName()] = true
		keys := map[string]bool{}
		for j, res := range r.GetResources() {
			if res.GetKind() == nil {
				errs = append(errs, fmt.Errorf("role %q resources[%d]: resource without a kind", r.GetName(), j))
				continue
			}
			if keys[res.GetKey()] && res.GetKey() != "firewall:filter" {
				errs = append(errs, fmt.Errorf("role %q: resource %s is declared twice", r.GetName(), res.GetKey()))
			}
			keys[res.GetKey()] = true
		}
	}
	for i, sel := range s.GetSelectors() {
		for _, r := range sel.GetRoles() {
			if !roles[r] {
				errs = append(errs, fmt.Errorf("selectors[%d]: role %q is not defined", i, r))
			}
		}
	}
	return errors.Join(errs...)
}

// siteHash is the hex sha256 of the site's canonical encoding.
// TODO(site): replace with site.Hash once package site lands.
func siteHash(s *hivev1.Site) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("hash site: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
