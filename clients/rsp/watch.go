package main

import (
	"cmp"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

func newWatchCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch POOL",
		Short: "Print a pool's members, then every change, until interrupted",
		Long: `Print the current pool elements of POOL (as "add ... registered" lines), then
one line per change of the pool (add, update, remove, with the reason) until
interrupted: "OP PE_ID REASON rev=REVISION TRANSPORTS". With --json each line is
the change's JSON body. After a NATS reconnect or a name-server restart the
pool is read again and what changed meanwhile is printed (removals with their
reasons). Exits 0 on SIGINT or SIGTERM, 1 when the watch ends otherwise (the
connection closed).`,
		Example: `  rsp watch echo
  rsp watch echo --json | jq .pe_id`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, c, err := g.connect(auth.RolePU, false)
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			w, err := c.Watcher(ctx, args[0])
			if err != nil {
				return err
			}
			for ch := range w.Changes() {
				if asJSON {
					fmt.Fprintf(g.stdout, "%s\n", events.Marshal(ch))
					continue
				}
				tr := ""
				if ch.Element != nil {
					tr = " " + transports(ch.Element.Transports)
				}
				fmt.Fprintf(g.stdout, "%s %s %s rev=%d%s\n", ch.Op, ch.PEID, cmp.Or(ch.Reason, "-"), ch.Revision, tr)
			}
			if ctx.Err() == nil {
				return fmt.Errorf("watch %s: %w", args[0], w.Err())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each change as JSON")
	return cmd
}
