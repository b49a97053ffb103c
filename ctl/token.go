package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newTLSTokenCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Bootstrap tokens: let a new node obtain its agent certificate once",
	}
	cmd.AddCommand(newTLSTokenCreateCommand(cf))
	return cmd
}

func newTLSTokenCreateCommand(cf *connFlags) *cobra.Command {
	var (
		node, pattern string
		labelArgs     []string
		replace       bool
		ttl           time.Duration
		output        string
	)
	cmd := &cobra.Command{
		Use:   "create --node NAME | --node-pattern PATTERN [--label k=v]... [--replace] [--ttl D]",
		Short: "Create a single-use, expiring bootstrap token bound to a node name",
		Long: `create asks the coordinators for a bootstrap token. A new node redeems it
once, with a certificate signing request made on the node, for an agent
certificate (hive-agent does this at first start; 'hivectl tls cert request'
does it by hand).

A token is bound to one node name (--node) or to a pattern of names
(--node-pattern 'web-*', path.Match syntax, with a fixed part); one of them
is required. The certificate minted from it carries the --label labels:
the node's trusted labels, which site selectors match.

A token cannot mint a certificate for a node that is already registered, a
coordinator's name or your own admin name, unless created with --replace
(a reinstalled node keeping its name). Tokens live at most 168h (7 days);
the default is 1h. The token is printed once and stored only as a hash.
Needs an admin certificate, and a coordinator started with --tls-ca-key to
redeem it.`,
		Example: `  hivectl tls token create --node web-07 --label tier=web --ttl 30m
  hivectl tls token create --node-pattern 'web-*' --label tier=web
  hivectl tls token create --node web-07 --label tier=web --replace   # reinstall
  TOKEN=$(hivectl tls token create --node web-07 --label tier=web -o json | jq -r .token)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if ttl < time.Second || ttl > 7*24*time.Hour {
				return fmt.Errorf("--ttl %v: must be between 1s and 168h (7 days)", ttl)
			}
			switch {
			case node == "" && pattern == "":
				return errors.New("give --node NAME or --node-pattern PATTERN: a token is bound to the node name it may mint")
			case node != "" && pattern != "":
				return errors.New("give --node or --node-pattern, not both")
			case node != "":
				if err := pki.ValidateName(node); err != nil {
					return fmt.Errorf("--node: %w", err)
				}
			}
			labels, err := pki.ParseLabelArgs(labelArgs)
			if err != nil {
				return fmt.Errorf("--label: %w", err)
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.CreateBootstrapToken(cctx, &hivev1.CreateBootstrapTokenRequest{
					Node: node, NodePattern: pattern, Labels: labels, Replace: replace, TtlSeconds: uint32(ttl / time.Second),
				})
				if err != nil {
					return rpcError("create bootstrap token", err, true)
				}
				exp := timeOrNil(resp.GetExpires())
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), struct {
						Token       string            `json:"token"`
						Node        string            `json:"node,omitempty"`
						NodePattern string            `json:"node_pattern,omitempty"`
						Labels      map[string]string `json:"labels,omitempty"`
						Replace     bool              `json:"replace,omitempty"`
						Expires     *time.Time        `json:"expires"`
					}{resp.GetToken(), node, pattern, labels, replace, exp})
				}
				out := cmd.OutOrStdout()
				fmt.Fprintln(out, esc(resp.GetToken()))
				who := "node " + node
				if pattern != "" {
					who = "a node matching " + pattern
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "single use, for %s, labels %s, expires %s\n", who, pki.FormatLabels(labels), clock(exp))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "the node name the token may mint a certificate for")
	cmd.Flags().StringVar(&pattern, "node-pattern", "", "instead of --node: a pattern of node names, e.g. 'web-*'")
	cmd.Flags().StringArrayVar(&labelArgs, "label", nil, "a trusted label key=value the minted certificate carries (repeatable)")
	cmd.Flags().BoolVar(&replace, "replace", false, "allow minting a certificate for a registered node (a reinstall), a coordinator's or your admin name")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token stays valid (at most 168h)")
	addOutputFlag(cmd, &output)
	return cmd
}

func newTLSCertRequestCommand(cf *connFlags) *cobra.Command {
	var (
		token, node, dir string
		force            bool
	)
	cmd := &cobra.Command{
		Use:   "request --token TOKEN --node NAME [--dir DIR]",
		Short: "Redeem a bootstrap token for this node's agent certificate",
		Long: `request makes a key pair here, sends a certificate signing request for
agent:NAME with the token, and writes NAME.pem, NAME-key.pem (0600) and the
CA certificate ca.pem to --dir. The private key never leaves this machine.
It needs --ca (the site's CA certificate, to check the coordinator) but no
client certificate.`,
		Example: `  hivectl tls cert request --token "$TOKEN" --node web-07 --dir /etc/hive/tls \
      --addr c1.example.net --ca /etc/hive/tls/ca.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if token == "" || node == "" {
				return errors.New("give --token and --node")
			}
			if err := pki.ValidateName(node); err != nil {
				return err
			}
			if !force {
				c, k := pki.CertFiles(node)
				for _, f := range []string{c, k} {
					if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
						return fmt.Errorf("%s already exists in %s: use --force to replace it", f, dir)
					}
				}
			}
			csr, keyPEM, err := pki.CreateAgentCSR(node)
			if err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.RequestCertificate(cctx, &hivev1.RequestCertificateRequest{Token: token, Node: node, Csr: csr})
				if err != nil {
					// The call needs no certificate, so a refusal is about
					// the token, not about permissions.
					if st, ok := status.FromError(err); ok && (st.Code() == codes.PermissionDenied || st.Code() == codes.NotFound) {
						return &cliError{msg: "request certificate: refused: " + st.Message() + " (the bootstrap token is wrong, used, expired or for another node: ask an admin for a new one with hivectl tls token create)", err: err}
					}
					return rpcError("request certificate", err, false)
				}
				certs, err := pki.ParseCerts(resp.GetCertificate())
				if err != nil {
					return fmt.Errorf("request certificate: the coordinator's answer: %w", err)
				}
				if id, err := pki.IdentityFromCert(certs[0]); err != nil || id != (pki.Identity{Kind: pki.KindAgent, Name: node}) {
					return fmt.Errorf("request certificate: the coordinator issued %v (%v), not agent:%s", id, err, node)
				}
				if err := ensureDir(dir); err != nil {
					return err
				}
				certPath, keyPath, err := pki.WriteCert(dir, node, &pki.Issued{Cert: certs[0], CertPEM: resp.GetCertificate(), KeyPEM: keyPEM}, force)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "wrote %s (agent:%s, valid until %s)\n", certPath, node, certs[0].NotAfter.UTC().Format(time.DateOnly))
				fmt.Fprintf(out, "wrote %s (private key)\n", keyPath)
				if len(resp.GetCa()) > 0 {
					caPath := filepath.Join(dir, pki.CAFile)
					if _, err := os.Stat(caPath); errors.Is(err, os.ErrNotExist) {
						if err := os.WriteFile(caPath, resp.GetCa(), 0o644); err != nil {
							return err
						}
						fmt.Fprintf(out, "wrote %s (CA certificate)\n", caPath)
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "the bootstrap token (from 'hivectl tls token create')")
	cmd.Flags().StringVar(&node, "node", "", "this node's name")
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the files to")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing NAME.pem and NAME-key.pem")
	return cmd
}
