package ctl

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
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
per line as FILE:LINE:COL: FIELD.PATH: REASON, and exits 1.

It refuses every value an agent would refuse (the providers share these
checks with it). Warnings, for what is valid but probably a mistake (a
firewall whose input policy is drop with no rule accepting SSH, 22/tcp),
are printed on stderr as FILE:LINE:COL: FIELD.PATH: warning: REASON and do
not change the exit code; push prints them too and pushes.`,
		Example: `  hivectl validate deploy/examples/site.yaml
  hivectl validate -v site.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			s, _, err := readSite(cmd, name, "")
			if err != nil {
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

// readSite reads and parses a site file. Parse errors are printed one per
// line on stderr, followed by a count and suffix, and turn into exit code 1.
func readSite(cmd *cobra.Command, name, suffix string) (*hivev1.Site, []byte, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, nil, fmt.Errorf("read site file: %w", err)
	}
	s, err := site.Parse(name, data)
	if err != nil {
		var list site.ErrorList
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d error(s)%s\n", len(list), suffix)
			return nil, nil, &exitError{code: 1}
		}
		return nil, nil, err
	}
	// Warnings (valid, but probably a mistake) are printed and do not
	// stop validate or push.
	for _, w := range site.Warnings(s) {
		fmt.Fprintln(cmd.ErrOrStderr(), w.Error())
	}
	return s, data, nil
}
