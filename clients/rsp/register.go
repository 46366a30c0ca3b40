package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

func newRegisterCmd(g *globals) *cobra.Command {
	var (
		addrs    []string
		id       string
		lifetime time.Duration
		pol      events.PolicyParams
		metas    []string
	)
	cmd := &cobra.Command{
		Use:   "register POOL --addr PROTO:ADDR [--addr ...]",
		Short: "Register a pool element and keep it registered until interrupted",
		Long: `Register a pool element (PE) in POOL and keep it registered: rsp prints the PE id
and "registered", renews the registration at a third of its lifetime, and on
SIGINT or SIGTERM deregisters the PE and exits 0. It exits 1 if the name server
refuses the registration, or if it is lost (refused or unanswered renewals for a
whole lifetime).

Draining: rsp register only registers a service that runs elsewhere, so on
SIGINT/SIGTERM it deregisters at once and exits; from then on no new client is
sent to the PE, and the service itself decides how long to go on serving the
clients it has. Stop rsp register first and the service after its clients are
done. (A PE built on rspclient.Serve, like services/echo, drains by itself.)

Each --addr is one transport: tcp:HOST:PORT, udp:HOST:PORT,
sctp:HOST:PORT, http:URL or nats:SUBJECT. Without --id the PE gets a random id;
with --id the same key (--key) can deregister it later from another process.

Policies (the pool's first PE sets it): ` + strings.Join(policy.Names(), ", ") + `.`,
		Example: `  rsp register echo --addr tcp:10.0.0.5:7 --id echo-1 --meta zone=a
  rsp register jobs --addr nats:svc.jobs.w1 --policy least_used --load 0.25 --lifetime 10s`,
		Args: exactArgs("POOL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pe, err := buildPE(addrs, id, lifetime, pol, metas)
			if err != nil {
				return err
			}
			nc, c, err := g.connect(auth.RolePE, true)
			if err != nil {
				return err
			}
			defer nc.Close()
			return runRegister(cmd.Context(), g, c, args[0], pe)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&addrs, "addr", nil, "transport `PROTO:ADDR` (tcp:HOST:PORT, udp:..., sctp:..., http:URL, nats:SUBJECT); repeatable, at least one")
	f.StringVar(&id, "id", "", "PE `ID` (default random)")
	f.DurationVar(&lifetime, "lifetime", events.DefaultLifetime, "registration lifetime without renewal (whole seconds, rounded up)")
	f.StringVar(&pol.Name, "policy", policy.Default, "pool policy `NAME` (the pool's first PE sets it)")
	f.IntVar(&pol.Weight, "weight", 0, "weight `N` ≥ 1 for weighted policies")
	f.IntVar(&pol.Priority, "priority", 0, "priority `N` ≥ 0 for priority policies")
	f.Float64Var(&pol.Load, "load", 0, "load `F`, a fraction in [0, 1], for load-based policies")
	f.Float64Var(&pol.Degradation, "degradation", 0, "load degradation `F` in [0, 1] per selection, for the *_degradation policies")
	f.Float64Var(&pol.LoadIncrement, "load-increment", 0, "load increment `F` in [0, 1], for the priority_least_used policies")
	f.StringArrayVar(&metas, "meta", nil, "metadata `KEY=VALUE`; repeatable")
	return cmd
}

func buildPE(addrs []string, id string, lifetime time.Duration, pol events.PolicyParams, metas []string) (rspclient.PE, error) {
	pe := rspclient.PE{ID: id, Lifetime: lifetime, Policy: pol}
	if len(addrs) == 0 {
		return pe, usagef("register needs at least one --addr PROTO:ADDR")
	}
	for _, a := range addrs {
		t, err := parseAddr(a)
		if err != nil {
			return pe, err
		}
		pe.Transports = append(pe.Transports, t)
	}
	for _, kv := range metas {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return pe, usagef("--meta %q is not KEY=VALUE", kv)
		}
		if pe.Meta == nil {
			pe.Meta = map[string]string{}
		}
		pe.Meta[k] = v
	}
	return pe, pe.Validate()
}

// parseAddr turns PROTO:REST into a transport: nats:SUBJECT, else an address.
func parseAddr(s string) (events.Transport, error) {
	proto, rest, ok := strings.Cut(s, ":")
	if !ok || proto == "" || rest == "" {
		return events.Transport{}, usagef("--addr %q is not PROTO:ADDR (tcp:HOST:PORT, nats:SUBJECT, ...)", s)
	}
	proto = strings.ToLower(proto)
	if proto == "nats" {
		return events.Transport{Proto: proto, Subject: rest}, nil
	}
	return events.Transport{Proto: proto, Addr: rest}, nil
}

func runRegister(ctx context.Context, g *globals, c *rspclient.Client, pool string, pe rspclient.PE) error {
	rctx, cancel := g.ctxTimeout(ctx)
	reg, err := c.Register(rctx, pool, pe)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s registered in pool %s\n", reg.ID(), reg.Pool())
	select {
	case <-ctx.Done():
	case <-reg.Done():
		return fmt.Errorf("registration of %s in pool %s ended: %w", reg.ID(), reg.Pool(), reg.Err())
	}
	// Interrupted: deregister with a fresh bound, as ctx has ended.
	dctx, cancel := g.ctxTimeout(context.Background())
	defer cancel()
	if err := reg.Deregister(dctx); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%s deregistered\n", reg.ID())
	return nil
}
