// Command authbucket puts each scope's account JWT from an rsp auth store
// into the key-value bucket rsp_auth of the scope's account, creating the
// bucket when it is missing (with the settings the name server uses).
//
// A name server started with --nats and --creds finds the account JWT it
// checks events against only in that bucket, so on a fresh NATS cluster
// run this once before the first name server (deploy/local/cluster.sh
// does). It connects as each scope's admin user, never overwrites a newer
// JWT (say, one that `rsp auth revoke` wrote), and changes nothing when
// the bucket is current, so running it again is harmless.
//
// It reads the account JWT and the admin creds from the auth store
// (--data DIR, every scope of DIR/auth) or, where the store's seeds must
// not go (a Kubernetes Job), from --account-jwt and --creds for one
// --scope.
//
//	go run ./deploy/authbucket --nats nats://10.0.0.1:4222 --data /var/lib/rsp --replicas 3
//	authbucket --nats nats://nats:4222 --scope default --account-jwt account.jwt --creds admin.creds --replicas 3
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/server"
)

func main() {
	var (
		urls     = flag.String("nats", envOr("RSP_NATS", "nats://127.0.0.1:4222"), "NATS server URLs, comma-separated (env RSP_NATS)")
		data     = flag.String("data", envOr("RSP_DATA", ".rsp"), "data `DIR`: DIR/auth is the store that 'rsp auth init' made (env RSP_DATA)")
		scopes   = flag.String("scope", "", "comma-separated scopes (default: every scope of the store)")
		replicas = flag.Int("replicas", 1, "replicas of the bucket when it is created (as the name servers' --replicas)")
		acctJWT  = flag.String("account-jwt", "", "instead of --data: the scope's account JWT `FILE` (DIR/auth/accounts/<scope>/account.jwt); needs --creds and one --scope")
		creds    = flag.String("creds", "", "instead of --data: creds `FILE` of the scope's admin user (DIR/auth/creds/<scope>/admin.creds)")
		timeout  = flag.Duration("timeout", 30*time.Second, "bound for connecting and for each scope")
	)
	flag.Parse()
	if err := run(*urls, *data, *scopes, *acctJWT, *creds, *replicas, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "authbucket:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// source is where one scope's account JWT and admin creds come from.
type source struct {
	scope, jwt, creds string
}

func run(urls, data, scopeList, acctJWT, creds string, replicas int, timeout time.Duration) error {
	var srcs []source
	if acctJWT != "" || creds != "" {
		if acctJWT == "" || creds == "" || scopeList == "" || strings.Contains(scopeList, ",") {
			return fmt.Errorf("--account-jwt and --creds go together, with one --scope")
		}
		b, err := os.ReadFile(acctJWT)
		if err != nil {
			return err
		}
		srcs = append(srcs, source{scope: scopeList, jwt: strings.TrimSpace(string(b)), creds: creds})
	} else {
		st, err := auth.Open(filepath.Join(data, "auth"))
		if err != nil {
			return err
		}
		scopes := st.Scopes()
		if scopeList != "" {
			scopes = strings.Split(scopeList, ",")
		}
		for _, sc := range scopes {
			tok, err := st.AccountJWT(sc)
			if err != nil {
				return err
			}
			srcs = append(srcs, source{scope: sc, jwt: tok, creds: st.CredsPath(sc, auth.RoleAdmin)})
		}
	}
	for _, src := range srcs {
		if _, err := jwt.DecodeAccountClaims(src.jwt); err != nil {
			return fmt.Errorf("scope %s: not an account JWT: %w", src.scope, err)
		}
		msg, err := retry(timeout, func(ctx context.Context) (string, error) {
			return putScope(ctx, urls, src, replicas)
		})
		if err != nil {
			return fmt.Errorf("scope %s: %w", src.scope, err)
		}
		fmt.Printf("scope %s: %s\n", src.scope, msg)
	}
	return nil
}

// attemptTimeout bounds one attempt. A JetStream API request made while a
// fresh cluster is still settling (no meta leader yet, routes being
// replaced) may get no answer at all, so each attempt has its own bound
// and a new attempt follows, until the overall timeout.
const attemptTimeout = 5 * time.Second

func retry(timeout time.Duration, f func(context.Context) (string, error)) (string, error) {
	deadline := time.Now().Add(timeout)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), min(time.Until(deadline), attemptTimeout))
		msg, err := f(ctx)
		cancel()
		if err == nil {
			return msg, nil
		}
		if time.Until(deadline) < time.Second {
			return "", fmt.Errorf("%w (after %d attempts)", err, attempt)
		}
		fmt.Fprintf(os.Stderr, "authbucket: attempt %d: %v; trying again\n", attempt, err)
		time.Sleep(500 * time.Millisecond)
	}
}

func putScope(ctx context.Context, urls string, src source, replicas int) (string, error) {
	scope, tok := src.scope, src.jwt
	nc, err := natsconn.Dial(ctx, natsconn.Config{
		URLs: urls, Name: "rsp-authbucket", Creds: src.creds, Retry: attemptTimeout,
	})
	if err != nil {
		return "", err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", err
	}
	kv, err := js.KeyValue(ctx, server.AuthBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: server.AuthBucket, History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
			Description: "rsp: the current account JWT of each scope (key = scope)",
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, server.AuthBucket)
		}
	}
	if err != nil {
		return "", fmt.Errorf("bucket %s: %w", server.AuthBucket, err)
	}
	cur, err := kv.Get(ctx, scope)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if _, err := kv.Create(ctx, scope, []byte(tok)); err != nil {
			return "", fmt.Errorf("create %s.%s: %w", server.AuthBucket, scope, err)
		}
		return fmt.Sprintf("account JWT written to %s.%s", server.AuthBucket, scope), nil
	case err != nil:
		return "", fmt.Errorf("read %s.%s: %w", server.AuthBucket, scope, err)
	}
	if string(cur.Value()) == tok {
		return fmt.Sprintf("%s.%s is current", server.AuthBucket, scope), nil
	}
	mine, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		return "", err
	}
	if theirs, err := jwt.DecodeAccountClaims(string(cur.Value())); err == nil && theirs.IssuedAt >= mine.IssuedAt {
		return fmt.Sprintf("%s.%s holds a JWT as new as the store's or newer: kept", server.AuthBucket, scope), nil
	}
	if _, err := kv.Update(ctx, scope, []byte(tok), cur.Revision()); err != nil {
		return "", fmt.Errorf("update %s.%s: %w", server.AuthBucket, scope, err)
	}
	return fmt.Sprintf("%s.%s updated to the store's newer account JWT", server.AuthBucket, scope), nil
}
