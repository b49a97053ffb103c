package ctl

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hivefleet/hive/site"
)

func newValidateCommand() *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a site file and list every error with file:line:column",
		Long: `validate parses and checks a site file without contacting any coordinator.

It prints nothing and exits 0 when the file is valid (with -v, a summary of
roles, selectors and resources). Otherwise it prints every error found, one
per line as FILE:LINE:COL: FIELD.PATH: REASON, and exits 1.`,
		Example: `  hivectl validate deploy/examples/site.yaml
  hivectl validate -v site.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			data, err := os.ReadFile(name)
			if err != nil {
				return fmt.Errorf("read site file: %w", err)
			}
			s, err := site.Parse(name, data)
			if err != nil {
				var list site.ErrorList
				if errors.As(err, &list) {
					for _, e := range list {
						fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "%d error(s)\n", len(list))
					return &exitError{code: 1}
				}
				return err
			}
			if verbose {
				n := 0
				for _, r := range s.GetRoles() {
					n += len(r.GetResources())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: valid: %d roles, %d selectors, %d resources, %d secrets referenced; sha256 %s\n",
					name, len(s.GetRoles()), len(s.GetSelectors()), n, len(s.GetSecrets()), site.Hash(s))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print a summary of a valid file")
	return cmd
}
