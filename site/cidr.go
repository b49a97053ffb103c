package site

import (
	"fmt"
	"net/netip"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// normalizeCIDR accepts an address or a prefix and returns the prefix in
// canonical form. A prefix with host bits set is refused: "10.0.0.1/8" is
// almost always a typo for "10.0.0.0/8" or "10.0.0.1/32".
func normalizeCIDR(s string) (string, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return "", fmt.Errorf("%q is not an IP address or CIDR prefix", s)
		}
		return netip.PrefixFrom(a, a.BitLen()).String(), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid CIDR prefix", s)
	}
	if p.Masked() != p {
		return "", fmt.Errorf("%q has host bits set: did you mean %q?", s, p.Masked().String())
	}
	return p.String(), nil
}

// cidrFamily tells which IP family a set of normalised prefixes belongs to:
// UNSPECIFIED for none, BOTH for a mix.
func cidrFamily(prefixes []string) hivev1.IPFamily {
	v4, v6 := false, false
	for _, s := range prefixes {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			continue
		}
		if p.Addr().Is4() {
			v4 = true
		} else {
			v6 = true
		}
	}
	switch {
	case v4 && v6:
		return hivev1.IPFamily_IP_FAMILY_BOTH
	case v4:
		return hivev1.IPFamily_IP_FAMILY_IPV4
	case v6:
		return hivev1.IPFamily_IP_FAMILY_IPV6
	}
	return hivev1.IPFamily_IP_FAMILY_UNSPECIFIED
}
