// Command dns is a DNS front for rsp pools, for clients that know nothing
// of rsp: `<pool>.<scope>.rsp.` answers A/AAAA records of the pool's PEs'
// tcp/udp transports in the pool policy's order, `_<pool>._tcp.<scope>.rsp.`
// SRV records with their ports. It is a pool user like any other: its
// answers come from a PoolCache per (scope, pool), kept current by the
// change stream.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/daemon"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

type options struct {
	scopes   []string
	listen   string
	ttl      time.Duration
	max      int
	caches   int
	emptyTTL time.Duration
	timeout  time.Duration

	daemon.Client
}

func main() { daemon.Main("rsp-dns", command()) }

func command() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "rsp-dns",
		Short: "Answer DNS queries for rsp pools",
		Long: `Serve the DNS zone "rsp." on UDP and TCP at --listen:

  <pool>.<scope>.rsp.          A/AAAA: the IPs of the pool's PEs' tcp and udp
                               transports (addr HOST:PORT, HOST an IP), in the
                               order of the pool policy, at most --max
  _<pool>._tcp.<scope>.rsp.    SRV: port and target <pe_id>.<pool>.<scope>.rsp.
  _<pool>._udp.<scope>.rsp.    of each PE's tcp (udp) transport, priority =
                               rank in the policy's order; A/AAAA additionals
  <pe_id>.<pool>.<scope>.rsp.  A/AAAA of that PE

TTL --ttl; NXDOMAIN for a pool without members; REFUSED outside "rsp." and
for scopes not served (--scope, repeatable). Each (scope, pool) gets a
PoolCache on its first query, kept current by the change stream and read
afresh after a NATS reconnect or a name-server restart (within about a
second; a failed read is retried, and the cache answers with what it has
meanwhile); at most --caches of them are kept (least recently used goes
first), a cache of a pool without members at most --empty-ttl after its last
query.

Credentials: --creds FILE (for every scope), else DIR/auth/creds/<scope>/pu.creds
under --data when that file exists, else none (a name server run with
--insecure). Every flag can also be set by an environment variable: RSP_ and
the flag name in upper case with "-" as "_" (RSP_NATS, RSP_LISTEN, RSP_TTL).`,
		Example: `  rsp-dns --listen 127.0.0.1:8053
  dig @127.0.0.1 -p 8053 echo.default.rsp. A +short
  dig @127.0.0.1 -p 8053 _echo._tcp.default.rsp. SRV`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          daemon.RunE(func(ctx context.Context) error { return run(ctx, o, nil) }),
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.scopes, "scope", []string{events.DefaultScope}, "rsp scope `NAME` to serve (repeatable)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8053", "UDP and TCP `ADDR` to answer on")
	o.AddFlags(f, auth.RolePU, "used for every scope")
	f.DurationVar(&o.ttl, "ttl", time.Second, "TTL of the answers (whole seconds)")
	f.IntVar(&o.max, "max", 3, "at most this many A/AAAA (or SRV) records per answer")
	f.IntVar(&o.caches, "caches", 10000, "at most this many pool caches")
	f.DurationVar(&o.emptyTTL, "empty-ttl", 30*time.Second, "drop the cache of a pool without members after this long without a query")
	f.DurationVar(&o.timeout, "timeout", rspclient.DefaultTimeout, "bound for connecting and for filling a cache")
	return cmd
}

// run serves until ctx ends; ready, when set, gets the bound UDP and TCP
// addresses once both listen.
func run(ctx context.Context, o options, ready func(udp, tcp string)) error {
	log, err := o.Logger()
	if err != nil {
		return err
	}
	if len(o.scopes) == 0 {
		return errors.New("--scope: at least one")
	}
	for _, s := range o.scopes {
		if err := events.CheckScope(s); err != nil {
			return err
		}
	}
	if o.ttl < 0 || o.max < 1 || o.caches < 1 || o.timeout <= 0 || o.emptyTTL <= 0 {
		return errors.New("--ttl must be ≥ 0, --max and --caches ≥ 1, --timeout and --empty-ttl > 0")
	}
	clients := map[string]*rspclient.Client{}
	for _, scope := range o.scopes {
		if _, dup := clients[scope]; dup {
			continue
		}
		creds := o.CredsFor(scope, auth.RolePU)
		nc, err := o.Dial(ctx, "rsp-dns", creds, o.timeout, log)
		if err != nil {
			return fmt.Errorf("scope %s: %w", scope, err)
		}
		defer nc.Close()
		c, err := rspclient.New(nc, rspclient.WithScope(scope), rspclient.WithTimeout(o.timeout), rspclient.WithLogger(log))
		if err != nil {
			return err
		}
		clients[scope] = c
		log.Info("scope", "scope", scope, "nats", nc.ConnectedUrlRedacted(), "creds", creds)
	}
	cctx, cancel := context.WithCancel(context.Background())
	caches := newCacheSet(cctx, clients, o.caches, o.emptyTTL, log)
	defer func() {
		cancel()
		caches.closeAll()
	}()
	go caches.sweep(cctx)
	h := &handler{caches: caches, ttl: uint32((o.ttl + time.Second - 1) / time.Second), max: o.max, log: log}
	return serve(ctx, o.listen, h, log, ready)
}
