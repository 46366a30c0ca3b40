// Command echo is an rsp pool element that echoes requests: a small
// daemon built on rspclient.Serve, for trying out and testing sessions,
// failover, state cookies and draining.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nuid"
	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/daemon"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

type options struct {
	scope        string
	pool         string
	id           string
	keyFile      string
	lifetime     time.Duration
	drainTimeout time.Duration
	idle         time.Duration
	workers      int
	timeout      time.Duration

	daemon.Client
}

func main() { daemon.Main("echo", command()) }

func command() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "echo",
		Short: "Run an rsp echo pool element",
		Long: `Run a pool element (PE) of pool --pool (default "echo") that answers every
request with its data. It serves requests on its NATS service subject
rsp.<scope>.svc.<pool>.<pe_id>, registers it as its "nats" transport with the
name servers and renews the registration at a third of --lifetime.

State cookie: each reply sets the cookie (header Rsp-Cookie) "n=<count>", the
number of requests of that session (header Rsp-Session) seen so far. When a
session comes over from another PE, its cookie carries the count and echo
goes on from there: the session's state survives the failover.

SIGINT or SIGTERM drain the PE: it deregisters at once (no new session selects
it), keeps answering the sessions that stay with it until none sent a request
for --idle or --drain-timeout passed, then exits 0.

It never gives up while retrying can help: when no name server answers, the
event stream elects a leader or the NATS connection is down (it reconnects by
itself), it keeps registering (the first time too), with backoff, for as long
as that lasts, serving all along, and logs it: a warning when renewals begin to fail and when the lifetime ran
out unrenewed (the name servers may have taken the PE out), an info line when
it is registered again. It exits 1 only when its registration is refused for a
reason retrying cannot change: no permission (forbidden), the PE id belongs to
another key (conflict), a bad request.

Credentials follow the rsp CLI: --creds FILE, else DIR/auth/creds/<scope>/pe.creds
under --data when that file exists, else none (a name server run with
--insecure); without creds events are signed with the --key nkey, created on
first use. Every flag can also be set by an environment variable: RSP_ and the
flag name in upper case with "-" as "_" (RSP_NATS, RSP_POOL, RSP_DRAIN_TIMEOUT).`,
		Example: `  echo --id echo-1
  echo --nats nats://10.0.0.1:4222 --pool echo --id echo-2 --lifetime 2s --drain-timeout 1m
  rsp call echo hello    # from a pool user`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          daemon.RunE(func(ctx context.Context) error { return run(ctx, o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.scope, "scope", events.DefaultScope, "rsp scope `NAME`")
	f.StringVar(&o.pool, "pool", "echo", "pool `HANDLE` to serve")
	f.StringVar(&o.id, "id", "", "PE `ID` (default random)")
	o.AddFlags(f, auth.RolePE, "")
	f.StringVar(&o.keyFile, "key", defaultKeyFile(), "user nkey seed `FILE` that signs events when there are no credentials, created on first use")
	f.DurationVar(&o.lifetime, "lifetime", events.DefaultLifetime, "registration lifetime without renewal (whole seconds, rounded up)")
	f.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGINT/SIGTERM, serve the remaining sessions at most this long")
	f.DurationVar(&o.idle, "idle", rspclient.DefaultIdle, "on SIGINT/SIGTERM, stop once no request came for this long")
	f.IntVar(&o.workers, "workers", rspclient.DefaultWorkers, "requests handled at once")
	f.DurationVar(&o.timeout, "timeout", rspclient.DefaultTimeout, "bound for connecting and for each wait (registration outcome, ...)")
	return cmd
}

func defaultKeyFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "rsp", "user.nk")
}

func run(ctx context.Context, o options) error {
	log, err := o.Logger()
	if err != nil {
		return err
	}
	if err := events.CheckScope(o.scope); err != nil {
		return err
	}
	if err := events.CheckPool(o.pool); err != nil {
		return err
	}
	if o.drainTimeout < 0 || o.idle <= 0 || o.workers < 1 || o.timeout <= 0 {
		return errors.New("--drain-timeout must be ≥ 0, --idle and --timeout > 0, --workers ≥ 1")
	}
	creds := o.CredsFor(o.scope, auth.RolePE)
	copts := []rspclient.Option{rspclient.WithScope(o.scope), rspclient.WithTimeout(o.timeout), rspclient.WithLogger(log)}
	switch {
	case creds != "":
		copts = append(copts, rspclient.WithCreds(creds))
	case o.keyFile != "":
		kp, err := rspclient.LoadOrCreateKey(o.keyFile)
		if err != nil {
			return err
		}
		copts = append(copts, rspclient.WithKey(kp))
	}
	nc, err := o.Dial(ctx, "rsp-echo", creds, o.timeout, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	c, err := rspclient.New(nc, copts...)
	if err != nil {
		return err
	}
	e := &echo{log: log, sessions: map[string]*session{}}
	pe := rspclient.PE{ID: cmp.Or(o.id, nuid.Next()), Lifetime: o.lifetime} // the same id for every attempt
	var srv *rspclient.Server
	err = c.KeepTrying(ctx, "serve", func(ctx context.Context) error {
		var err error
		srv, err = c.Serve(ctx, o.pool, pe, e.handle, rspclient.WithWorkers(o.workers), rspclient.WithIdle(o.idle))
		return err
	}, func(err error) {
		log.Warn("not registered yet: retrying", "pool", o.pool, "pe_id", pe.ID, "err", err)
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return deregister(c, o, pe.ID, log)
	case err != nil:
		return err
	}
	log = log.With("pool", o.pool, "pe_id", srv.ID())
	log.Info("serving", "subject", srv.Subject(), "nats", nc.ConnectedUrlRedacted(), "creds", creds, "lifetime", o.lifetime)
	fmt.Printf("%s serving pool %s on %s\n", srv.ID(), o.pool, srv.Subject())
	go e.sweep(ctx, 10*time.Minute)

	select {
	case <-srv.Registration().Done(): // refused for good
		err := srv.Registration().Err()
		log.Error("registration ended", "err", err)
		cctx, cancel := context.WithTimeout(context.Background(), o.timeout)
		defer cancel()
		_ = srv.Close(cctx)
		return fmt.Errorf("registration of %s in pool %s ended: %w", srv.ID(), o.pool, err)
	case <-ctx.Done():
	}
	log.Info("draining", "drain_timeout", o.drainTimeout, "idle", o.idle)
	start := time.Now()
	dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout+2*o.timeout)
	defer cancel()
	if err := srv.Drain(dctx, o.drainTimeout); err != nil {
		log.Warn("drain", "err", err)
	}
	log.Info("drained", "took", time.Since(start).Round(time.Millisecond), "requests", e.requests())
	return nil
}

// deregister takes out the PE at SIGINT or SIGTERM before a registration
// got through: one that timed out may have been stored all the same.
func deregister(c *rspclient.Client, o options, id string, log *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	err := c.Deregister(ctx, o.pool, id)
	var ee *events.Error
	switch {
	case err == nil:
		log.Info("deregistered", "pool", o.pool, "pe_id", id)
	case errors.As(err, &ee) && ee.Code == events.CodeNotFound: // never stored
	case rspclient.IsPermanent(err):
		return err
	default:
		log.Warn("not deregistered: it leaves the pool once its lifetime runs out", "pool", o.pool, "pe_id", id, "err", err)
	}
	return nil
}

// echo answers with the request's data and counts each session's requests
// in its state cookie.
type echo struct {
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
	total    int64
}

type session struct {
	n    int64
	seen time.Time
}

func (e *echo) handle(_ context.Context, req *rspclient.Request) (*rspclient.Response, error) {
	fromCookie := parseCookie(req.Cookie)
	e.mu.Lock()
	e.total++
	s := e.sessions[req.SessionID]
	if s == nil {
		s = &session{}
		if req.SessionID != "" {
			e.sessions[req.SessionID] = s
		}
		if fromCookie > 0 {
			e.log.Info("session taken over from its cookie", "session", req.SessionID, "n", fromCookie)
		}
	}
	s.n = max(s.n, fromCookie) + 1
	s.seen = time.Now()
	n := s.n
	e.mu.Unlock()
	e.log.Debug("request", "session", req.SessionID, "n", n, "bytes", len(req.Data))
	return &rspclient.Response{Data: req.Data, Cookie: "n=" + strconv.FormatInt(n, 10)}, nil
}

// parseCookie reads the count of a cookie "n=<count>"; 0 if none.
func parseCookie(c string) int64 {
	v, ok := strings.CutPrefix(strings.TrimSpace(c), "n=")
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func (e *echo) requests() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.total
}

// sweep forgets sessions idle for longer than ttl (their cookies still
// carry their counts), until ctx ends.
func (e *echo) sweep(ctx context.Context, ttl time.Duration) {
	t := time.NewTicker(cmp.Or(ttl/10, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.mu.Lock()
			for id, s := range e.sessions {
				if now.Sub(s.seen) > ttl {
					delete(e.sessions, id)
				}
			}
			e.mu.Unlock()
		}
	}
}
