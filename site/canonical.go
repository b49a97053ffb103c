package site

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// canonicalize puts a parsed site in canonical order: roles by name,
// resources by key, reference lists normalised, sorted and deduplicated.
// Selectors keep file order (their union is order-independent, but the
// order is what the operator wrote and what history shows).
func canonicalize(s *hivev1.Site) {
	sort.Slice(s.Roles, func(i, j int) bool { return s.Roles[i].Name < s.Roles[j].Name })
	s.Secrets = sortedUnique(s.Secrets)
	for _, sel := range s.Selectors {
		sel.Roles = sortedUnique(sel.Roles)
		sel.Names = sortedUnique(sel.Names)
	}
	for _, r := range s.Roles {
		sort.SliceStable(r.Resources, func(i, j int) bool { return r.Resources[i].Key < r.Resources[j].Key })
		for _, res := range r.Resources {
			for i, ref := range res.Requires {
				res.Requires[i] = normalizeRef(ref)
			}
			for i, ref := range res.Notify {
				res.Notify[i] = normalizeRef(ref)
			}
			res.Requires = sortedUnique(res.Requires)
			res.Notify = sortedUnique(res.Notify)
		}
	}
}

func sortedUnique(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// Canonical returns the canonical encoding of s: deterministic protobuf with
// source positions cleared, so that layout and comments do not count.
func Canonical(s *hivev1.Site) []byte {
	c := proto.Clone(s).(*hivev1.Site)
	for _, r := range c.GetRoles() {
		for _, res := range r.GetResources() {
			res.Source = ""
		}
		for _, hc := range r.GetChecks() {
			hc.Source = ""
		}
	}
	for _, svc := range c.GetServices() {
		svc.Source = ""
	}
	if c.GetRegistry() != nil {
		c.Registry.Source = ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// Marshalling a well-formed in-memory message cannot fail.
		panic("site: marshal canonical form: " + err.Error())
	}
	return b
}

// Hash is the hex sha256 of Canonical(s); it identifies a generation's
// content.
func Hash(s *hivev1.Site) string {
	sum := sha256.Sum256(Canonical(s))
	return hex.EncodeToString(sum[:])
}
