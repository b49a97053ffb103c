package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/internal/atomicfile"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Certificate renewal. The agent renews its certificate at two thirds of
// its lifetime (pki.RenewAt; at once when a restarted agent is already
// past it) over mutual TLS with the certificate it has: a new key, a CSR,
// RenewCertificate on the coordinator it watches (or any it can reach).
// The new pair replaces the configured files crash-safely (see
// installPair), the client TLS configuration picks the files up at the
// next handshake, and the watch reconnects so that every connection
// presents the new certificate before the old one expires. A failed
// renewal is retried with backoff; a revoked node is refused for good and
// says so in the log.

// errRenewed ends a watch stream so that it reconnects with a renewed
// certificate.
var errRenewed = errors.New("reconnecting with the renewed certificate")

// renewNext is the suffix of the files a renewal writes before moving
// them into place.
const renewNext = ".next"

// renewLoop renews the certificate whenever it is due, until ctx ends.
// It starts once ready is closed (the certificate exists).
func (a *Agent) renewLoop(ctx context.Context, ready <-chan struct{}) {
	select {
	case <-ctx.Done():
		return
	case <-ready:
	}
	backoff := 2 * time.Second
	for {
		leaf, err := loadLeaf(a.cfg.TLSCert)
		if err != nil {
			a.log.Error("cannot read the agent certificate to renew it", "cert", a.cfg.TLSCert, "err", err)
			if !sleepCtx(ctx, time.Minute) {
				return
			}
			continue
		}
		at := pki.RenewAt(leaf)
		if wait := time.Until(at); wait > 0 {
			a.log.Info("agent certificate renewal scheduled", "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter.UTC(), "renew_at", at.UTC())
			if !sleepCtx(ctx, wait) {
				return
			}
			continue
		}
		nc, err := a.renew(ctx)
		if err == nil {
			backoff = 2 * time.Second
			a.log.Info("renewed the agent certificate", "old_serial", leaf.SerialNumber.Text(16), "serial", nc.SerialNumber.Text(16),
				"not_after", nc.NotAfter.UTC(), "renew_at", pki.RenewAt(nc).UTC())
			select {
			case a.reconnect <- struct{}{}:
			default:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		// Retry often enough to renew before expiry: at most a tenth of
		// the certificate's lifetime apart (and at most 5 minutes).
		wait := backoffJitter(min(backoff, max(time.Second, leaf.NotAfter.Sub(leaf.NotBefore)/10)))
		switch status.Code(err) {
		case codes.FailedPrecondition:
			// No coordinator holds the CA key: ask again hourly, not
			// every few minutes for months.
			wait = backoffJitter(min(time.Hour, max(time.Second, time.Until(leaf.NotAfter)/4)))
			a.log.Warn("no coordinator can renew the agent certificate (none runs with --tls-ca-key); renew it by hand before it expires", "not_after", leaf.NotAfter.UTC(), "retry_in", wait.Round(time.Second), "err", err)
		case codes.PermissionDenied, codes.Unauthenticated:
			a.log.Error("the coordinators refuse to renew this node's certificate (revoked, removed or expired?): enrol the node again with a new bootstrap token", "not_after", leaf.NotAfter.UTC(), "retry_in", wait.Round(time.Millisecond), "err", err)
		default:
			a.log.Warn("certificate renewal failed, retrying", "not_after", leaf.NotAfter.UTC(), "retry_in", wait.Round(time.Millisecond), "err", err)
		}
		if !sleepCtx(ctx, wait) {
			return
		}
		backoff = min(2*backoff, 5*time.Minute)
	}
}

// renew obtains a new certificate and installs it with its key.
func (a *Agent) renew(ctx context.Context) (*x509.Certificate, error) {
	csr, keyPEM, err := pki.CreateAgentCSR(a.cfg.Name)
	if err != nil {
		return nil, err
	}
	conn := (*client.Conn)(nil)
	if h := a.conn.Load(); h != nil {
		conn = h.conn // the watch's mutual-TLS connection
	} else {
		addrs := a.candidates("")
		if len(addrs) == 0 {
			return nil, client.ErrUnreachable
		}
		if conn, err = client.Dial(ctx, a.clientConfig(addrs)); err != nil {
			return nil, err
		}
		defer conn.Close()
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := conn.RenewCertificate(rctx, &hivev1.RenewCertificateRequest{Csr: csr})
	cancel()
	if err != nil {
		return nil, err
	}
	nc, err := a.checkRenewed(resp.GetCertificate(), keyPEM)
	if err != nil {
		return nil, err
	}
	if err := installPair(a.cfg.TLSCert, resp.GetCertificate(), a.cfg.TLSKey, keyPEM); err != nil {
		return nil, err
	}
	return nc, nil
}

// checkRenewed makes sure a renewed certificate is one to install: it
// pairs with the new key, names this node, and chains to the agent's CA
// for client authentication.
func (a *Agent) checkRenewed(certPEM, keyPEM []byte) (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("renewed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("renewed certificate: %w", err)
	}
	id, err := pki.IdentityFromCert(leaf)
	if err != nil || id != (pki.Identity{Kind: pki.KindAgent, Name: a.cfg.Name}) {
		return nil, fmt.Errorf("renewed certificate names %v (%v), not agent:%s", id, err, a.cfg.Name)
	}
	pool, err := pki.LoadCertPool(a.cfg.TLSCA)
	if err != nil {
		return nil, err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("renewed certificate does not verify against %s: %w", a.cfg.TLSCA, err)
	}
	return leaf, nil
}

// installPair replaces the certificate and key files with a new pair so
// that a crash at any point leaves a usable pair: both new files are
// first written atomically beside the old ones (".next"), then the key
// and the certificate are renamed into place. A crash between the two
// renames leaves the new key with the old certificate and the new
// certificate in cert.next: recoverPair, run at start, finishes the
// move. The TLS configuration ignores a mismatched pair meanwhile and
// keeps the one it loaded.
func installPair(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := writeAtomic(keyPath+renewNext, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeAtomic(certPath+renewNext, certPEM, 0o644); err != nil {
		return err
	}
	if err := os.Rename(keyPath+renewNext, keyPath); err != nil {
		return fmt.Errorf("install renewed key: %w", err)
	}
	if err := os.Rename(certPath+renewNext, certPath); err != nil {
		return fmt.Errorf("install renewed certificate: %w", err)
	}
	return syncDir(certPath)
}

// recoverPair finishes or discards a renewal interrupted by a crash (see
// installPair). It returns what it did, for the log ("" when nothing).
func recoverPair(certPath, keyPath string) (string, error) {
	nextCert, errC := os.ReadFile(certPath + renewNext)
	if errors.Is(errC, fs.ErrNotExist) {
		os.Remove(keyPath + renewNext) // written before a crash; never used
		return "", nil
	}
	if errC != nil {
		return "", errC
	}
	pairs := func(keyFile string) bool {
		k, err := os.ReadFile(keyFile)
		if err != nil {
			return false
		}
		_, err = tls.X509KeyPair(nextCert, k)
		return err == nil
	}
	switch {
	case pairs(keyPath): // crashed between the two renames
		if err := os.Rename(certPath+renewNext, certPath); err != nil {
			return "", err
		}
		return "finished installing a renewed certificate", syncDir(certPath)
	case pairs(keyPath + renewNext): // crashed before the renames
		if err := os.Rename(keyPath+renewNext, keyPath); err != nil {
			return "", err
		}
		if err := os.Rename(certPath+renewNext, certPath); err != nil {
			return "", err
		}
		return "installed a renewed certificate written before a crash", syncDir(certPath)
	default:
		os.Remove(certPath + renewNext)
		os.Remove(keyPath + renewNext)
		return "discarded an unusable half-written renewal", nil
	}
}

// syncDir makes the renames of path's directory durable.
func syncDir(path string) error { return atomicfile.SyncDir(filepath.Dir(path)) }

func loadLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return certs[0], nil
}

// sleepCtx waits d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
