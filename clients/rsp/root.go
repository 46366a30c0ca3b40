package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

// globals are the persistent flags every command shares.
type globals struct {
	stdout, stderr io.Writer

	natsURL string
	scope   string
	keyFile string
	creds   string
	data    string
	timeout time.Duration
	verbose bool

	tlsCA, tlsCert, tlsKey string

	log *slog.Logger
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "rsp",
		Short: "Reliable Server Pooling on NATS",
		Long: `rsp is the command-line client of rsp, Reliable Server Pooling (IETF RSerPool)
on NATS. Pool elements (PEs) register under a pool handle with the name servers
and stay registered while they renew; pool users resolve a pool handle into PEs
chosen by the pool's policy, watch a pool's members change, and report PEs that
failed them.

Credentials: with --creds FILE (a NATS .creds file) events are signed with its
nkey and carry its JWT. Without --creds, rsp looks for the credentials of the
command's role in the name server's data folder (--data, default .rsp):
DIR/auth/creds/<scope>/pe.creds for register and deregister, pu.creds for the
rest. Without either (a name server run with --insecure), events are signed
with your own user nkey (--key, created on first use).

Exit status: 0 on success, 1 on failure, 2 on a usage error (unknown command or
flag, wrong arguments, a name that breaks the protocol's rules).`,
		Example: `  rsp register echo --addr tcp:10.0.0.5:7 --id echo-1 &
  rsp resolve echo --max 2
  rsp --nats nats://ns1:4222,nats://ns2:4222 --scope prod pools`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				hint := ""
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					hint = fmt.Sprintf(" (did you mean %q?)", s[0])
				}
				return usagef("unknown command %q%s; see 'rsp --help'", args[0], hint)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return g.setup()
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SuggestionsMinimumDistance = 2
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	f := root.PersistentFlags()
	f.StringVar(&g.natsURL, "nats", envOr("RSP_NATS", nats.DefaultURL), "NATS server `URL`s, comma-separated (env RSP_NATS)")
	f.StringVar(&g.scope, "scope", envOr("RSP_SCOPE", events.DefaultScope), "rsp scope `NAME` (env RSP_SCOPE)")
	f.StringVar(&g.creds, "creds", os.Getenv("RSP_CREDS"), "NATS credentials `FILE` (env RSP_CREDS)")
	f.StringVar(&g.data, "data", envOr("RSP_DATA", ".rsp"), "the name server's data `DIR`: credentials are looked up in DIR/auth (env RSP_DATA)")
	f.StringVar(&g.tlsCA, "tls-ca", os.Getenv("RSP_TLS_CA"), "PEM CA `FILE` that verifies the NATS servers (env RSP_TLS_CA)")
	f.StringVar(&g.tlsCert, "tls-cert", os.Getenv("RSP_TLS_CERT"), "PEM client certificate `FILE`, for servers that verify clients (env RSP_TLS_CERT)")
	f.StringVar(&g.tlsKey, "tls-key", os.Getenv("RSP_TLS_KEY"), "PEM private key `FILE` of --tls-cert (env RSP_TLS_KEY)")
	f.StringVar(&g.keyFile, "key", envOr("RSP_KEY", defaultKeyFile()), "user nkey seed `FILE` that signs events, created on first use (env RSP_KEY)")
	f.DurationVar(&g.timeout, "timeout", rspclient.DefaultTimeout, "bound for connecting and for each wait")
	f.BoolVarP(&g.verbose, "verbose", "v", false, "debug logs on stderr")

	root.AddCommand(
		newRegisterCmd(g),
		newDeregisterCmd(g),
		newResolveCmd(g),
		newWatchCmd(g),
		newPoolsCmd(g),
		newReportCmd(g),
		newCallCmd(g),
		newAuthCmd(g),
		newBenchCmd(g),
		newChaosCmd(g),
	)
	return root
}

func envOr(name, def string) string { return cmp.Or(os.Getenv(name), def) }

func defaultKeyFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "rsp", "user.nk")
}

func (g *globals) setup() error {
	level := slog.LevelError
	if g.verbose {
		level = slog.LevelDebug
	}
	g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
	if g.timeout <= 0 {
		return usagef("--timeout %s must be > 0", g.timeout)
	}
	if err := events.CheckScope(g.scope); err != nil {
		return err
	}
	if strings.TrimSpace(g.natsURL) == "" {
		return usagef("--nats is empty")
	}
	return nil
}

// storeDir is where the installation's auth store lives: <data>/auth.
func (g *globals) storeDir() string { return filepath.Join(g.data, "auth") }

// credsFor returns the credentials file for a command of role: --creds,
// or the role's file in the data folder when there is one, or "".
func (g *globals) credsFor(role auth.Role) string {
	return auth.FindCreds(g.creds, g.data, g.scope, role)
}

// dial connects to --nats with creds (may be empty) and the TLS flags;
// retry bounds how long the first connect is tried (natsconn.Config).
func (g *globals) dial(ctx context.Context, name, creds string, retry time.Duration) (*nats.Conn, error) {
	cfg := natsconn.Config{URLs: g.natsURL, Name: name, Creds: creds, Timeout: g.timeout, Retry: retry, Logger: g.log}
	var err error
	if cfg.TLS, err = natsconn.TLSFiles(g.tlsCA, g.tlsCert, g.tlsKey); err != nil {
		return nil, err
	}
	return natsconn.Dial(ctx, cfg)
}

// connect connects to NATS as role and makes a client. With credentials
// their nkey signs; without, a command whose signature must name a lasting
// identity (stableKey: registrations, failure reports) signs with the --key
// file, and the others with a throwaway key.
func (g *globals) connect(role auth.Role, stableKey bool) (*nats.Conn, *rspclient.Client, error) {
	return g.connectRetrying(context.Background(), role, stableKey, 0)
}

// connectRetrying is connect whose first connect is retried for up to
// retry (negative: until ctx ends), for commands that run for long.
func (g *globals) connectRetrying(ctx context.Context, role auth.Role, stableKey bool, retry time.Duration) (*nats.Conn, *rspclient.Client, error) {
	creds := g.credsFor(role)
	opts := []rspclient.Option{rspclient.WithScope(g.scope), rspclient.WithTimeout(g.timeout), rspclient.WithLogger(g.log)}
	switch {
	case creds != "":
		opts = append(opts, rspclient.WithCreds(creds))
	case stableKey:
		if g.keyFile == "" {
			return nil, nil, usagef("--key is not set and there is no user config directory")
		}
		kp, err := rspclient.LoadOrCreateKey(g.keyFile)
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, rspclient.WithKey(kp))
	}
	nc, err := g.dial(ctx, "rsp-cli", creds, retry)
	if err != nil {
		return nil, nil, err
	}
	g.log.Debug("connected", "url", nc.ConnectedUrlRedacted(), "creds", creds)
	c, err := rspclient.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, c, nil
}

// exactArgs is cobra.ExactArgs with a usage error that names the
// arguments; POOL and PE_ID are checked against the protocol's name rules
// before anything connects.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			want := strings.Join(names, " ")
			if want == "" {
				want = "no arguments"
			}
			return usagef("%s takes %s, got %d argument(s); see 'rsp %s --help'",
				cmd.Name(), want, len(args), cmd.Name())
		}
		for i, name := range names {
			var err error
			switch name {
			case "POOL":
				err = events.CheckPool(args[i])
			case "PE_ID":
				err = events.CheckPEID(args[i])
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// transports formats a PE's transports as proto:addr, comma-separated.
func transports(ts []events.Transport) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Proto + ":" + cmp.Or(t.Addr, t.Subject)
	}
	return strings.Join(parts, ",")
}

// ctxTimeout bounds ctx by the --timeout.
func (g *globals) ctxTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}
