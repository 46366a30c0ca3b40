package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

func newPoolsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pools",
		Short: "List every pool element in the scope's name space",
		Long: `List every pool element registered in the scope, read from the name space
(the key-value bucket rsp_<scope>), sorted by pool and PE id: POOL PE_ID
TRANSPORTS POLICY SIGNER (the registering key, shortened) UPDATED (age of the
last registration) EXPIRES (time left unless renewed). With --json, print the
PE records as a JSON array.`,
		Example: `  rsp pools
  rsp --scope prod pools --json`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, c, err := g.connect(auth.RolePU, false)
			if err != nil {
				return err
			}
			defer nc.Close()
			recs, err := c.Pools(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if recs == nil {
					recs = []events.Record{}
				}
				fmt.Fprintf(g.stdout, "%s\n", events.Marshal(recs))
				return nil
			}
			now := time.Now()
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "POOL\tPE_ID\tTRANSPORTS\tPOLICY\tSIGNER\tUPDATED\tEXPIRES")
			for _, r := range recs {
				life := (&events.Registration{LifetimeMS: r.LifetimeMS}).Lifetime()
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s ago\tin %s\n", r.Pool, r.PEID, transports(r.Transports),
					r.Policy.Name, short(r.Signer), age(now.Sub(r.UpdatedAt)), age(r.UpdatedAt.Add(life).Sub(now)))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the records as JSON")
	return cmd
}

// short shortens a public nkey for a table: its first 10 characters.
func short(key string) string {
	if len(key) > 10 {
		return key[:10] + "…"
	}
	return key
}

func age(d time.Duration) string {
	return max(d, 0).Round(100 * time.Millisecond).String()
}
