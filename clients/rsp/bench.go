package main

import (
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/bench"
)

func newBenchCmd(g *globals) *cobra.Command {
	var (
		cfg bench.Config
		out string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure rsp next to its baselines on loopback",
		Long: `Start an embedded NATS server and a name server in this process, on loopback
(--nats and the credential flags are not used), and measure, each next to its
baseline in the same run:

  - resolution throughput and p50/p99 latency per pool size, policy and number
    of concurrent clients, next to a bare NATS echo responder on the same
    server answering with a payload of the same size (ratio rsp/echo);
  - registrations per second and register-to-visible latency, next to plain
    JetStream publishes of the same messages;
  - change-notification latency (add, update), next to a bare NATS
    publish→subscribe of the same message;
  - name-server memory per PE and start-up time of a new replica over
    --mem-pes PEs written into the name space, next to the records' size;
  - etcd, if an etcd binary is on PATH (started on loopback in a temp dir):
    resolve-and-pick (range read of the pool prefix plus the same policy pick
    in the client, ratio rsp/etcd), lease-grant+put and watch latency;
    without it the column is skipped and the report says so.

Progress goes to stderr; the report (results.md, resolution.png) to --out.`,
		Example: `  rsp bench
  rsp bench --duration 5s --pools 500 --clients 1,64 --policies round_robin`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Duration <= 0 || cfg.Warmup < 0 {
				return usagef("--duration must be > 0 and --warmup ≥ 0")
			}
			for _, n := range append(append([]int{}, cfg.Pools...), cfg.Clients...) {
				if n < 1 {
					return usagef("--pools and --clients must be ≥ 1, got %d", n)
				}
			}
			cfg.Progress = g.stderr
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			rep, err := bench.Run(ctx, cfg)
			if err != nil {
				return err
			}
			files, err := rep.Write(out)
			for _, f := range files {
				fmt.Fprintln(g.stdout, f)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", 2*time.Second, "measured time of each throughput measurement")
	f.DurationVar(&cfg.Warmup, "warmup", 500*time.Millisecond, "unmeasured warm-up before each throughput measurement")
	f.IntSliceVar(&cfg.Pools, "pools", []int{10, 100, 500}, "pool sizes in PEs, comma-separated")
	f.IntSliceVar(&cfg.Clients, "clients", []int{1, 8, 64}, "concurrent requesters, comma-separated")
	f.StringSliceVar(&cfg.Policies, "policies", []string{"round_robin", "least_used"}, "pool policies, comma-separated")
	f.IntVar(&cfg.MaxPEs, "max", 3, "PEs asked for per resolution")
	f.IntVar(&cfg.Regs, "regs", 2000, "registrations for the registrations/s figure (0: skip)")
	f.IntVar(&cfg.Visible, "visible", 200, "samples of register-to-visible latency (0: skip)")
	f.IntVar(&cfg.Changes, "changes", 200, "samples of change-notification latency, adds and updates each (0: skip)")
	f.IntVar(&cfg.MemPEs, "mem-pes", 100_000, "PEs (in mem-pes/10 pools) for name-server memory per PE and replica start-up (0: skip)")
	f.StringVar(&out, "out", "bench-results", "folder for the report")
	return cmd
}
