// Package pki makes and reads hive's identities: a private certificate
// authority (ECDSA P-256), certificates for coordinators, agents and admins,
// and the mutual-TLS configurations that hive's gRPC and Raft traffic use.
//
// Every hive certificate names exactly one identity: a URI SAN
// hive://<kind>/<name> with kind coordinator, agent or admin, and the
// subject common name "<kind>:<name>". The URI SAN is authoritative;
// IdentityFromCert refuses certificates whose common name disagrees with it.
// Coordinator certificates are valid for serverAuth and clientAuth (they
// serve gRPC and dial each other for Raft); agent and admin certificates for
// clientAuth only, so a node can never pose as a coordinator.
//
// Callers: hivectl's tls commands create the files (WriteCA, WriteCert);
// hive-coordinator builds its listener with ServerTLSConfig and authorises
// each call with IdentityFromContext; hive-agent and hivectl dial with
// ClientTLSConfig; the coordinator signs bootstrap requests with
// SignAgentCSR. All functions are safe for concurrent use. The TLS
// configurations re-read their files when they change on disk (checked at
// each handshake with one stat per file), so a certificate is rotated by
// replacing the files; a half-written pair is ignored and the previous one
// kept until the new pair loads.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Kind is the role of an identity.
type Kind string

// The identity kinds.
const (
	KindCoordinator Kind = "coordinator"
	KindAgent       Kind = "agent"
	KindAdmin       Kind = "admin"
)

// URIScheme is the scheme of the URI SAN that names an identity.
const URIScheme = "hive"

// Kinds lists the valid kinds.
var Kinds = []Kind{KindCoordinator, KindAgent, KindAdmin}

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindCoordinator, KindAgent, KindAdmin:
		return true
	}
	return false
}

// Sentinel errors. Functions wrap them with details; test with errors.Is.
var (
	// ErrNoIdentity: the certificate carries no hive:// URI SAN (it was not
	// made by hive's tooling).
	ErrNoIdentity = errors.New("certificate carries no hive identity")
	// ErrBadIdentity: the hive:// URI SAN is malformed, names an unknown
	// kind, appears more than once, or disagrees with the common name.
	ErrBadIdentity = errors.New("malformed hive identity")
	// ErrBadName: a name is empty, too long, or has characters outside
	// [A-Za-z0-9._@-] (names become file names and URI paths).
	ErrBadName = errors.New("invalid identity name")
	// ErrNoPeer: the context carries no gRPC peer.
	ErrNoPeer = errors.New("no grpc peer in context")
	// ErrNotTLS: the connection is not TLS (plaintext --dev mode).
	ErrNotTLS = errors.New("connection is not tls")
	// ErrNoCertificate: the TLS client presented no (verified) certificate.
	ErrNoCertificate = errors.New("client presented no certificate")
	// ErrExists: a file would be overwritten and force was not given.
	ErrExists = errors.New("file already exists")
)

// Identity is who a certificate belongs to.
type Identity struct {
	Kind Kind
	Name string
}

// String returns "<kind>:<name>", the certificate's common name.
func (id Identity) String() string { return string(id.Kind) + ":" + id.Name }

// URI returns hive://<kind>/<name>.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: URIScheme, Host: string(id.Kind), Path: "/" + id.Name}
}

// Validate checks the kind and the name.
func (id Identity) Validate() error {
	if !id.Kind.Valid() {
		return fmt.Errorf("%w: kind %q (want coordinator, agent or admin)", ErrBadIdentity, id.Kind)
	}
	return ValidateName(id.Name)
}

// MaxNameLen is the longest identity name accepted.
const MaxNameLen = 253

// ValidateName checks that name may name an identity: 1 to 253 characters
// from [A-Za-z0-9._@-], not starting with '.' or '-'.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrBadName)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %d characters, at most %d", ErrBadName, len(name), MaxNameLen)
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%w: %q starts with %q", ErrBadName, name, name[0])
	}
	for i, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == '-', r == '@':
		default:
			return fmt.Errorf("%w: %q has %q at offset %d (allowed: letters, digits, . _ - @)", ErrBadName, name, r, i)
		}
	}
	return nil
}

// ParseIdentityURI parses hive://<kind>/<name>.
func ParseIdentityURI(u *url.URL) (Identity, error) {
	if u == nil || u.Scheme != URIScheme {
		return Identity{}, ErrNoIdentity
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return Identity{}, fmt.Errorf("%w: %q has extra parts", ErrBadIdentity, u.String())
	}
	name, ok := strings.CutPrefix(u.Path, "/")
	if !ok || strings.Contains(name, "/") {
		return Identity{}, fmt.Errorf("%w: %q: want hive://<kind>/<name>", ErrBadIdentity, u.String())
	}
	id := Identity{Kind: Kind(u.Host), Name: name}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: %q: %w", ErrBadIdentity, u.String(), err)
	}
	return id, nil
}

// IdentityFromCert returns the identity a certificate names. It does not
// verify the certificate: callers pass a certificate from a verified chain.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, ErrNoCertificate
	}
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		id, err := ParseIdentityURI(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("%w (subject %q)", ErrNoIdentity, cert.Subject.CommonName)
	case 1:
	default:
		return Identity{}, fmt.Errorf("%w: %d hive:// URIs, want one", ErrBadIdentity, len(found))
	}
	id := found[0]
	if cn := cert.Subject.CommonName; cn != id.String() {
		return Identity{}, fmt.Errorf("%w: common name %q disagrees with URI %q", ErrBadIdentity, cn, id.URI())
	}
	return id, nil
}
