package main

import (
	"fmt"

	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/spf13/cobra"
)

func newDeregisterCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "deregister POOL PE_ID",
		Short: "Deregister a pool element registered earlier with the same key",
		Long: `Deregister the pool element PE_ID from POOL and wait for the name server's
outcome. Only the key that registered a PE may deregister it, so use the same
--key file as the process that registered it (by default both use the same
file). A process still running "rsp register" for that PE would register it
again at its next renewal: stop that process instead when you can.`,
		Example: `  rsp deregister echo echo-1
  rsp --key ./svc.nk deregister echo echo-1`,
		Args: exactArgs("POOL", "PE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, c, err := g.connect(auth.RolePE, true)
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := c.Deregister(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s deregistered\n", args[1])
			return nil
		},
	}
}
