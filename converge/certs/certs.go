// Package certs holds two converge providers: `certificate` (X.509
// certificates for the node's services, issued by the site CA through the
// coordinators) and `ca_trust` (the site CA in the operating system's trust
// store).
//
// certificate: Plan reads the certificate and key files and decides
// whether a new certificate is needed — none yet, unreadable, a key that
// does not pair, not signed by the site CA, names that differ from the
// wanted ones (the node's name, its trusted addresses as NodeFacts carries
// them, the resource's dns_names with "{node}" replaced), or at two thirds
// of its lifetime (renewal). Apply makes a new ECDSA P-256 key on the node,
// sends only a CSR to the coordinators (Issuer), checks the answer pairs
// with the key and verifies against the site CA, and writes key then
// certificate atomically (owner, group, key_mode; the certificate 0644),
// plus the CA to ca_path. A change notifies like any resource, so a
// renewal restarts the services that listed it in notify. Owner and mode
// drift is repaired without a new certificate. The provider remembers the
// earliest renewal time it saw (NextRenewal), so the agent runs when a
// certificate is due rather than at its next drift check.
//
// ca_trust: the site CA (the agent's --tls-ca file) as an anchor
// (/usr/local/share/ca-certificates/hive-site.crt and update-ca-certificates
// on Debian-family roots; /etc/pki/ca-trust/source/anchors/hive-site.pem and
// update-ca-trust extract on RPM-family roots), run with chroot inside a
// root other than "/". Plan checks the anchor's content and that the
// extracted bundle holds the CA; Prune removes the anchor hive wrote when
// the resource leaves the state.
//
// Plan never changes the host. Apply blocks on the coordinators (bounded
// by the caller's context and IssueTimeout) and on the trust tools.
// Providers are safe for the engine's use (one run at a time); NextRenewal
// may be called from any goroutine.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/internal/atomicfile"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Kinds handled here.
const (
	KindCertificate = "certificate"
	KindCaTrust     = "ca_trust"
)

// NodePlaceholder in dns_names stands for the node's name (as in package
// site and the coordinator).
const NodePlaceholder = "{node}"

// IssueTimeout bounds one IssueServiceCertificate call.
const IssueTimeout = 30 * time.Second

// Issuer obtains a service certificate from the coordinators: the
// certificate resource name of this node's state, for the key of csrPEM.
// It may block on the network; it honours ctx.
type Issuer interface {
	IssueServiceCertificate(ctx context.Context, name string, csrPEM []byte) (certPEM, caPEM []byte, err error)
}

// ErrNoIssuer: no way to reach the coordinators was configured.
var ErrNoIssuer = errors.New("no coordinator connection to issue certificates")

// Config configures the certificate provider.
type Config struct {
	// Issuer asks the coordinators for certificates (nil: every issue
	// fails with ErrNoIssuer).
	Issuer Issuer
	// CAFile is the site CA the agent trusts (its --tls-ca); certificates
	// must verify against it and ca_path receives it. Empty: no check.
	CAFile string
	// Now overrides the clock (tests).
	Now func() time.Time
	// Logger (nil: discard).
	Logger *slog.Logger
}

// Provider is the certificate provider.
type Provider struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	next map[string]time.Time // renewal time by key, as last planned
}

var _ converge.Validator = (*Provider)(nil)

// New returns a certificate provider.
func New(cfg Config) *Provider {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{cfg: cfg, log: log.With("component", "certificate"), next: map[string]time.Time{}}
}

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return KindCertificate }

// Validate implements converge.Validator.
func (p *Provider) Validate(r *hivev1.Resource) error {
	c := r.GetCertificate()
	if c == nil {
		return fmt.Errorf("%w: %s is not a certificate", converge.ErrInvalid, r.GetKey())
	}
	for _, f := range []string{c.GetCertPath(), c.GetKeyPath()} {
		if !strings.HasPrefix(f, "/") {
			return fmt.Errorf("%w: %s: path %q is not absolute", converge.ErrInvalid, r.GetKey(), f)
		}
	}
	return nil
}

// NextRenewal returns the earliest time a certificate planned so far is
// due for renewal (zero when none). Safe for concurrent use.
func (p *Provider) NextRenewal() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var t time.Time
	for _, n := range p.next {
		if t.IsZero() || n.Before(t) {
			t = n
		}
	}
	return t
}

func (p *Provider) setNext(key string, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.IsZero() {
		delete(p.next, key)
	} else {
		p.next[key] = t
	}
}

// plan is what Apply needs for one certificate.
type plan struct {
	cert, key, ca string // host paths
	uid, gid      int
	keyMode       fs.FileMode
	issue         bool   // a new certificate (and key) is needed
	caPEM         []byte // CA to write to ca (nil: leave it)
	fixAttrs      bool
}

// wantNames are the names a certificate of c must carry on this node.
func wantNames(c *hivev1.Certificate, facts *hivev1.NodeFacts) (dns []string, ips []string) {
	node := facts.GetName()
	if pki.ValidateServiceDNSName(node) == nil {
		dns = append(dns, node)
	}
	for _, d := range c.GetDnsNames() {
		dns = append(dns, strings.ReplaceAll(d, NodePlaceholder, node))
	}
	for _, a := range facts.GetAddresses() {
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip.String())
		}
	}
	return sortedSet(dns), sortedSet(ips)
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return slices.Compact(out)
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	var roots *x509.CertPool
	var caPEM []byte
	var caErr error
	if p.cfg.CAFile != "" {
		caPEM, caErr = os.ReadFile(p.cfg.CAFile)
		if caErr == nil {
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(caPEM) {
				caErr = fmt.Errorf("%s holds no PEM certificate", p.cfg.CAFile)
			}
		}
	}
	ids := &converge.IDs{Root: env.Root}
	out := make([]*converge.Change, 0, len(b.Items))
	for _, it := range b.Items {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ch := &converge.Change{Key: it.Key, Resource: it.Resource}
		out = append(out, ch)
		if caErr != nil {
			ch.Err = fmt.Errorf("site CA: %w", caErr)
			continue
		}
		pl, why, next, err := p.observe(env, it.Resource.GetCertificate(), ids, roots, caPEM)
		if err != nil {
			ch.Err = err
			continue
		}
		p.setNext(it.Key, next)
		if len(why) == 0 {
			ch.Summary = "certificate valid until renewal at " + next.UTC().Format(time.RFC3339)
			continue
		}
		ch.Needed = true
		ch.Summary = strings.Join(why, "; ")
		ch.Diff = strings.Join(why, "\n") + "\n"
		ch.Data = pl
	}
	return out, nil
}

// observe reads one certificate's files. why lists what must change
// (empty: nothing); next is the renewal time of the certificate found.
func (p *Provider) observe(env *converge.Env, c *hivev1.Certificate, ids *converge.IDs, roots *x509.CertPool, caPEM []byte) (*plan, []string, time.Time, error) {
	pl := &plan{keyMode: fs.FileMode(c.GetKeyMode()).Perm()}
	if pl.keyMode == 0 {
		pl.keyMode = 0o600
	}
	var err error
	if pl.cert, err = env.Path(c.GetCertPath()); err != nil {
		return nil, nil, time.Time{}, err
	}
	if pl.key, err = env.Path(c.GetKeyPath()); err != nil {
		return nil, nil, time.Time{}, err
	}
	if c.GetCaPath() != "" {
		if pl.ca, err = env.Path(c.GetCaPath()); err != nil {
			return nil, nil, time.Time{}, err
		}
	}
	if pl.uid, err = ids.Lookup("passwd", orRoot(c.GetOwner())); err != nil {
		return nil, nil, time.Time{}, err
	}
	if pl.gid, err = ids.Lookup("group", orRoot(c.GetGroup())); err != nil {
		return nil, nil, time.Time{}, err
	}
	var why []string
	var next time.Time
	certPEM, errC := os.ReadFile(pl.cert)
	keyPEM, errK := os.ReadFile(pl.key)
	switch {
	case errors.Is(errC, fs.ErrNotExist):
		why = append(why, "issue a certificate (none at "+c.GetCertPath()+")")
	case errC != nil:
		return nil, nil, time.Time{}, errC
	case errors.Is(errK, fs.ErrNotExist):
		why = append(why, "issue a certificate (no key at "+c.GetKeyPath()+")")
	case errK != nil:
		return nil, nil, time.Time{}, errK
	default:
		leaf, reason := p.check(certPEM, keyPEM, roots, c, env.Facts)
		if leaf != nil {
			next = pki.RenewAt(leaf)
		}
		if reason != "" {
			why = append(why, reason)
		}
	}
	if len(why) > 0 {
		pl.issue = true
		if pl.ca != "" && caPEM != nil {
			pl.caPEM = caPEM
		}
	} else {
		for _, f := range []struct {
			path string
			mode fs.FileMode
		}{{pl.cert, 0o644}, {pl.key, pl.keyMode}} {
			if d := attrDiff(f.path, f.mode, pl.uid, pl.gid); d != "" {
				why = append(why, d)
				pl.fixAttrs = true
			}
		}
		if pl.ca != "" && caPEM != nil {
			if cur, err := os.ReadFile(pl.ca); err != nil || !bytes.Equal(cur, caPEM) {
				why = append(why, "write the site CA to "+c.GetCaPath())
				pl.caPEM = caPEM
			}
		}
	}
	return pl, why, next, nil
}

// check says why an existing pair must be replaced ("" when it is good).
func (p *Provider) check(certPEM, keyPEM []byte, roots *x509.CertPool, c *hivev1.Certificate, facts *hivev1.NodeFacts) (*x509.Certificate, string) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, "issue a certificate (the files do not hold a matching certificate and key: " + err.Error() + ")"
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, "issue a certificate (unreadable: " + err.Error() + ")"
	}
	if roots != nil {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: leaf.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return leaf, "issue a certificate (not signed by the site CA)"
		}
	}
	dns, ips := wantNames(c, facts)
	var haveIPs []string
	for _, ip := range leaf.IPAddresses {
		haveIPs = append(haveIPs, ip.String())
	}
	if have := sortedSet(leaf.DNSNames); !slices.Equal(have, dns) {
		return leaf, fmt.Sprintf("issue a certificate (DNS names %v → %v)", have, dns)
	}
	if have := sortedSet(haveIPs); !slices.Equal(have, ips) {
		return leaf, fmt.Sprintf("issue a certificate (addresses %v → %v)", have, ips)
	}
	now := p.cfg.Now()
	if at := pki.RenewAt(leaf); !now.Before(at) {
		return leaf, "renew the certificate (due at " + at.UTC().Format(time.RFC3339) + ", expires " + leaf.NotAfter.UTC().Format(time.RFC3339) + ")"
	}
	return leaf, ""
}

func orRoot(s string) string {
	if s == "" {
		return "root"
	}
	return s
}

// attrDiff describes a file's mode or owner that differ ("" when equal).
func attrDiff(path string, mode fs.FileMode, uid, gid int) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	var d []string
	if fi.Mode().Perm() != mode {
		d = append(d, fmt.Sprintf("mode %04o → %04o", fi.Mode().Perm(), mode))
	}
	if u, g, ok := owner(fi); ok && (u != uid || g != gid) {
		d = append(d, fmt.Sprintf("owner %d:%d → %d:%d", u, g, uid, gid))
	}
	if len(d) == 0 {
		return ""
	}
	return filepath.Base(path) + ": " + strings.Join(d, ", ")
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	for _, ch := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		pl, ok := ch.Data.(*plan)
		if !ok {
			ch.Err = errors.New("no plan")
			continue
		}
		if err := p.apply(ctx, env, ch.Resource.GetCertificate(), pl); err != nil {
			ch.Err = err
			continue
		}
		if leaf, err := loadLeaf(pl.cert); err == nil {
			p.setNext(ch.Key, pki.RenewAt(leaf))
		}
	}
	return nil
}

func (p *Provider) apply(ctx context.Context, env *converge.Env, c *hivev1.Certificate, pl *plan) error {
	if pl.issue {
		if p.cfg.Issuer == nil {
			return ErrNoIssuer
		}
		csr, keyPEM, err := pki.CreateServiceCSR(env.Facts.GetName())
		if err != nil {
			return err
		}
		ictx, cancel := context.WithTimeout(ctx, IssueTimeout)
		certPEM, caPEM, err := p.cfg.Issuer.IssueServiceCertificate(ictx, c.GetName(), csr)
		cancel()
		if err != nil {
			return fmt.Errorf("issue certificate %s: %w", c.GetName(), err)
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return fmt.Errorf("issued certificate %s does not pair with its key: %w", c.GetName(), err)
		}
		if pl.caPEM == nil && pl.ca != "" {
			pl.caPEM = caPEM
		}
		// The key first: a service that reads the pair between the two
		// renames sees the new key with the old certificate and fails its
		// handshake rather than serving with a key it should not have.
		if err := writeFile(pl.key, keyPEM, pl.keyMode, pl.uid, pl.gid); err != nil {
			return err
		}
		if err := writeFile(pl.cert, certPEM, 0o644, pl.uid, pl.gid); err != nil {
			return err
		}
		if leaf, err := loadLeaf(pl.cert); err == nil {
			p.log.Info("installed a service certificate", "certificate", c.GetName(), "serial", leaf.SerialNumber.Text(16),
				"dns", leaf.DNSNames, "ips", leaf.IPAddresses, "not_after", leaf.NotAfter.UTC(), "renew_at", pki.RenewAt(leaf).UTC())
		}
	}
	if pl.fixAttrs {
		for _, f := range []struct {
			path string
			mode fs.FileMode
		}{{pl.cert, 0o644}, {pl.key, pl.keyMode}} {
			if err := os.Chown(f.path, pl.uid, pl.gid); err != nil {
				return err
			}
			if err := os.Chmod(f.path, f.mode); err != nil {
				return err
			}
		}
	}
	if pl.caPEM != nil && pl.ca != "" {
		if err := writeFile(pl.ca, pl.caPEM, 0o644, pl.uid, pl.gid); err != nil {
			return err
		}
	}
	return nil
}

// writeFile replaces path atomically, creating missing directories (0755).
func writeFile(path string, data []byte, mode fs.FileMode, uid, gid int) error {
	return atomicfile.Write(path, data, atomicfile.Options{Perm: mode, MkdirPerm: 0o755, Prepare: func(f *os.File) error {
		return f.Chown(uid, gid)
	}})
}

func loadLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cs, err := pki.ParseCerts(data)
	if err != nil {
		return nil, err
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return cs[0], nil
}
