// Command gateway is an HTTP JSON front for rsp resolution, for scripts
// and clients that know nothing of rsp or NATS:
//
//	GET /v1/scopes/{scope}/pools/{pool}?max=N&exclude=a,b&affinity=x&hint.zone=a
//
// resolves pool in scope through the name servers (rspclient.Client.Resolve,
// answers signature-verified) and returns the protocol's answer JSON; errors
// are the protocol's {"error":{"code","message"}} with a matching HTTP status.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/daemon"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

type options struct {
	listen          string
	scopes          []string
	timeout         time.Duration
	shutdownTimeout time.Duration

	daemon.Client
}

func main() { daemon.Main("gateway", command()) }

func command() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Serve rsp resolution over HTTP JSON",
		Long: `Serve rsp resolution over HTTP for scripts:

  GET /v1/scopes/{scope}/pools/{pool}?max=N&exclude=a,b&affinity=x&hint.zone=a

asks the name servers of scope (request-reply on rsp.<scope>.resolve.<pool>,
answers checked against their signatures) and returns the protocol's answer
JSON. Errors are the protocol's {"error":{"code":...,"message":...}} with
status bad_request 400, forbidden 403, not_found 404, conflict/stale 409,
unavailable 503 (no name server answered). Scopes not given by --scope are
not_found. GET /healthz is 200 while every NATS connection is up.
--log-level debug logs every request.

Credentials, per scope: --creds FILE (one scope only), else
DIR/auth/creds/<scope>/pu.creds under --data when that file exists, else none
(a name server run with --insecure). Every flag can also be set by an
environment variable: RSP_ and the flag name in upper case with "-" as "_"
(RSP_LISTEN, RSP_NATS, RSP_SCOPE=a,b).`,
		Example: `  gateway --listen 127.0.0.1:8080 --scope default
  curl -s 'http://127.0.0.1:8080/v1/scopes/default/pools/echo?max=2'`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          daemon.RunE(func(ctx context.Context) error { return run(ctx, o, nil) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "HTTP listen `ADDR`")
	f.StringSliceVar(&o.scopes, "scope", []string{events.DefaultScope}, "rsp scope `NAME` to serve (repeatable or comma-separated)")
	o.AddFlags(f, auth.RolePU, "only with a single --scope")
	f.DurationVar(&o.timeout, "timeout", rspclient.DefaultTimeout, "bound for connecting and for each resolution")
	f.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, finish requests in flight at most this long")
	return cmd
}

// run serves until ctx ends, then shuts the HTTP server down within
// --shutdown-timeout. ready, if not nil, gets the listen address.
func run(ctx context.Context, o options, ready chan<- string) error {
	log, err := o.Logger()
	if err != nil {
		return err
	}
	if len(o.scopes) == 0 {
		return errors.New("--scope: at least one scope")
	}
	if o.Creds != "" && len(o.scopes) > 1 {
		return errors.New("--creds names one user: use it with a single --scope, or --data for several")
	}
	if o.timeout <= 0 || o.shutdownTimeout <= 0 {
		return errors.New("--timeout and --shutdown-timeout must be > 0")
	}
	g := &gateway{scopes: map[string]resolver{}, log: log}
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for _, scope := range o.scopes {
		if err := events.CheckScope(scope); err != nil {
			return err
		}
		if _, dup := g.scopes[scope]; dup {
			continue
		}
		creds := o.CredsFor(scope, auth.RolePU)
		nc, err := o.Dial(ctx, "rsp-gateway", creds, o.timeout, log)
		if err != nil {
			return fmt.Errorf("scope %s: %w", scope, err)
		}
		conns = append(conns, nc)
		copts := []rspclient.Option{rspclient.WithScope(scope), rspclient.WithTimeout(o.timeout), rspclient.WithLogger(log)}
		if creds != "" {
			copts = append(copts, rspclient.WithCreds(creds))
		}
		c, err := rspclient.New(nc, copts...)
		if err != nil {
			return fmt.Errorf("scope %s: %w", scope, err)
		}
		g.scopes[scope] = c
		log.Info("scope", "scope", scope, "nats", nc.ConnectedUrlRedacted(), "creds", creds)
	}
	g.healthy = func() error {
		for _, nc := range conns {
			if !nc.IsConnected() {
				return errors.New("NATS connection " + nc.Opts.Name + " is " + nc.Status().String())
			}
		}
		return nil
	}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           g.handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      o.timeout + 10*time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	addr := ln.Addr().String()
	log.Info("listening", "addr", addr, "scopes", o.scopes)
	fmt.Printf("rsp gateway listening on http://%s\n", addr)
	if ready != nil {
		ready <- addr
	}
	if err := daemon.ServeHTTP(ctx, srv, ln, log, o.shutdownTimeout); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
