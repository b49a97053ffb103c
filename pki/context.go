package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// IdentityFromContext returns the identity of the gRPC caller, from the
// verified client certificate of the call's connection. It returns
// ErrNoPeer without a peer, ErrNotTLS on a plaintext connection (--dev),
// ErrNoCertificate when the client presented none, and ErrNoIdentity or
// ErrBadIdentity for a certificate that does not name one hive identity.
//
// The coordinator calls it for every new stream on the goroutine that reads
// the connection, whose stack stays at 4 KiB only while nothing it calls
// goes deeper: the peer's TLSInfo (about 500 bytes) is therefore copied
// only in LeafFromContext's frame, which has returned before the
// certificate is parsed (docs/performance.md, "Issue 13 eighth pass").
func IdentityFromContext(ctx context.Context) (Identity, error) {
	leaf, err := LeafFromContext(ctx)
	if err != nil {
		return Identity{}, err
	}
	return IdentityFromCert(leaf)
}

// IdentityFromConnState returns the identity of a TLS peer from its
// verified chain (never from an unverified certificate).
func IdentityFromConnState(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, ErrNoCertificate
	}
	return IdentityFromCert(cs.VerifiedChains[0][0])
}

// LeafFromContext returns the gRPC caller's verified client certificate,
// with the same errors as IdentityFromContext.
//
//go:noinline
func LeafFromContext(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return nil, ErrNoPeer
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil, fmt.Errorf("%w (peer %v)", ErrNotTLS, p.Addr)
	}
	cs := info.State
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil, ErrNoCertificate
	}
	return cs.VerifiedChains[0][0], nil
}
