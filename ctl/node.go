package ctl

import (
	"sort"

	"github.com/spf13/cobra"
)

// nodeSubcommand makes one `hivectl node` subcommand. Files that add one
// register it from an init function, so that each lives in its own file.
type nodeSubcommand struct {
	name string
	make func(cf *connFlags) *cobra.Command
}

var nodeSubcommands []nodeSubcommand

// registerNodeSubcommand adds a `hivectl node NAME` subcommand.
func registerNodeSubcommand(name string, make func(cf *connFlags) *cobra.Command) {
	nodeSubcommands = append(nodeSubcommands, nodeSubcommand{name: name, make: make})
}

func newNodeCommand(cf *connFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Inspect and manage one node: its trusted labels, revocation, removal",
		Long: `node acts on one node of the registry. What a node reports about itself
(facts) never decides its roles or secrets; the labels that selectors match
come from its certificate or from an operator. See docs/security.md.`,
	}
	subs := append([]nodeSubcommand(nil), nodeSubcommands...)
	sort.Slice(subs, func(i, j int) bool { return subs[i].name < subs[j].name })
	for _, s := range subs {
		cmd.AddCommand(s.make(cf))
	}
	return cmd
}
