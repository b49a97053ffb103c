package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func init() {
	registerNodeSubcommand("label", newNodeLabelCommand)
	registerNodeSubcommand("show", newNodeShowCommand)
}

// parseLabelChanges parses "key=value" (set) and "key-" (remove)
// arguments.
func parseLabelChanges(args []string) (set map[string]string, remove []string, err error) {
	var sets []string
	for _, a := range args {
		if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
			if err := pki.ValidateLabel(k, ""); err != nil {
				return nil, nil, fmt.Errorf("%q: %w", a, err)
			}
			if slices.Contains(remove, k) {
				return nil, nil, fmt.Errorf("%q given twice", a)
			}
			remove = append(remove, k)
			continue
		}
		sets = append(sets, a)
	}
	if set, err = pki.ParseLabelArgs(sets); err != nil {
		return nil, nil, err
	}
	for _, k := range remove {
		if _, ok := set[k]; ok {
			return nil, nil, fmt.Errorf("label %q is both set and removed", k)
		}
	}
	return set, remove, nil
}

func newNodeLabelCommand(cf *connFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "label NODE KEY=VALUE... | KEY-...",
		Short: "Set or remove a node's operator labels (trusted; they select roles)",
		Long: `label sets (KEY=VALUE) and removes (KEY-) operator labels of a registered
node. A node's trusted labels, the ones site selectors match, are the
labels bound in its certificate (hivectl tls cert create --agent NAME
--label, or the bootstrap token's --label), overridden key by key by
operator labels. Removing an operator label lets the certificate's label of
the same key apply again; a certificate label itself changes only with a
new certificate.

What the agent reports about itself (its own --label) is a fact: shown by
'hivectl node show', usable in templates as .Reported, never matched.
The node's roles and rendered state change at once. Needs an admin
certificate.`,
		Example: `  hivectl node label web-07 tier=db
  hivectl node label web-07 zone=eu-2 rack-`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			node := args[0]
			if err := pki.ValidateName(node); err != nil {
				return err
			}
			set, remove, err := parseLabelChanges(args[1:])
			if err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.LabelNode(cctx, &hivev1.LabelNodeRequest{Node: node, Set: set, Remove: remove})
				if err != nil {
					return rpcError("label node "+node, err, true)
				}
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), struct {
						Node         string            `json:"node"`
						Labels       map[string]string `json:"labels"`
						LabelSources map[string]string `json:"label_sources"`
						Roles        []string          `json:"roles"`
					}{node, nonNilMap(resp.GetLabels()), nonNilMap(resp.GetLabelSources()), nonNilSlice(resp.GetRoles())})
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "%s: labels %s\n", node, sourcedLabels(resp.GetLabels(), resp.GetLabelSources()))
				fmt.Fprintf(out, "%s: roles %s\n", node, listString(resp.GetRoles()))
				return nil
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// sourcedLabels renders trusted labels as "k=v (source), ...".
func sourcedLabels(labels, sources map[string]string) string {
	if len(labels) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, fmt.Sprintf("%s=%s (%s)", k, labels[k], orDash(sources[k])))
	}
	return strings.Join(parts, ", ")
}

func newNodeShowCommand(cf *connFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NODE",
		Short: "Show a node's trusted labels with their source, its facts and certificate",
		Long: `show prints what the coordinators know of one node, split by trust:

  labels     trusted labels with their source: certificate (bound when it
             enrolled), operator (hivectl node label) or dev (a --dev
             coordinator trusts agents); site selectors match only these
  roles      the roles those labels select in the current generation
  reported   labels the agent reports about itself (facts: shown, usable in
             templates as .Reported, never matched)
  addresses  addresses the agent reported, each checked against its
             connection's address or its certificate's IP addresses
  certificate  serial number and expiry of the certificate it last watched
             with (none for nodes that never watched with one)`,
		Example: `  hivectl node show web-07
  hivectl node show web-07 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			node := args[0]
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.GetStatus(cctx, &hivev1.GetStatusRequest{Node: node})
				if err != nil {
					return rpcError("show node "+node, err, false)
				}
				if len(resp.GetNodes()) != 1 {
					return errors.New("show node: the coordinator answered with no node")
				}
				n := resp.GetNodes()[0]
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), nodeShowJSON(n))
				}
				return writeNodeShow(cmd.OutOrStdout(), n)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

type nodeShow struct {
	Name           string            `json:"name"`
	Labels         map[string]string `json:"labels"`
	LabelSources   map[string]string `json:"label_sources"`
	Roles          []string          `json:"roles"`
	ReportedLabels map[string]string `json:"reported_labels"`
	Addresses      []string          `json:"addresses"`
	AgentVersion   string            `json:"agent_version,omitempty"`
	CertSerial     string            `json:"certificate_serial,omitempty"`
	CertNotAfter   *time.Time        `json:"certificate_not_after,omitempty"`
}

func nodeShowJSON(n *hivev1.NodeStatus) nodeShow {
	return nodeShow{
		Name: n.GetName(), Labels: nonNilMap(n.GetLabels()), LabelSources: nonNilMap(n.GetLabelSources()),
		Roles: nonNilSlice(n.GetRoles()), ReportedLabels: nonNilMap(n.GetReportedLabels()),
		Addresses: nonNilSlice(n.GetAddresses()), AgentVersion: n.GetAgentVersion(),
		CertSerial: n.GetCertificateSerial(), CertNotAfter: timeOrNil(n.GetCertificateNotAfter()),
	}
}

func writeNodeShow(w io.Writer, n *hivev1.NodeStatus) error {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("node", n.GetName())
	row("labels", sourcedLabels(n.GetLabels(), n.GetLabelSources()))
	row("roles", listString(n.GetRoles()))
	row("reported", labelString(n.GetReportedLabels()))
	row("addresses", listString(n.GetAddresses()))
	row("agent", orDash(n.GetAgentVersion()))
	cert := "-"
	if n.GetCertificateSerial() != "" {
		cert = "serial " + n.GetCertificateSerial()
		if t := timeOrNil(n.GetCertificateNotAfter()); t != nil {
			cert += ", expires " + clock(t)
		}
	}
	row("certificate", cert)
	return tw.Flush()
}
