package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func init() {
	registerNodeSubcommand("revoke", newNodeRevokeCommand)
	registerNodeSubcommand("remove", newNodeRemoveCommand)
}

func newNodeRevokeCommand(cf *connFlags) *cobra.Command {
	var (
		serials []string
		reason  string
		output  string
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME [--serial HEX]... [--reason TEXT]",
		Short: "Deny a node's certificates on every coordinator, at once",
		Long: `revoke puts node NAME's agent certificates on the deny list the coordinators
keep in raft. Without --serial, every certificate of agent:NAME issued until
now is denied (a cut-off on the certificate's NotBefore): those the
coordinators signed and those made offline with 'hivectl tls cert create'.
With --serial, only those certificates are denied (hex, as 'hivectl tls cert
show' or openssl print it, colons allowed), and the node's others stay good.

Every coordinator then refuses the certificate on every call (permission
denied: "certificate ... revoked at ..."), ends its open watch stream and
closes its connections within a second, and refuses to renew it. The node
stays in the registry and in status (use 'hivectl node remove' to forget
it). Revocation cannot be undone; the node is admitted again only with a
certificate issued after the revocation, e.g. from a new bootstrap token
('hivectl tls token create --node NAME'). Needs an admin certificate.`,
		Example: `  hivectl node revoke web-07 --reason "disk sent for repair"
  hivectl node revoke web-07 --serial 5f:3a:9c:...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := pki.ValidateName(node); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.RevokeNode(cctx, &hivev1.RevokeNodeRequest{Node: node, Serials: serials, Reason: reason})
				if err != nil {
					return rpcError("node revoke "+node, err, true)
				}
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), revocationJSON(resp.GetRevocation(), nil))
				}
				out := cmd.OutOrStdout()
				printRevocation(out, resp.GetRevocation())
				if resp.GetUnknownNode() {
					fmt.Fprintf(cmd.ErrOrStderr(), "note: %s is not in the registry (revoked all the same)\n", node)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&serials, "serial", nil, "deny only the certificate with this serial number (hex; repeatable)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with the revocation")
	addOutputFlag(cmd, &output)
	return cmd
}

func newNodeRemoveCommand(cf *connFlags) *cobra.Command {
	var (
		reason string
		output string
	)
	cmd := &cobra.Command{
		Use:   "remove NAME [--reason TEXT]",
		Short: "Forget a node: registry, status, published secrets; and revoke it",
		Long: `remove forgets node NAME: it leaves the registry (roles are no longer
rendered for it, peers no longer see it), its last report leaves status, and
the secrets it published ("NAME/...") are deleted, so nothing the node said
is believed any longer. It is revoked too (every certificate of agent:NAME
issued until now is denied, see 'hivectl node revoke'), so it cannot simply
register again: its open watch is ended and its connections closed, and a
report still in flight is dropped. To bring the machine back, enrol it
again with a new bootstrap token ('hivectl tls token create --node NAME').
Operator secrets, generations and history are untouched. Needs an admin
certificate.`,
		Example: `  hivectl node remove web-07 --reason "decommissioned"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := pki.ValidateName(node); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.RemoveNode(cctx, &hivev1.RemoveNodeRequest{Node: node, Reason: reason})
				if err != nil {
					return rpcError("node remove "+node, err, true)
				}
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), revocationJSON(resp.GetRevocation(), resp.GetDeletedSecrets()))
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "node %s removed from the registry and status\n", node)
				if d := resp.GetDeletedSecrets(); len(d) > 0 {
					fmt.Fprintf(out, "deleted the secrets it published: %s\n", strings.Join(d, ", "))
				}
				printRevocation(out, resp.GetRevocation())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with the revocation")
	addOutputFlag(cmd, &output)
	return cmd
}

// printRevocation writes a deny list entry for people.
func printRevocation(w io.Writer, r *hivev1.Revocation) {
	if c := timeOrNil(r.GetCutoff()); c != nil {
		fmt.Fprintf(w, "certificates of agent:%s issued until %s are revoked\n", r.GetNode(), clock(c))
	}
	if s := r.GetSerials(); len(s) > 0 {
		fmt.Fprintf(w, "revoked serials of agent:%s: %s\n", r.GetNode(), strings.Join(s, ", "))
	}
}

type revocationOut struct {
	Node           string     `json:"node"`
	Cutoff         *time.Time `json:"cutoff,omitempty"`
	Serials        []string   `json:"serials,omitempty"`
	Author         string     `json:"author"`
	Reason         string     `json:"reason,omitempty"`
	Removed        bool       `json:"removed"`
	DeletedSecrets []string   `json:"deleted_secrets,omitempty"`
}

func revocationJSON(r *hivev1.Revocation, deleted []string) revocationOut {
	return revocationOut{
		Node: r.GetNode(), Cutoff: timeOrNil(r.GetCutoff()), Serials: r.GetSerials(), Author: r.GetAuthor(),
		Reason: r.GetReason(), Removed: r.GetRemoved(), DeletedSecrets: deleted,
	}
}
