package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nuid"
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
SIGINT or SIGTERM deregisters the PE (within --timeout) and exits 0.

It never gives up while retrying can help: when no NATS server is up yet (it
keeps connecting, with backoff), no name server answers, the event stream
elects a leader or the connection is down (it reconnects by itself), it keeps
registering, with backoff, for as long as that lasts, also for the first
registration, and prints each change of state on a line of its own:
  ID retrying: ERR         renewals fail; the lifetime has not run out yet
  ID lost: ERR             the lifetime ran out unrenewed: the name servers may
                           have taken the PE out; registering again
  ID registered again in pool POOL
It exits 1 only when the registration is refused for a reason retrying cannot
change: no permission (forbidden), the PE id belongs to another key (conflict),
a bad request.

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
			// A PE waits for NATS as it waits for the name servers: it
			// keeps trying until it is interrupted.
			nc, c, err := g.connectRetrying(cmd.Context(), auth.RolePE, true, -1)
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
	if pe.ID == "" {
		pe.ID = nuid.Next() // the same id for every attempt
	}
	reg, err := registerFirst(ctx, g, c, pool, pe)
	if err != nil {
		return err
	}
	// Interrupted: deregister with a fresh bound, as ctx has ended.
	stop := func(deregister func(context.Context) error) error {
		dctx, cancel := g.ctxTimeout(context.Background())
		defer cancel()
		return deregistered(g, pe.ID, deregister(dctx))
	}
	if reg == nil {
		// Before a registration got through: one that timed out may
		// have been stored all the same.
		return stop(func(ctx context.Context) error { return c.Deregister(ctx, pool, pe.ID) })
	}
	fmt.Fprintf(g.stdout, "%s registered in pool %s\n", reg.ID(), reg.Pool())
	states := reg.StateChanged()
	last := rspclient.Registered
	for {
		select {
		case <-ctx.Done():
			return stop(reg.Deregister)
		case sc := <-states:
			if sc.State == last {
				continue
			}
			last = sc.State
			switch sc.State {
			case rspclient.Registered:
				fmt.Fprintf(g.stdout, "%s registered again in pool %s\n", reg.ID(), reg.Pool())
			case rspclient.Ended:
				return fmt.Errorf("registration of %s in pool %s ended: %w", reg.ID(), reg.Pool(), reg.Err())
			default:
				fmt.Fprintf(g.stdout, "%s %s: %v\n", reg.ID(), sc.State, sc.Err)
			}
		}
	}
}

// registerFirst registers pe, again and again while that fails for a
// reason retrying can mend, until it is accepted, refused for good (the
// error) or ctx ends (nil, nil). The first failure is printed as a
// "retrying" line.
func registerFirst(ctx context.Context, g *globals, c *rspclient.Client, pool string, pe rspclient.PE) (*rspclient.Registration, error) {
	var reg *rspclient.Registration
	err := c.KeepTrying(ctx, "register", func(ctx context.Context) error {
		var err error
		reg, err = c.Register(ctx, pool, pe)
		return err
	}, func(err error) {
		fmt.Fprintf(g.stdout, "%s %s: %v\n", pe.ID, rspclient.Retrying, err)
	})
	if err != nil && ctx.Err() != nil {
		return nil, nil
	}
	return reg, err
}

// deregistered reports the outcome err of the deregistration of id, at
// SIGINT or SIGTERM: an error only for a refusal retrying cannot change.
// When no name server answered in time, the PE leaves the pool once its
// lifetime runs out.
func deregistered(g *globals, id string, err error) error {
	var ee *events.Error
	switch {
	case err == nil:
		fmt.Fprintf(g.stdout, "%s deregistered\n", id)
	case errors.As(err, &ee) && ee.Code == events.CodeNotFound: // was never stored
	case rspclient.IsPermanent(err):
		return err
	default:
		fmt.Fprintf(g.stderr, "rsp: %s not deregistered (%s); it leaves the pool once its lifetime runs out\n", id, oneLine(err.Error()))
	}
	return nil
}
