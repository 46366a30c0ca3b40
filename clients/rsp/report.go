package main

import (
	"fmt"

	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/spf13/cobra"
)

func newReportCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "report POOL PE_ID",
		Short: "Report a pool element that failed",
		Long: `Report to the name servers that pool element PE_ID of POOL failed, signed with
your key, and wait until the report is stored. A PE is taken out of resolution
once enough distinct reporters (3 by default) report it within the report
window, or when a name server confirms the failure itself.`,
		Example: `  rsp report echo echo-3 --reason "connect refused"`,
		Args:    exactArgs("POOL", "PE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, c, err := g.connect(auth.RolePU, true)
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := c.ReportFailure(cmd.Context(), args[0], args[1], reason); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s reported\n", args[1])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "what went wrong, as `TEXT`")
	return cmd
}
