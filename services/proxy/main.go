// Command rsp-proxy is a TCP front of an rsp pool for clients that know
// nothing of rsp: it accepts plain TCP connections and splices each to a
// pool element (PE) of the pool, chosen by the pool's policy from a local
// cache of the pool kept current by its change stream.
package main

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/daemon"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

type options struct {
	scope          string
	pool           string
	listen         string
	connectTimeout time.Duration
	drainTimeout   time.Duration
	timeout        time.Duration

	daemon.Client
}

func main() { daemon.Main("rsp-proxy", command()) }

func command() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "rsp-proxy",
		Short: "Splice plain TCP connections to the PEs of an rsp pool",
		Long: `Accept plain TCP connections on --listen and splice each to a pool element
(PE) of pool --pool, on the PE's "tcp" transport. The PE is chosen by the
pool's policy (round robin, ...) from a local cache of the pool, kept current
by the pool's change stream. If the connection to the PE fails (refused, or
not accepted within --connect-timeout), the PE is reported failed and the next
one is tried, up to every PE of the pool; when none accepts, the client's
connection is closed.

A connection stays on its PE for its whole life, even when the PE
deregisters: new connections go to the remaining PEs. Half-closes are passed
on both ways.

SIGINT or SIGTERM stop accepting; the open connections may finish for at
most --drain-timeout, then the rest are closed and rsp-proxy exits 0.

Credentials: --creds FILE, else DIR/auth/creds/<scope>/pu.creds under --data
when that file exists, else none (a name server run with --insecure). Every
flag can also be set by an environment variable: RSP_ and the flag name in
upper case with "-" as "_" (RSP_NATS, RSP_POOL, RSP_LISTEN).`,
		Example: `  rsp-proxy --pool echo --listen 127.0.0.1:9000
  nc 127.0.0.1 9000`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          daemon.RunE(func(ctx context.Context) error { return run(ctx, o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.scope, "scope", events.DefaultScope, "rsp scope `NAME`")
	f.StringVar(&o.pool, "pool", "", "pool `HANDLE` to proxy to (required)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:9000", "TCP `ADDRESS` to accept connections on")
	o.AddFlags(f, auth.RolePU, "")
	f.DurationVar(&o.connectTimeout, "connect-timeout", time.Second, "bound for each connect to a PE")
	f.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, let open connections finish at most this long")
	f.DurationVar(&o.timeout, "timeout", rspclient.DefaultTimeout, "bound for connecting to NATS and for each wait (filling the cache, ...)")
	return cmd
}

func run(ctx context.Context, o options) error {
	log, err := o.Logger()
	if err != nil {
		return err
	}
	if o.pool == "" {
		return errors.New("--pool is required")
	}
	if err := events.CheckScope(o.scope); err != nil {
		return err
	}
	if err := events.CheckPool(o.pool); err != nil {
		return err
	}
	if o.connectTimeout <= 0 || o.drainTimeout < 0 || o.timeout <= 0 {
		return errors.New("--connect-timeout and --timeout must be > 0, --drain-timeout ≥ 0")
	}
	creds := o.CredsFor(o.scope, auth.RolePU)
	copts := []rspclient.Option{rspclient.WithScope(o.scope), rspclient.WithTimeout(o.timeout), rspclient.WithLogger(log)}
	if creds != "" {
		copts = append(copts, rspclient.WithCreds(creds))
	}
	nc, err := o.Dial(ctx, "rsp-proxy", creds, o.timeout, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := rspclient.New(nc, copts...)
	if err != nil {
		return err
	}
	// The cache lives until the proxy is done draining, not until the signal.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	pc, err := c.Cache(cctx, o.pool)
	if err != nil {
		return err
	}
	defer pc.Close()
	p := newProxy(pc, o.connectTimeout, log.With("pool", o.pool))
	return p.ListenAndServe(ctx, o.listen, o.drainTimeout)
}
