package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Label limits: what a certificate, a bootstrap token, an operator or an
// agent may give a node.
const (
	// MaxLabels is the most labels one node, certificate or token carries.
	MaxLabels = 32
	// MaxLabelKeyLen is the longest label key.
	MaxLabelKeyLen = 63
	// MaxLabelValueLen is the longest label value.
	MaxLabelValueLen = 253
)

// ErrBadLabel: a label key or value is too long or has a character outside
// its set, or there are more than MaxLabels.
var ErrBadLabel = errors.New("invalid label")

// OIDLabels is the certificate extension that carries an agent's labels,
// bound at enrolment: a non-critical extension whose value is the DER of
//
//	Labels ::= SEQUENCE OF SEQUENCE { key UTF8String, value UTF8String }
//
// sorted by key, keys unique. The arc 1.3.6.1.4.1.62079 is hive's private
// enterprise arc (.11 labels, .1 version 1).
var OIDLabels = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 62079, 11, 1}

type labelPair struct {
	Key   string `asn1:"utf8"`
	Value string `asn1:"utf8"`
}

func keyChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '/'
}

func valueChar(r rune) bool {
	return keyChar(r) || r == ':' || r == '@' || r == '+' || r == '=' || r == ','
}

// ValidateLabel checks one label: the key 1 to 63 characters from
// [A-Za-z0-9._/-] starting with a letter or digit, the value at most 253
// characters from [A-Za-z0-9._/:@+=,-] (may be empty). Errors quote the
// offending text with Go escapes, so a newline shows as \n.
func ValidateLabel(k, v string) error {
	if k == "" {
		return fmt.Errorf("%w: empty key", ErrBadLabel)
	}
	if len(k) > MaxLabelKeyLen {
		return fmt.Errorf("%w: key %s is %d bytes, at most %d", ErrBadLabel, quoteShort(k), len(k), MaxLabelKeyLen)
	}
	if c := k[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
		return fmt.Errorf("%w: key %q must start with a letter or digit", ErrBadLabel, k)
	}
	for i, r := range k {
		if !keyChar(r) {
			return fmt.Errorf("%w: key %q has %q at offset %d (allowed: letters, digits, . _ - /)", ErrBadLabel, k, r, i)
		}
	}
	if len(v) > MaxLabelValueLen {
		return fmt.Errorf("%w: value of %s is %d bytes, at most %d", ErrBadLabel, k, len(v), MaxLabelValueLen)
	}
	for i, r := range v {
		if !valueChar(r) {
			return fmt.Errorf("%w: value of %s, %q, has %q at offset %d (allowed: letters, digits, . _ - / : @ + = ,)", ErrBadLabel, k, v, r, i)
		}
	}
	return nil
}

// ValidateLabels checks every label of m (keys in order) and their count.
func ValidateLabels(m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%w: %d labels, at most %d", ErrBadLabel, len(m), MaxLabels)
	}
	for _, k := range sortedKeys(m) {
		if err := ValidateLabel(k, m[k]); err != nil {
			return err
		}
	}
	return nil
}

// ParseLabelArgs parses "key=value" arguments (hivectl's --label) into a
// map, validating each; a key given twice is an error.
func ParseLabelArgs(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q: want key=value", ErrBadLabel, a)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%w: key %q given twice", ErrBadLabel, k)
		}
		if err := ValidateLabel(k, v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	if len(out) > MaxLabels {
		return nil, fmt.Errorf("%w: %d labels, at most %d", ErrBadLabel, len(out), MaxLabels)
	}
	return out, nil
}

// labelsExtension encodes labels as the OIDLabels extension.
func labelsExtension(m map[string]string) (pkix.Extension, error) {
	if err := ValidateLabels(m); err != nil {
		return pkix.Extension{}, err
	}
	pairs := make([]labelPair, 0, len(m))
	for _, k := range sortedKeys(m) {
		pairs = append(pairs, labelPair{Key: k, Value: m[k]})
	}
	der, err := asn1.Marshal(pairs)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("encode labels: %w", err)
	}
	return pkix.Extension{Id: OIDLabels, Value: der}, nil
}

// LabelsFromCert returns the labels bound in a certificate (nil when it
// carries none). Like IdentityFromCert it does not verify the certificate:
// callers pass one from a verified chain. A malformed extension, a label
// that does not validate, a duplicate key or a second extension is an
// ErrBadLabel error: a certificate either binds valid labels or is refused.
func LabelsFromCert(cert *x509.Certificate) (map[string]string, error) {
	if cert == nil {
		return nil, ErrNoCertificate
	}
	var out map[string]string
	for _, e := range cert.Extensions {
		if !e.Id.Equal(OIDLabels) {
			continue
		}
		if out != nil {
			return nil, fmt.Errorf("%w: the label extension appears twice", ErrBadLabel)
		}
		var pairs []labelPair
		rest, err := asn1.Unmarshal(e.Value, &pairs)
		if err != nil {
			return nil, fmt.Errorf("%w: label extension: %w", ErrBadLabel, err)
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("%w: label extension: trailing data", ErrBadLabel)
		}
		if len(pairs) > MaxLabels {
			return nil, fmt.Errorf("%w: %d labels, at most %d", ErrBadLabel, len(pairs), MaxLabels)
		}
		out = make(map[string]string, len(pairs))
		for _, p := range pairs {
			if _, dup := out[p.Key]; dup {
				return nil, fmt.Errorf("%w: key %q appears twice", ErrBadLabel, p.Key)
			}
			if err := ValidateLabel(p.Key, p.Value); err != nil {
				return nil, err
			}
			out[p.Key] = p.Value
		}
	}
	return out, nil
}

// FormatLabels renders labels as "k=v,k2=v2", keys sorted ("-" for none).
func FormatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// quoteShort quotes s with Go escapes, cut to 64 bytes.
func quoteShort(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}
