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
func IdentityFromContext(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return Identity{}, ErrNoPeer
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, fmt.Errorf("%w (peer %v)", ErrNotTLS, p.Addr)
	}
	return IdentityFromConnState(info.State)
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
