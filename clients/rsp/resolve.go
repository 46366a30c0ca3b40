package main

import (
	"cmp"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

func newResolveCmd(g *globals) *cobra.Command {
	var (
		req    events.ResolveRequest
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "resolve POOL",
		Short: "Resolve a pool handle into pool elements",
		Long: `Ask the name servers for pool elements of POOL, in the order the pool's policy
chose them, and print them as a table (PE_ID TRANSPORTS POLICY LOAD) or, with
--json, as the answer's JSON body. The answer must be signed over this request's
nonce, or it is refused. An unknown or empty pool is an error (not_found).`,
		Example: `  rsp resolve echo
  rsp resolve echo --max 5 --exclude echo-3 --affinity echo-1 --json
  rsp resolve echo --hint zone=a`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, c, err := g.connect(auth.RolePU, false)
			if err != nil {
				return err
			}
			defer nc.Close()
			ans, err := c.Resolve(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if asJSON {
				fmt.Fprintf(g.stdout, "%s\n", events.Marshal(ans))
				return nil
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PE_ID\tTRANSPORTS\tPOLICY\tLOAD")
			for _, e := range ans.Elements {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", e.PEID, transports(e.Transports),
					cmp.Or(e.Policy.Name, ans.Policy), strconv.FormatFloat(e.Policy.Load, 'g', 4, 64))
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.IntVar(&req.Max, "max", 0, "at most `N` PEs (default: the name server's, 3)")
	f.StringSliceVar(&req.Exclude, "exclude", nil, "leave out PE `ID`s known to have failed; repeatable or comma-separated")
	f.StringVar(&req.Affinity, "affinity", "", "return PE `ID` first if it is still in the pool")
	f.StringToStringVar(&req.Hint, "hint", nil, "selection hint `KEY=VALUE` for the policy, e.g. zone=a (PEs whose meta zone is a come first); repeatable")
	f.BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return cmd
}
