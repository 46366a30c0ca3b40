package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/chaos"
)

// errFaultsFailed is rsp chaos --check's failure: a fault broke a
// guarantee (the report says which).
var errFaultsFailed = errors.New("a fault broke a guarantee (see the report)")

func newChaosCmd(g *globals) *cobra.Command {
	var (
		cfg    chaos.Config
		faults []string
		out    string
		check  bool
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Kill NATS nodes and name servers under load and report what rsp lost",
		Long: `Start a three-node NATS cluster in this process (embedded servers on loopback,
JetStream, operator mode, rsp's stream and bucket R3; --nats and the credential
flags are not used), name-server replicas at their default settings (--nameservers),
--pes PEs registered with the client library at the default lifetime over
--conns connections spread over the nodes, in pools of at most --pool-size, and
--pus pool users resolving every pool in turn. Then, after measuring the load
alone (fault "none"), run each fault of --faults under that load:

  events-leader  kill -9 of the node leading the stream RSP_EVENTS
  bucket-leader  kill -9 of the node leading the scope bucket's stream (KV_rsp_default)
  meta-leader    kill -9 of the JetStream meta leader
  pe-node        kill -9 of a node PEs are connected to (the one leading least)
  nameservers    every name-server replica stopped for --outage, then started
  none           nothing: the load alone, which always runs first (alone, it
                 runs just that)

A killed node (no graceful shutdown: its connections and routes drop) comes back
after --down on the same ports with the same data. During each fault --victims
PEs, each on its own connection, die for real (connection closed, no
deregistration): they must be removed afterwards. Each fault is watched for
--settle after it ended.

Per fault it prints:
  PEs lost             removals of PEs whose registration still runs, by reason
  registrations ended  registrations of those PEs that gave up
  failed resolutions   errors, or answers missing a live PE of the pool
  longest time without a full answer
                       the longest a pool went without an answer holding all its
                       live PEs (from the name servers' restart for nameservers)
  slowest resolution   the longest single resolution, client retries included
  killed PEs           removed or not, the reason, how long after their kill

Progress goes to stderr, the figures to stdout, the Markdown report to
--out/results.md. With --check the exit status is 1 when a fault broke a
guarantee. Everything runs in this process: 500 PEs at the default lifetime are
about 300 renewals a second through R3 stream and bucket writes; when the load
alone (fault none) fails, the machine cannot carry it and the faults' figures
say little.`,
		Example: `  rsp chaos
  rsp chaos --pes 100 --faults events-leader,nameservers --outage 20s
  rsp chaos --check --out chaos-results`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.PEs < 1 || cfg.Conns < 1 || cfg.PUs < 1 || cfg.NameServers < 1 {
				return usagef("--pes, --conns, --pus and --nameservers must be ≥ 1")
			}
			if cfg.Down <= 0 || cfg.Outage <= 0 || cfg.Settle <= 0 {
				return usagef("--down, --outage and --settle must be > 0")
			}
			cfg.Faults = nil
			for _, f := range faults {
				ff, err := chaos.ParseFault(f)
				if err != nil {
					return usagef("--faults: %v", err)
				}
				cfg.Faults = append(cfg.Faults, ff)
			}
			if cfg.Victims == 0 {
				cfg.Victims = -1 // none, as asked
			}
			cfg.Progress = g.stderr
			if g.verbose {
				cfg.Logger = g.log
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			rep, err := chaos.Run(ctx, cfg)
			if rep != nil {
				if werr := rep.WriteText(g.stdout); werr != nil && err == nil {
					err = werr
				}
				path, werr := rep.Write(out)
				if werr != nil && err == nil {
					err = werr
				}
				if werr == nil {
					fmt.Fprintln(g.stdout, path)
				}
			}
			if err != nil {
				return err
			}
			if check {
				for _, r := range append([]*chaos.Result{rep.Baseline}, rep.Results...) {
					if r != nil && len(r.Problems()) > 0 {
						return errFaultsFailed
					}
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.PEs, "pes", 500, "PEs registered for the whole run")
	f.IntVar(&cfg.PoolSize, "pool-size", 100, "PEs per pool at most (≤ 128: one resolution returns a whole pool)")
	f.IntVar(&cfg.Conns, "conns", 6, "PE connections, spread over the nodes")
	f.IntVar(&cfg.PUs, "pus", 3, "pool users resolving, each on its own connection")
	f.IntVar(&cfg.Victims, "victims", 3, "PEs killed during each fault (0: none)")
	f.IntVar(&cfg.NameServers, "nameservers", 2, "name-server replicas")
	f.DurationVar(&cfg.Down, "down", 10*time.Second, "how long a killed node stays down")
	f.DurationVar(&cfg.Outage, "outage", 60*time.Second, "how long the name servers stay stopped (fault nameservers)")
	f.DurationVar(&cfg.Settle, "settle", 15*time.Second, "how long each fault is watched after it ended")
	var all []string
	for _, ff := range chaos.Faults {
		all = append(all, string(ff))
	}
	f.StringSliceVar(&faults, "faults", all, "faults to run, in order, comma-separated")
	f.StringVar(&out, "out", "chaos-results", "folder for the report")
	f.BoolVar(&check, "check", false, "exit 1 when a fault broke a guarantee")
	return cmd
}
