package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// needsBootstrap reports whether the agent must first obtain its
// certificate with a bootstrap token.
func (a *Agent) needsBootstrap() bool {
	if a.cfg.Dev || a.cfg.BootstrapTokenFile == "" {
		return false
	}
	_, errC := os.Stat(a.cfg.TLSCert)
	_, errK := os.Stat(a.cfg.TLSKey)
	return errors.Is(errC, fs.ErrNotExist) || errors.Is(errK, fs.ErrNotExist)
}

// bootstrap redeems the bootstrap token for a certificate: a new key and a
// CSR for agent:<name>, sent without a client certificate (the only call a
// coordinator accepts so) to any coordinator; the certificate and key are
// written atomically (key 0600) to the TLS paths. It retries with backoff
// until it succeeds, ctx ends, or a coordinator refuses the token for good.
func (a *Agent) bootstrap(ctx context.Context) error {
	raw, err := os.ReadFile(a.cfg.BootstrapTokenFile)
	if err != nil {
		return fmt.Errorf("bootstrap token: %w", err)
	}
	token := strings.TrimSpace(string(raw))
	csr, key, err := pki.CreateAgentCSR(a.cfg.Name)
	if err != nil {
		return err
	}
	backoff := a.cfg.ReconnectMin
	for {
		addrs := a.candidates("")
		if len(addrs) > 0 {
			cc := a.clientConfig(addrs)
			cc.Cert, cc.Key = "", ""
			conn, err := client.Dial(ctx, cc)
			if err == nil {
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				resp, rerr := conn.RequestCertificate(rctx, &hivev1.RequestCertificateRequest{Token: token, Node: a.cfg.Name, Csr: csr})
				cancel()
				conn.Close()
				switch status.Code(rerr) {
				case codes.OK:
					if err := os.MkdirAll(filepath.Dir(a.cfg.TLSKey), 0o700); err != nil {
						return err
					}
					if err := writeAtomic(a.cfg.TLSKey, key, 0o600); err != nil {
						return err
					}
					if err := writeAtomic(a.cfg.TLSCert, resp.GetCertificate(), 0o644); err != nil {
						return err
					}
					a.log.Info("obtained the agent certificate with the bootstrap token", "cert", a.cfg.TLSCert, "coordinator", conn.Addr)
					return nil
				case codes.InvalidArgument, codes.PermissionDenied, codes.NotFound, codes.Unauthenticated:
					return fmt.Errorf("bootstrap token refused: %w", rerr)
				}
				err = rerr
			}
			a.log.Warn("certificate bootstrap failed, retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoffJitter(backoff)):
		}
		backoff = min(backoff*2, a.cfg.ReconnectMax)
	}
}
