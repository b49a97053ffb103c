// Package ctl implements the hivectl command line. Each subcommand lives in
// its own file and is wired into the root command in NewRootCommand. Commands
// write to the streams they are given, never to os.Stdout directly, so tests
// run them in-process.
package ctl

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/version"
)

// exitError carries an exit code through cobra without printing twice.
type exitError struct {
	code int
}

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// NewRootCommand builds the hivectl command tree.
func NewRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "hivectl",
		Short: "Operate a hive site: validate and push desired state, see status, roll back",
		Long: `hivectl is the operator's tool for hive.

A site file (YAML) declares roles, the selectors that give nodes their roles,
and what each role needs. hivectl validates it locally, pushes it to the
coordinators as a new generation, and shows how the fleet converges.`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newRepoCommand())
	root.SetIn(stdin)
	// Everything printed goes through a termWriter (see output.go).
	root.SetOut(newTermWriter(stdout))
	root.SetErr(newTermWriter(stderr))
	cf := addConnectionFlags(root)
	root.AddCommand(
		newValidateCommand(),
		newTLSCommand(cf),
		newPushCommand(cf),
		newPlanCommand(cf),
		newPullCommand(cf),
		newStatusCommand(cf),
		newMembersCommand(cf),
		newHistoryCommand(cf),
		newDiffCommand(cf),
		newRollbackCommand(cf),
		newSecretCommand(cf),
		newPeersCommand(cf),
		newNodeCommand(cf),
		newRolloutCommand(cf),
		newAuditCommand(cf),
		newEventsCommand(cf),
		newDriftCommand(cf),
		newDashboardCommand(cf),
	)
	root.AddCommand(newDemoCommand())
	return root
}

// Main runs hivectl with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(newTermWriter(stderr), "hivectl: %v\n", err)
	return 1
}
