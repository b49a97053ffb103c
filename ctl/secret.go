package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// maxSecretSize bounds a secret value read from a file or stdin.
const maxSecretSize = 1 << 20

func newSecretCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Set, list and delete secret values the site file refers to by name",
		Long: `Secret values never appear in site files: a file refers to a secret by name,
and its value is set here. Coordinators store values encrypted and deliver
each only to the nodes whose resources reference it. Values are never
printed by hivectl, in logs or in status. Setting and deleting need an admin
certificate.`,
	}
	cmd.AddCommand(newSecretSetCommand(cf), newSecretListCommand(cf), newSecretDeleteCommand(cf))
	return cmd
}

func newSecretSetCommand(cf *connFlags) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "set NAME [--file FILE]",
		Short: "Set a secret's value from a file or from stdin",
		Long: `set stores the value of secret NAME, read from --file or else from stdin,
byte for byte (a trailing newline is part of the value: use printf, not
echo, or --file). The value may be up to 1 MiB.`,
		Example: `  hivectl secret set db-password --file ./db-password
  printf '%s' "$TOKEN" | hivectl secret set api-token
  hivectl secret set tls-key --file /etc/ssl/private/site.key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var (
				value []byte
				err   error
			)
			if file != "" {
				value, err = readLimited(file, nil)
			} else {
				value, err = readLimited("", cmd.InOrStdin())
			}
			if err != nil {
				return err
			}
			if len(value) == 0 {
				return errors.New("secret set: the value is empty (give --file or pipe the value on stdin)")
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.SetSecret(cctx, &hivev1.SetSecretRequest{Name: name, Value: value})
				if err != nil {
					return rpcError("secret set "+name, err, true)
				}
				n := len(resp.GetNodes())
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "secret %s set (%d bytes); %d node(s) use it\n", name, len(value), n)
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the value from this file instead of stdin")
	return cmd
}

// readLimited reads file (or r when file is empty) up to maxSecretSize.
func readLimited(file string, r io.Reader) ([]byte, error) {
	src := "stdin"
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("secret set: %w", err)
		}
		defer f.Close()
		r, src = f, file
	}
	data, err := io.ReadAll(io.LimitReader(r, maxSecretSize+1))
	if err != nil {
		return nil, fmt.Errorf("secret set: read %s: %w", src, err)
	}
	if len(data) > maxSecretSize {
		return nil, fmt.Errorf("secret set: %s holds more than %d bytes", src, maxSecretSize)
	}
	return data, nil
}

func newSecretListCommand(cf *connFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List secret names (never values), and names referenced but not set",
		Example: `  hivectl secret list
  hivectl secret list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.ListSecrets(cctx, &hivev1.ListSecretsRequest{})
				if err != nil {
					return rpcError("secret list", err, false)
				}
				sl := secretsToJSON(resp)
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), sl)
				}
				return writeSecretsTable(cmd.OutOrStdout(), sl)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newSecretDeleteCommand(cf *connFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete a secret",
		Example: `  hivectl secret delete old-api-token`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				if _, err := c.DeleteSecret(cctx, &hivev1.DeleteSecretRequest{Name: name}); err != nil {
					return rpcError("secret delete "+name, err, true)
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "secret %s deleted\n", name)
				return err
			})
		},
	}
}

type secretsJSON struct {
	Secrets []secretJSON `json:"secrets"`
	Missing []string     `json:"missing"`
}

type secretJSON struct {
	Name       string     `json:"name"`
	Updated    *time.Time `json:"updated"`
	Author     string     `json:"author"`
	Referenced bool       `json:"referenced"`
	Published  bool       `json:"published"`
}

func secretsToJSON(resp *hivev1.ListSecretsResponse) secretsJSON {
	out := secretsJSON{Secrets: []secretJSON{}, Missing: nonNilSlice(resp.GetMissing())}
	for _, s := range resp.GetSecrets() {
		out.Secrets = append(out.Secrets, secretJSON{
			Name: s.GetName(), Updated: timeOrNil(s.GetUpdated()), Author: s.GetAuthor(),
			Referenced: s.GetReferenced(), Published: s.GetPublished(),
		})
	}
	return out
}

func writeSecretsTable(w io.Writer, s secretsJSON) error {
	if len(s.Secrets) == 0 {
		fmt.Fprintln(w, "no secrets set")
	} else {
		tw := newTable(w)
		fmt.Fprintln(tw, "NAME\tUPDATED\tAUTHOR\tUSE")
		for _, x := range s.Secrets {
			use := "unused"
			switch {
			case x.Published:
				use = "published by a node"
			case x.Referenced:
				use = "referenced"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", esc(x.Name), clock(x.Updated), orDash(x.Author), use)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Missing) > 0 {
		fmt.Fprintf(w, "\nreferenced by the current generation but not set (nodes that need them cannot converge):\n")
		for _, m := range s.Missing {
			fmt.Fprintf(w, "  %s   (hivectl secret set %s)\n", esc(m), esc(m))
		}
	}
	return nil
}
