package ctl

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/coordinator/ui/uitoken"
)

func newDashboardCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "The coordinators' read-only web dashboard (/ui/ on their --http-addr)",
	}
	cmd.AddCommand(newDashboardTokenCommand(cf))
	return cmd
}

func newDashboardTokenCommand(cf *connFlags) *cobra.Command {
	var (
		ttl    time.Duration
		output string
	)
	cmd := &cobra.Command{
		Use:   "token [--ttl D]",
		Short: "Make a read-only dashboard token signed with your admin certificate's key",
		Long: `token signs a dashboard token with the private key of your admin client
certificate (--cert, --key). Paste it on the dashboard's sign-in page
(http://COORDINATOR:7403/ui/login; the browser keeps it in a cookie until
it expires) or send it as "Authorization: Bearer TOKEN".

The token only reads the dashboard. It is made here, offline: nothing is
stored, every coordinator of the site accepts it, and it cannot be
revoked — keep its lifetime short (default 12h, at most 168h; never past
the certificate's expiry). The dashboard is plain HTTP: send tokens only
over a network you trust (see docs/security.md).`,
		Example: `  hivectl dashboard token --ttl 1h
  TOKEN=$(hivectl dashboard token -o json | jq -r .token)
  curl -H "Authorization: Bearer $TOKEN" http://c1:7403/ui/`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if ttl < time.Second || ttl > uitoken.MaxTTL {
				return fmt.Errorf("--ttl %v: must be between 1s and %v", ttl, uitoken.MaxTTL)
			}
			cfg, err := cf.config()
			if err != nil && !cfg.Insecure {
				return err
			}
			if cfg.Cert == "" || cfg.Key == "" {
				return errors.New("a dashboard token is signed with an admin certificate's key: give --cert and --key (a --dev coordinator's dashboard is open on loopback without one)")
			}
			pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
			if err != nil {
				return fmt.Errorf("load certificate: %w", err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				return fmt.Errorf("parse certificate %s: %w", cfg.Cert, err)
			}
			key, ok := pair.PrivateKey.(crypto.Signer)
			if !ok {
				return fmt.Errorf("key %s cannot sign", cfg.Key)
			}
			tok, exp, err := uitoken.Mint(leaf, key, ttl, time.Now())
			if err != nil {
				return err
			}
			if output == outJSON {
				return writeJSON(cmd.OutOrStdout(), struct {
					Token   string    `json:"token"`
					Expires time.Time `json:"expires"`
				}{tok, exp.UTC()})
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			fmt.Fprintf(cmd.ErrOrStderr(), "read-only dashboard token of %s, expires %s\n", esc(leaf.Subject.CommonName), exp.UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", uitoken.DefaultTTL, "how long the token stays valid (at most 168h)")
	addOutputFlag(cmd, &output)
	return cmd
}
