package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// ServerOption changes ServerTLSConfig.
type ServerOption func(*serverOptions)

type serverOptions struct {
	allowNoClientCert bool
}

// AllowNoClientCert accepts clients that present no certificate (a
// certificate that is presented is still verified). The coordinator uses it
// so that a new agent can redeem a bootstrap token; every other call must
// then check IdentityFromContext, which returns ErrNoCertificate for them.
func AllowNoClientCert() ServerOption {
	return func(o *serverOptions) { o.allowNoClientCert = true }
}

// ServerTLSConfig returns a TLS 1.3 server configuration that presents
// certFile/keyFile and requires client certificates signed by the CA in
// caFile. The files are re-read when they change. ALPN "h2" is offered for
// gRPC. It fails at once if any file cannot be loaded.
func ServerTLSConfig(caFile, certFile, keyFile string, opts ...ServerOption) (*tls.Config, error) {
	var o serverOptions
	for _, f := range opts {
		f(&o)
	}
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("server tls: ca, certificate and key files are all required")
	}
	kp := &keyPairSource{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, fmt.Errorf("server tls: %w", err)
	}
	ca := &poolSource{file: caFile}
	if _, err := ca.get(); err != nil {
		return nil, fmt.Errorf("server tls: %w", err)
	}
	auth := tls.RequireAndVerifyClientCert
	if o.allowNoClientCert {
		auth = tls.VerifyClientCertIfGiven
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: auth,
		NextProtos: []string{"h2"},
	}
	cfg := base.Clone()
	// Every handshake gets the configuration of the files as they are
	// now; while they are unchanged that is one shared configuration (a
	// connection keeps the one it got for its whole life, and a copy per
	// connection cost a coordinator 10,000 agents' worth of copies).
	type current struct {
		cert *tls.Certificate
		pool *x509.CertPool
		cfg  *tls.Config
	}
	var last atomic.Pointer[current]
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, err := kp.get()
		if err != nil {
			return nil, err
		}
		pool, err := ca.get()
		if err != nil {
			return nil, err
		}
		if l := last.Load(); l != nil && l.cert == cert && l.pool == pool {
			return l.cfg, nil
		}
		c := base.Clone()
		c.Certificates = []tls.Certificate{*cert}
		c.ClientCAs = pool
		last.Store(&current{cert: cert, pool: pool, cfg: c})
		return c, nil
	}
	return cfg, nil
}

// ClientTLSConfig returns a TLS 1.3 client configuration that presents
// certFile/keyFile (both may be empty: no client certificate, as when
// redeeming a bootstrap token) and accepts only a server whose certificate
// chains to the CA in caFile, is valid for serverAuth and names a
// coordinator identity. The address dialled need not be in the server
// certificate: a private hive CA only signs hive identities, and agents
// find coordinators by gossip under whatever address they advertise. The
// files are re-read when they change.
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, errors.New("client tls: a ca file is required")
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("client tls: give both a certificate and a key, or neither")
	}
	ca := &poolSource{file: caFile}
	if _, err := ca.get(); err != nil {
		return nil, fmt.Errorf("client tls: %w", err)
	}
	var kp *keyPairSource
	if certFile != "" {
		kp = &keyPairSource{certFile: certFile, keyFile: keyFile}
		if _, err := kp.get(); err != nil {
			return nil, fmt.Errorf("client tls: %w", err)
		}
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
		// The chain is verified in VerifyConnection below, against the
		// current CA file and without a host name check.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if kp == nil {
				return &tls.Certificate{}, nil
			}
			return kp.get()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			pool, err := ca.get()
			if err != nil {
				return err
			}
			_, err = VerifyServer(cs.PeerCertificates, pool, time.Now())
			return err
		},
	}, nil
}

// VerifyServer verifies a coordinator's certificate chain (leaf first)
// against roots at time now and returns its identity. It fails unless the
// leaf is valid for serverAuth and names a coordinator.
func VerifyServer(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, fmt.Errorf("verify server: %w", ErrNoCertificate)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return Identity{}, fmt.Errorf("verify server: %w", err)
	}
	id, err := IdentityFromCert(chain[0])
	if err != nil {
		return Identity{}, fmt.Errorf("verify server: %w", err)
	}
	if id.Kind != KindCoordinator {
		return Identity{}, fmt.Errorf("verify server: %s is not a coordinator", id)
	}
	return id, nil
}

type stamp struct {
	mod  int64 // UnixNano
	size int64
}

// racyWindow: a file modified this close to (or after) the moment it was
// loaded may have changed again within the file system's timestamp
// granularity without changing its stamp, so it is re-read until it is
// older (git's "racy clean" rule).
const racyWindow = 2 * time.Second

func (s stamp) racy(loaded time.Time) bool {
	return time.Unix(0, s.mod).After(loaded.Add(-racyWindow))
}

func statFile(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{mod: fi.ModTime().UnixNano(), size: fi.Size()}, nil
}

// keyPairSource caches a certificate and key, reloading them when either
// file's modification time or size changes. When a reload fails (for
// example between writing the new certificate and the new key), the
// previous pair is kept.
type keyPairSource struct {
	certFile, keyFile string

	mu     sync.Mutex
	stamps [2]stamp
	loaded time.Time
	cert   *tls.Certificate
}

func (s *keyPairSource) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	c, errC := statFile(s.certFile)
	k, errK := statFile(s.keyFile)
	if s.cert != nil && errC == nil && errK == nil && s.stamps == [2]stamp{c, k} &&
		!c.racy(s.loaded) && !k.racy(s.loaded) {
		return s.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err == nil && cert.Leaf == nil {
		cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
	}
	if err != nil {
		if s.cert != nil {
			return s.cert, nil
		}
		return nil, fmt.Errorf("load key pair %s, %s: %w", s.certFile, s.keyFile, err)
	}
	s.cert, s.stamps, s.loaded = &cert, [2]stamp{c, k}, now
	return s.cert, nil
}

// poolSource caches a CA pool, reloading it when the file changes.
type poolSource struct {
	file string

	mu     sync.Mutex
	stamp  stamp
	loaded time.Time
	pool   *x509.CertPool
}

func (s *poolSource) get() (*x509.CertPool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st, errS := statFile(s.file)
	if s.pool != nil && errS == nil && st == s.stamp && !st.racy(s.loaded) {
		return s.pool, nil
	}
	pool, err := LoadCertPool(s.file)
	if err != nil {
		if s.pool != nil {
			return s.pool, nil
		}
		return nil, err
	}
	s.pool, s.stamp, s.loaded = pool, st, now
	return pool, nil
}
