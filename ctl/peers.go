package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/client"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func newPeersCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List, add and remove the coordinators of the raft configuration",
		Long: `peers shows and changes the raft configuration: which coordinators vote.
Coordinators normally join by themselves (gossip and --bootstrap-expect);
use 'peers remove' to drop a server that is gone for good, so that it no
longer counts towards the quorum, and 'peers add' to add one by hand.
A server enters raft only after the leader has checked, over mutual TLS
at its gRPC address, that it holds a coordinator certificate for its name
covering its addresses; it joins as a non-voter and the leader promotes it
to voter once it has caught up. Changes need an admin certificate and are
made by the leader (any coordinator forwards them). See docs/operations.md.`,
	}
	cmd.AddCommand(newPeersListCommand(cf), newPeersAddCommand(cf), newPeersRemoveCommand(cf))
	return cmd
}

func newPeersListCommand(cf *connFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the raft peers, their addresses and the leader",
		Example: "  hivectl peers list\n  hivectl peers list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				resp, err := c.ListPeers(cctx, &hivev1.ListPeersRequest{})
				if err != nil {
					return rpcError("peers list", err, false)
				}
				ps := peersToJSON(resp.GetPeers())
				if output == outJSON {
					return writeJSON(cmd.OutOrStdout(), ps)
				}
				return writePeersTable(cmd.OutOrStdout(), ps)
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newPeersAddCommand(cf *connFlags) *cobra.Command {
	var grpcAddr string
	cmd := &cobra.Command{
		Use:   "add NAME RAFT-ADDR",
		Short: "Add a coordinator to the raft configuration (non-voter, promoted once caught up)",
		Long: `add asks the leader to add coordinator NAME at RAFT-ADDR. The leader first
dials the server's gRPC address (--grpc-addr, or the one it advertises in
gossip) with mutual TLS and checks that its certificate names
coordinator:NAME and covers the hosts of both addresses (hivectl tls cert
create --coordinator NAME --ip ADDR); anything else is refused and nothing
changes. The server joins as a non-voter; the leader promotes it to voter
once it has stayed caught up for its stabilization time (10 s by default)
and the quorum allows it. Watch 'hivectl peers list' for the promotion.`,
		Example: "  hivectl peers add c4 10.0.0.14:7401\n  hivectl peers add c4 10.0.0.14:7401 --grpc-addr 10.0.0.14:7400",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, addr := args[0], args[1]
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				if _, err := c.AddPeer(cctx, &hivev1.AddPeerRequest{Id: id, Address: addr, GrpcAddress: grpcAddr}); err != nil {
					return rpcError("peers add "+id, err, true)
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "added %s (%s) as a non-voter; the leader promotes it to voter once it has caught up\n", id, addr)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&grpcAddr, "grpc-addr", "", "the new server's gRPC address (host:port) where its certificate is checked (default: the address it advertises in gossip)")
	return cmd
}

func newPeersRemoveCommand(cf *connFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a coordinator from the raft configuration",
		Long: `remove drops NAME from the raft configuration. Use it for a server that is
gone for good (its disk lost, the machine replaced), so that the quorum is
counted without it, or a non-voter that never caught up. It refuses to
remove the only voter; the coordinator answers NotFound for a name that is
not in the raft configuration.`,
		Example: "  hivectl peers remove c3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			return cf.withConn(cmd, func(ctx context.Context, c *client.Conn) error {
				cctx, cancel := callCtx(ctx)
				defer cancel()
				list, err := c.ListPeers(cctx, &hivev1.ListPeersRequest{})
				if err != nil {
					return rpcError("peers remove "+id, err, true)
				}
				var names []string
				found, voter, voters := false, false, 0
				for _, p := range list.GetPeers() {
					names = append(names, p.GetId())
					if p.GetVoter() {
						voters++
					}
					if p.GetId() == id {
						found, voter = true, p.GetVoter()
					}
				}
				if !found {
					return fmt.Errorf("peers remove: no raft peer named %q (peers: %s)", id, listString(names))
				}
				if voter && voters <= 1 {
					return fmt.Errorf("peers remove: %s is the only voter; removing it would leave no cluster", id)
				}
				if _, err := c.RemovePeer(cctx, &hivev1.RemovePeerRequest{Id: id}); err != nil {
					return rpcError("peers remove "+id, err, true)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed %s from the raft configuration\n", id)
				return err
			})
		},
	}
}

type peerJSON struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

func peersToJSON(ps []*hivev1.RaftPeer) []peerJSON {
	out := []peerJSON{}
	for _, p := range ps {
		out = append(out, peerJSON{ID: p.GetId(), Address: p.GetAddress(), Voter: p.GetVoter(), Leader: p.GetLeader()})
	}
	return out
}

func writePeersTable(w io.Writer, ps []peerJSON) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tRAFT ADDRESS\tSUFFRAGE\tSTATE")
	for _, p := range ps {
		suffrage, state := "nonvoter", "follower"
		if p.Voter {
			suffrage = "voter"
		}
		if p.Leader {
			state = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", esc(p.ID), orDash(strings.TrimSpace(p.Address)), suffrage, state)
	}
	return tw.Flush()
}
