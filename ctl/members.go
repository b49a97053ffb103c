package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newMembersCommand(cf *connFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the gossip members: agents and coordinators, with raft roles",
		Long: `members lists every member of the gossip pool as the answering coordinator
sees it: name, kind (agent or coordinator), gossip address, gossip state
(alive, suspect, dead, left), labels, and for coordinators their raft role
(leader, follower, candidate, or none when not in the raft configuration).`,
		Example: `  hivectl members
  hivectl members -o json | jq -r '.[] | select(.raft == "leader") | .name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.ListMembers(cctx, &hivev1.ListMembersRequest{})
				if err != nil {
					return rpcError("members", err, false)
				}
				ms := membersToJSON(resp.GetMembers())
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), ms)
				}
				return writeMembersTable(cmd.OutOrStdout(), ms)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// memberJSON is one element of hivectl members -o json.
type memberJSON struct {
	Name     string            `json:"name"`
	Kind     string            `json:"kind"`
	Address  string            `json:"address"`
	Gossip   string            `json:"gossip"`
	Labels   map[string]string `json:"labels"`
	GRPCAddr string            `json:"grpc_addr,omitempty"`
	Version  string            `json:"version,omitempty"`
	Raft     string            `json:"raft,omitempty"`
}

func membersToJSON(ms []*hivev1.Member) []memberJSON {
	out := []memberJSON{}
	for _, m := range ms {
		mj := memberJSON{
			Name:     m.GetName(),
			Kind:     kindName(m.GetKind()),
			Address:  m.GetAddress(),
			Gossip:   gossipName(m.GetGossip()),
			Labels:   nonNilMap(m.GetLabels()),
			GRPCAddr: m.GetGrpcAddr(),
			Version:  m.GetVersion(),
		}
		if m.GetKind() == hivev1.MemberKind_MEMBER_KIND_COORDINATOR {
			mj.Raft = raftName(m.GetRaft())
		}
		out = append(out, mj)
	}
	return out
}

func writeMembersTable(w io.Writer, ms []memberJSON) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tKIND\tADDRESS\tGOSSIP\tRAFT\tVERSION\tLABELS")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", esc(m.Name), m.Kind, orDash(m.Address), m.Gossip,
			orDash(m.Raft), orDash(m.Version), labelString(m.Labels))
	}
	return tw.Flush()
}
