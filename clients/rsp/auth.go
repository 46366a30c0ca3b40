package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/server"
)

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Manage the operator, accounts and users of an rsp installation",
		Long: `Manage who may use rsp: NATS's own decentralized JWT authorization. An
installation has one operator, a system account, and one account per scope,
kept in DIR/auth (--data DIR, the name server's data folder). Every user of a
scope gets a .creds file (user JWT + nkey seed) with the permissions of its
role:

  nameserver, admin  everything in the scope's account
  pu                 resolve, read and follow its pools (through the name
                     servers), report failures, call PEs' nats transports
  pe                 what a pu of its pools may, and register and deregister
                     in them, read the outcomes, serve its nats transports

pe and pu users have no JetStream API and receive replies on their own inbox
prefix _INBOX.<user key> only. 'rsp auth roles' prints the exact subjects.

'rsp auth init' creates the store and one .creds file per role and scope;
'rsp auth user' issues more users; 'rsp auth revoke' takes a user's rights
away at once, without restarting anything. Keep DIR/auth private: its seeds
can make any user.`,
		Example: `  rsp auth init --scope default --scope prod
  rsp auth user --role pe --pool echo --out echo-pe.creds
  rsp auth revoke UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for 'rsp auth'; see 'rsp auth --help'", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newAuthInitCmd(g), newAuthUserCmd(g), newAuthRevokeCmd(g), newAuthRolesCmd(), newAuthInboxCmd())
	return cmd
}

func newAuthInboxCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "inbox CREDS_FILE",
		Short: "Print the inbox prefix a user's connections must use",
		Long: `Print _INBOX.<user key>, the only inbox prefix a pe or pu user may receive
replies on, for the user of CREDS_FILE. Other NATS clients take it as an
option, e.g. nats --creds pu.creds --inbox-prefix "$(rsp auth inbox pu.creds)".`,
		Example: `  nats --creds .rsp/auth/creds/default/pu.creds --inbox-prefix "$(rsp auth inbox .rsp/auth/creds/default/pu.creds)" req rsp.default.resolve.echo ''`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("inbox takes CREDS_FILE, got %d argument(s); see 'rsp auth inbox --help'", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			_, kp, err := rspclient.LoadCreds(args[0])
			if err != nil {
				return err
			}
			pub, err := kp.PublicKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), events.InboxPrefix(pub))
			return err
		},
	}
}

func newAuthRolesCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "roles",
		Short: "Print each role's exact permissions (a Markdown table)",
		Long: `Print the publish and subscribe permissions each role's user JWT carries, as
'rsp auth init' and 'rsp auth user' issue them, for a user given one pool
(<pool>) and, for pu, every pool (*). <user> is the user's public key:
its inbox prefix is _INBOX.<user>. Everything not listed is denied.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), auth.PermissionsTable())
			return err
		},
	}
}

func newAuthInitCmd(g *globals) *cobra.Command {
	var scopes []string
	var limits string
	cmd := &cobra.Command{
		Use:   "init [--data DIR] [--scope NAME ...]",
		Short: "Create the operator, the system account and the scopes' accounts",
		Long: `Create the auth store in DIR/auth, or complete it: the operator, the system
account with its user (which pushes account updates to running servers), an
account for each scope with its signing key, and one .creds file per role of
each scope in DIR/auth/creds/<scope>/<role>.creds. What exists is kept, so
running it again changes nothing, and naming a new scope adds its account.
--scope is repeatable (or comma-separated); without it, the scope of RSP_SCOPE,
else "default". Prints where the creds files are.

Each scope account carries limits that the NATS servers enforce for all its
users together (default ` + auth.DefaultAccountLimits().String() + `).
--account-limits sets them for every scope account, NAME=N over the defaults
(-1: no limit); without it, accounts keep theirs. Running NATS servers pick
new limits up when they start again.`,
		Example: `  rsp auth init
  rsp auth init --data /var/lib/rsp --scope default --scope prod`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(scopes) == 0 {
				scopes = []string{g.scope}
			}
			var opts []auth.InitOption
			if cmd.Flags().Changed("account-limits") {
				l, err := auth.ParseAccountLimits(limits)
				if err != nil {
					return err
				}
				opts = append(opts, auth.WithAccountLimits(l))
			}
			st, err := auth.Init(g.storeDir(), scopes, opts...)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "auth store %s (operator %s)\n", st.Dir(), st.OperatorPublicKey())
			fmt.Fprintf(w, "system user\t%s\n", st.SystemCredsPath())
			for _, sc := range st.Scopes() {
				acc, err := st.AccountPublicKey(sc)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "scope %s (account %s)\n", sc, acc)
				for _, r := range auth.Roles() {
					fmt.Fprintf(w, "  %s\t%s\n", r, st.CredsPath(sc, r))
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringSliceVar(&scopes, "scope", nil, "scope `NAME` to have an account; repeatable")
	cmd.Flags().StringVar(&limits, "account-limits", "", "limits of every scope account, `NAME=N,...` over the defaults: connections, subscriptions, payload, streams, consumers (-1: no limit)")
	return cmd
}

func newAuthUserCmd(g *globals) *cobra.Command {
	var (
		role    string
		pools   []string
		expires time.Duration
		out     string
	)
	cmd := &cobra.Command{
		Use:   "user --role pe|pu|admin|nameserver [--pool POOL ...] [--expires 24h] [--out FILE]",
		Short: "Issue a user of a scope and write its creds",
		Long: `Issue a new user of the scope (--scope) with a role, signed by the scope
account's signing key, and write its .creds file: to --out FILE (mode 0600,
then print the file and the user's public key) or else to stdout (the public
key then goes to stderr). Keep the public key: 'rsp auth revoke' needs it.

Roles: pe registers and deregisters in its --pool pools (at least one; '*' is
every pool of the scope) and reads their outcomes; pu resolves its pools
(default every pool), reports failures, follows changes and reads the name
space; nameserver and admin may do everything in the scope's account (no
--pool). --expires makes the user expire after that long (default never).`,
		Example: `  rsp auth user --role pe --pool echo --out echo-pe.creds
  rsp auth user --role pe --pool '*' --expires 720h --out pe-all.creds
  rsp --scope prod auth user --role pu --pool echo --pool jobs > pu.creds`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role == "" {
				return usagef("--role is required: pe, pu, admin or nameserver")
			}
			r, err := auth.ParseRole(role)
			if err != nil {
				return err
			}
			st, err := auth.Open(g.storeDir())
			if err != nil {
				return err
			}
			creds, pub, err := st.IssueUser(g.scope, r, pools, expires)
			if err != nil {
				return err
			}
			what := fmt.Sprintf("role %s, scope %s", r, g.scope)
			switch {
			case slices.Contains(pools, auth.AllPools):
				what += ", all pools"
			case len(pools) > 0:
				what += ", pools " + strings.Join(pools, ",")
			}
			if expires > 0 {
				what += ", expires " + time.Now().Add(expires).UTC().Format(time.RFC3339)
			}
			if out == "" {
				if _, err := g.stdout.Write(creds); err != nil {
					return err
				}
				fmt.Fprintf(g.stderr, "user %s (%s)\n", pub, what)
				return nil
			}
			if err := writeSecret(out, creds); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s\nuser %s (%s)\n", out, pub, what)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "", "the user's `ROLE`: pe, pu, admin or nameserver")
	f.StringSliceVar(&pools, "pool", nil, "`POOL` the user may use ('*' for all); repeatable, for pe and pu")
	f.DurationVar(&expires, "expires", 0, "the user expires after this `DURATION` (0: never)")
	f.StringVar(&out, "out", "", "write the creds to `FILE` (mode 0600) instead of stdout")
	return cmd
}

// writeSecret writes data to path with mode 0600, also when it exists.
func writeSecret(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newAuthRevokeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke USER_KEY",
		Short: "Revoke a user of a scope at once",
		Long: `Revoke the user with public key USER_KEY (U..., as 'rsp auth user' printed it)
in the scope (--scope): every JWT issued to it so far is refused. rsp adds the
user to the revocations of the scope's account JWT, saves it in DIR/auth, and
pushes it to the running NATS server (--nats) as the system user: the server
closes the user's connections and refuses new ones, without a restart. It also
writes the account JWT to the bucket rsp_auth (as the scope's admin user),
where the name servers pick it up and refuse events carrying the revoked JWT.
If no server is reachable, the revocation is saved and applies when the name
server starts next.`,
		Example: `  rsp auth revoke UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4
  rsp --nats nats://ns1:4222 --scope prod auth revoke UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("revoke takes USER_KEY, got %d argument(s); see 'rsp auth revoke --help'", len(args))
			}
			if !nkeys.IsValidPublicUserKey(args[0]) {
				return events.Errf("user_key", "%q is not a public user nkey (U...)", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			st, err := auth.Open(g.storeDir())
			if err != nil {
				return err
			}
			if err := st.Revoke(g.scope, key); err != nil {
				return err
			}
			tok, err := st.AccountJWT(g.scope)
			if err != nil {
				return err
			}
			saved := fmt.Sprintf("revoked %s in scope %s (saved in %s)", key, g.scope, st.Dir())
			nc, err := g.dial(cmd.Context(), "rsp-cli-auth", st.SystemCredsPath(), 0)
			if err != nil {
				if unreachable(err) {
					fmt.Fprintf(g.stdout, "%s; no server reachable at %s: it applies when the name server starts next\n", saved, g.natsURL)
					return nil
				}
				return fmt.Errorf("%s, but could not push it to %s: %w; it applies when the name server starts next", saved, g.natsURL, err)
			}
			defer nc.Close()
			ctx, cancel := g.ctxTimeout(cmd.Context())
			defer cancel()
			if err := auth.PushAccount(ctx, nc, tok); err != nil {
				return fmt.Errorf("%s, but %w", saved, err)
			}
			url := nc.ConnectedUrlRedacted()
			names, err := updateAuthBucket(ctx, g, st, tok)
			if err != nil {
				return fmt.Errorf("%s and applied by the server at %s, but the name servers did not get it: %w", saved, url, err)
			}
			fmt.Fprintf(g.stdout, "%s; the server at %s applied it: the user's connections are closed and new ones refused%s\n", saved, url, names)
			return nil
		},
	}
	return cmd
}

// updateAuthBucket writes the scope's new account JWT to the bucket
// rsp_auth (key = scope), where the name servers watch it and check
// events' Rsp-Jwt against it. It connects as the scope's admin user. A
// missing bucket (no name server with JWT authorization has run yet) is
// fine: name servers read the account JWT from the store when they start.
func updateAuthBucket(ctx context.Context, g *globals, st *auth.Store, tok string) (string, error) {
	nc, err := g.dial(ctx, "rsp-cli-auth", st.CredsPath(g.scope, auth.RoleAdmin), 0)
	if err != nil {
		return "", fmt.Errorf("connect as admin of scope %s: %w", g.scope, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	kv, err := js.KeyValue(ctx, server.AuthBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("bucket %s: %w", server.AuthBucket, err)
	}
	if _, err := kv.Put(ctx, g.scope, []byte(tok)); err != nil {
		return "", fmt.Errorf("write %s.%s: %w", server.AuthBucket, g.scope, err)
	}
	return fmt.Sprintf(", and the name servers got it (%s.%s)", server.AuthBucket, g.scope), nil
}

// unreachable reports whether a connect error means no server listens
// (as opposed to one that refused us).
func unreachable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.Is(err, nats.ErrNoServers) || errors.As(err, &oe) || (errors.As(err, &ne) && ne.Timeout())
}
