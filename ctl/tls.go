package ctl

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/gossip"
	"github.com/hivefleet/hive/internal/atomicfile"
	"github.com/hivefleet/hive/pki"
)

func newTLSCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make the site's certificate authority and certificates",
		Long: `hive uses mutual TLS between every party, with a private CA of the site.
Each certificate names one identity, hive://KIND/NAME (CN "KIND:NAME"):

  coordinator  a hive-coordinator; serves gRPC and talks Raft to its peers
  agent        a hive-agent on node NAME; may watch and report only as NAME
  admin        an operator; may push, roll back and set secrets

Files are written to the current directory or --dir: ca.pem, ca-key.pem,
NAME.pem and NAME-key.pem (keys with mode 0600). Keep ca-key.pem offline;
only ca.pem is copied to the servers. See docs/tls.md.

gossip-key create writes gossip.key, the shared key that encrypts gossip
between all coordinators and agents (required outside --dev).`,
		Example: `  hivectl tls ca create
  hivectl tls cert create --coordinator c1 --ip 10.0.0.11 --dns c1.example.net
  hivectl tls cert create --agent web-01
  hivectl tls cert create --admin alice
  hivectl tls gossip-key create`,
	}
	ca := &cobra.Command{Use: "ca", Short: "Manage the certificate authority"}
	ca.AddCommand(newTLSCACreateCommand())
	cert := &cobra.Command{Use: "cert", Short: "Issue certificates"}
	cert.AddCommand(newTLSCertCreateCommand(), newTLSCertShowCommand(), newTLSCertRequestCommand(cf))
	gk := &cobra.Command{Use: "gossip-key", Short: "Make the gossip encryption key"}
	gk.AddCommand(newTLSGossipKeyCreateCommand())
	cmd.AddCommand(ca, cert, newTLSTokenCommand(cf), gk)
	return cmd
}

// GossipKeyFile is the name of the file "tls gossip-key create" writes.
const GossipKeyFile = "gossip.key"

func newTLSGossipKeyCreateCommand() *cobra.Command {
	var (
		dir   string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create the site's gossip encryption key: gossip.key",
		Long: `create makes a new random 32-byte (AES-256) gossip key and writes it, base64
encoded, to gossip.key (mode 0600) in the current directory or --dir.

Every coordinator and agent of a site must have the same key: copy the file
to each server (the packaged configs expect /etc/hive/gossip.key) and pass
it with --gossip-key-file (gossip-key-file: in the config file). Outside
--dev, hive-coordinator and hive-agent refuse to start without one.
An existing gossip.key is replaced only with --force: members holding the
old key can no longer gossip with those holding the new one.`,
		Example: `  hivectl tls gossip-key create
  hivectl tls gossip-key create --dir /etc/hive
  hive-agent --gossip-key-file /etc/hive/gossip.key --join 10.0.0.11:7402`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ensureDir(dir); err != nil {
				return err
			}
			path := filepath.Join(dir, GossipKeyFile)
			if !force {
				if _, err := os.Lstat(path); err == nil {
					return fmt.Errorf("%s already exists: members with the old key could no longer gossip with those given a new one; use --force to replace it", path)
				}
			}
			key, err := gossip.NewKey()
			if err != nil {
				return err
			}
			if err := writeSecretFile(path, []byte(key+"\n"), force); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (gossip key: copy it to every coordinator and agent, pass --gossip-key-file %s)\n", path, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write gossip.key to")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing gossip.key")
	return cmd
}

// writeSecretFile writes data to path with mode 0600: through a temporary
// file renamed over path, so a reader never sees a partial key; without
// replace it fails if path exists.
func writeSecretFile(path string, data []byte, replace bool) error {
	// NoClobber links instead of renaming: it fails if path appeared
	// meanwhile, never overwrites.
	err := atomicfile.Write(path, data, atomicfile.Options{Perm: 0o600, NoClobber: !replace})
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists: use --force to replace it", path)
	}
	return err
}

func newTLSCACreateCommand() *cobra.Command {
	var (
		dir   string
		days  int
		cn    string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create the site's CA: ca.pem and ca-key.pem",
		Long: `create makes a new ECDSA P-256 certificate authority and writes ca.pem and
ca-key.pem (mode 0600). It refuses to replace an existing CA unless --force:
a new CA invalidates every certificate the old one signed.`,
		Example: `  hivectl tls ca create
  hivectl tls ca create --dir /secure/hive-ca --days 3650`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if days <= 0 {
				return fmt.Errorf("--days %d: must be positive", days)
			}
			if err := ensureDir(dir); err != nil {
				return err
			}
			if !force {
				// Check before generating anything.
				for _, f := range []string{pki.CAFile, pki.CAKeyFile} {
					if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
						return fmt.Errorf("%s already exists in %s: a new CA invalidates every certificate the old one signed; use --force to replace it", f, dir)
					}
				}
			}
			ca, err := pki.NewCA(pki.CAOptions{CommonName: cn, Validity: time.Duration(days) * 24 * time.Hour})
			if err != nil {
				return err
			}
			certPath, keyPath, err := pki.WriteCA(dir, ca, force)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s (CA certificate, %q, valid until %s)\n", certPath, ca.Cert.Subject.CommonName, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
			fmt.Fprintf(out, "wrote %s (CA private key: keep it offline, it signs every identity)\n", keyPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the files to")
	cmd.Flags().IntVar(&days, "days", int(pki.DefaultCAValidity/(24*time.Hour)), "validity in days")
	cmd.Flags().StringVar(&cn, "common-name", "hive CA", "the CA's common name")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing CA")
	return cmd
}

func newTLSCertCreateCommand() *cobra.Command {
	var (
		coordinator, agent, admin string
		ips                       []net.IP
		dns, labelArgs            []string
		dir, caDir                string
		days                      int
		force                     bool
	)
	cmd := &cobra.Command{
		Use:   "create --coordinator NAME | --agent NAME | --admin NAME",
		Short: "Issue a certificate: NAME.pem and NAME-key.pem",
		Long: `create issues a certificate for one identity, signed by the CA in --ca-dir
(default: --dir), and writes NAME.pem and NAME-key.pem (mode 0600) to --dir.

A coordinator certificate is valid for serving and for dialling its peers,
and carries the addresses given with --ip and --dns plus 127.0.0.1, ::1 and
localhost. Agent and admin certificates are client certificates only.

An agent certificate binds the node's trusted labels (--label key=value,
repeatable): the labels site selectors match, which the agent cannot change
(what it reports with its own --label is a fact, never matched). --ip on an
agent certificate lists addresses the node may report besides the one it
connects to the coordinators from. Operators can override certificate
labels later with 'hivectl node label'.
Existing files are replaced only with --force (rotation: issue with --force,
then the coordinators and agents pick the new files up at the next
connection, without a restart).`,
		Example: `  hivectl tls cert create --coordinator c1 --ip 10.0.0.11 --dns c1.example.net
  hivectl tls cert create --agent web-01 --label tier=web --dir /tmp/web-01
  hivectl tls cert create --agent db-01 --label tier=db --ip 10.0.1.21
  hivectl tls cert create --admin alice --days 90
  hivectl tls cert create --coordinator c1 --ip 10.0.0.11 --force   # rotate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var id pki.Identity
			n := 0
			for _, c := range []struct {
				kind pki.Kind
				name string
			}{{pki.KindCoordinator, coordinator}, {pki.KindAgent, agent}, {pki.KindAdmin, admin}} {
				if c.name != "" {
					id = pki.Identity{Kind: c.kind, Name: c.name}
					n++
				}
			}
			if n != 1 {
				return errors.New("give exactly one of --coordinator NAME, --agent NAME or --admin NAME")
			}
			if err := id.Validate(); err != nil {
				return err
			}
			if id.Kind == pki.KindAdmin && len(ips) > 0 || id.Kind != pki.KindCoordinator && len(dns) > 0 {
				return fmt.Errorf("--dns applies to coordinator certificates only, --ip to coordinator and agent ones (%s certificates are client certificates)", id.Kind)
			}
			labels, err := pki.ParseLabelArgs(labelArgs)
			if err != nil {
				return fmt.Errorf("--label: %w", err)
			}
			if len(labels) > 0 && id.Kind != pki.KindAgent {
				return fmt.Errorf("--label applies to agent certificates only, not %s", id.Kind)
			}
			if days <= 0 {
				return fmt.Errorf("--days %d: must be positive", days)
			}
			if caDir == "" {
				caDir = dir
			}
			ca, err := pki.LoadCAFromDir(caDir)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no CA in %s (%w): create one with 'hivectl tls ca create', or point --ca-dir at it", caDir, err)
				}
				return fmt.Errorf("load CA: %w", err)
			}
			if err := ensureDir(dir); err != nil {
				return err
			}
			if !force {
				c, k := pki.CertFiles(id.Name)
				for _, f := range []string{c, k} {
					if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
						return fmt.Errorf("%s already exists in %s: use --force to replace it", f, dir)
					}
				}
			}
			iss, err := ca.Issue(pki.CertRequest{Identity: id, IPs: ips, DNS: dns, Labels: labels, Validity: time.Duration(days) * 24 * time.Hour})
			if err != nil {
				return err
			}
			certPath, keyPath, err := pki.WriteCert(dir, id.Name, iss, force)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s (%s, %s, valid until %s)\n", certPath, id, id.URI(), iss.Cert.NotAfter.UTC().Format(time.DateOnly))
			if id.Kind == pki.KindCoordinator {
				var names []string
				for _, ip := range iss.Cert.IPAddresses {
					names = append(names, ip.String())
				}
				names = append(names, iss.Cert.DNSNames...)
				fmt.Fprintf(out, "  valid for addresses: %s\n", listString(names))
			}
			if id.Kind == pki.KindAgent {
				fmt.Fprintf(out, "  trusted labels: %s\n", pki.FormatLabels(labels))
				if len(iss.Cert.IPAddresses) > 0 {
					fmt.Fprintf(out, "  may also report addresses: %v\n", iss.Cert.IPAddresses)
				}
			}
			fmt.Fprintf(out, "wrote %s (private key)\n", keyPath)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&coordinator, "coordinator", "", "issue a coordinator certificate for NAME")
	f.StringVar(&agent, "agent", "", "issue an agent certificate for node NAME")
	f.StringVar(&admin, "admin", "", "issue an admin (operator) certificate for NAME")
	f.IPSliceVar(&ips, "ip", nil, "coordinator: an IP address the certificate is valid for; agent: an address the node may report besides the one it connects from (repeatable)")
	f.StringArrayVar(&labelArgs, "label", nil, "agent: a trusted label key=value bound in the certificate, matched by site selectors (repeatable)")
	f.StringSliceVar(&dns, "dns", nil, "coordinator: a DNS name the certificate is valid for (repeatable)")
	f.StringVar(&dir, "dir", ".", "directory to write the files to (and to read the CA from)")
	f.StringVar(&caDir, "ca-dir", "", "directory holding ca.pem and ca-key.pem (default: --dir)")
	f.IntVar(&days, "days", int(pki.DefaultCertValidity/(24*time.Hour)), "validity in days (never beyond the CA's)")
	f.BoolVar(&force, "force", false, "replace existing NAME.pem and NAME-key.pem")
	return cmd
}

// ensureDir creates dir (mode 0700) if it does not exist.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	return nil
}

func newTLSCertShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE...",
		Short: "Show the identity, addresses and expiry of certificates",
		Long: `show prints, for each PEM certificate file, the hive identity it names, the
addresses a coordinator certificate is valid for, its issuer and how long it
remains valid. Use it to check what a file is before deploying it, and to
find certificates that are due for rotation.`,
		Example: `  hivectl tls cert show c1.pem
  hivectl tls cert show /etc/hive/tls/*.pem`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			now := time.Now()
			var firstErr error
			for i, file := range args {
				if i > 0 {
					fmt.Fprintln(out)
				}
				data, err := os.ReadFile(file)
				if err == nil {
					var certs []*x509.Certificate
					if certs, err = pki.ParseCerts(data); err == nil {
						writeCertInfo(out, file, certs[0], now)
						continue
					}
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", file, err)
				if firstErr == nil {
					firstErr = &exitError{code: 1}
				}
			}
			return firstErr
		},
	}
}

func writeCertInfo(w io.Writer, file string, c *x509.Certificate, now time.Time) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("file", file)
	switch id, err := pki.IdentityFromCert(c); {
	case c.IsCA:
		row("identity", "certificate authority ("+c.Subject.CommonName+")")
	case err != nil:
		row("identity", "none: "+err.Error())
	default:
		row("identity", id.String()+" ("+id.URI().String()+")")
	}
	var names []string
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	names = append(names, c.DNSNames...)
	if len(names) > 0 {
		row("addresses", strings.Join(names, ","))
	}
	if labels, err := pki.LabelsFromCert(c); err != nil {
		row("labels", "INVALID: "+err.Error())
	} else if len(labels) > 0 {
		row("labels", pki.FormatLabels(labels)+" (trusted)")
	}
	row("issuer", c.Issuer.CommonName)
	row("serial", c.SerialNumber.Text(16))
	left := c.NotAfter.Sub(now)
	validity := fmt.Sprintf("%s to %s", c.NotBefore.UTC().Format(time.DateOnly), c.NotAfter.UTC().Format(time.DateOnly))
	switch {
	case left <= 0:
		validity += " (EXPIRED)"
	case now.Before(c.NotBefore):
		validity += " (not yet valid)"
	default:
		validity += fmt.Sprintf(" (%d days left)", int(left.Hours()/24))
	}
	row("valid", validity)
	tw.Flush()
}
