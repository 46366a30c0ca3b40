package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

func newCallCmd(g *globals) *cobra.Command {
	var (
		count    int
		interval time.Duration
		attempt  time.Duration
		hint     map[string]string
	)
	cmd := &cobra.Command{
		Use:   "call POOL DATA",
		Short: "Send requests to a pool through a session, with failover",
		Long: `Send DATA to a pool element (PE) of POOL through a session and print, for each
reply, the PE that answered, the reply and the session's state cookie:

  echo-1 hi cookie=n=1

The session selects a PE with the pool's policy from a local copy of the pool,
sends the request to the PE's "nats" transport (rsp.<scope>.svc.<pool>.<pe_id>
for PEs built on rspclient.Serve, like services/echo) and stays with that PE.
If the PE does not answer (no responders, or no reply within
--attempt-timeout), rsp reports it to the name servers and fails over to the
next PE, with backoff, within --timeout per request; the new PE gets the last
cookie. With --count N it sends N requests, --interval apart, in one session;
it stops at the first request no PE answered (exit 1).`,
		Example: `  rsp call echo hi
  rsp call echo hi --count 100 --interval 100ms   # kill PEs meanwhile`,
		Args: exactArgs("POOL", "DATA"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 1 {
				return usagef("--count %d must be ≥ 1", count)
			}
			if interval < 0 || attempt <= 0 {
				return usagef("--interval must be ≥ 0 and --attempt-timeout > 0")
			}
			nc, c, err := g.connect(auth.RolePU, true)
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			sctx, cancel := g.ctxTimeout(ctx)
			s, err := c.NewSession(sctx, args[0], rspclient.WithAttemptTimeout(attempt),
				rspclient.WithSessionTimeout(g.timeout), rspclient.WithHint(hint))
			cancel()
			if err != nil {
				return err
			}
			defer s.Close()
			return runCalls(ctx, g, s, []byte(args[1]), count, interval)
		},
	}
	f := cmd.Flags()
	f.IntVar(&count, "count", 1, "send `N` requests in the session")
	f.DurationVar(&interval, "interval", time.Second, "pause between requests with --count")
	f.DurationVar(&attempt, "attempt-timeout", rspclient.DefaultAttemptTimeout, "a PE that does not reply within this counts as failed")
	f.StringToStringVar(&hint, "hint", nil, "selection hint `KEY=VALUE` for the policy, e.g. zone=a; repeatable")
	return cmd
}

func runCalls(ctx context.Context, g *globals, s *rspclient.Session, data []byte, count int, interval time.Duration) error {
	for i := range count {
		if i > 0 {
			t := time.NewTimer(interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil // interrupted between requests: done
			case <-t.C:
			}
		}
		start := time.Now()
		r, err := s.Request(ctx, data)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		g.log.Debug("reply", "pe_id", r.PEID, "took", time.Since(start))
		if r.Cookie != "" {
			fmt.Fprintf(g.stdout, "%s %s cookie=%s\n", r.PEID, r.Data, r.Cookie)
		} else {
			fmt.Fprintf(g.stdout, "%s %s\n", r.PEID, r.Data)
		}
	}
	return nil
}
