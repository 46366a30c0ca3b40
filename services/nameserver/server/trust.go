package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// AuthBucket is the key-value bucket holding the current account JWT of
// each scope (key = scope name), in the scope's own account. The admin tool
// writes it; name servers watch it.
const AuthBucket = "rsp_auth"

// AuthConfig turns on JWT authorization of events (docs/protocol.md,
// "Event authorization (operator mode)"): every event must carry, in
// Rsp-Jwt, a user JWT of the scope's account that allows it.
type AuthConfig struct {
	// AccountJWT is the scope's account JWT, used until the bucket
	// rsp_auth holds a newer one (and written there when it holds none).
	// Optional when rsp_auth holds it already.
	AccountJWT string
	// Operators, when set, are the only keys (operator identity keys or
	// operator signing keys, O...) trusted to issue the account JWT.
	// Otherwise any operator key is: then whoever may write to rsp_auth
	// decides who may register.
	Operators []string
	// JWTCacheSize bounds the number of decoded user JWTs kept; default 4096.
	JWTCacheSize int
}

// identity is what the replica's own user JWT says.
type identity struct {
	jwt     string
	account string // the account the JWT belongs to
}

// checkIdentity decodes cfg.JWT and checks it against cfg.Key.
func checkIdentity(cfg *Config) (*identity, error) {
	if cfg.JWT == "" {
		if cfg.Auth != nil {
			return nil, events.Errf("JWT", "is required with Auth: the scope's account is the one that issued the name server's own user JWT")
		}
		return nil, nil
	}
	uc, err := jwt.DecodeUserClaims(cfg.JWT)
	if err != nil {
		return nil, events.Errf("JWT", "is not a valid user JWT: %v", err)
	}
	pub, err := cfg.Key.PublicKey()
	if err != nil {
		return nil, events.Errf("Key", "%v", err)
	}
	if uc.Subject != pub {
		return nil, events.Errf("JWT", "names user %s, but Key is %s: the JWT must be the one of the answer key", uc.Subject, pub)
	}
	if uc.Expires > 0 && time.Now().Unix() > uc.Expires {
		return nil, events.Errf("JWT", "expired at %s", time.Unix(uc.Expires, 0).UTC().Format(time.RFC3339))
	}
	acct := uc.IssuerAccount
	if acct == "" {
		acct = uc.Issuer
	}
	return &identity{jwt: cfg.JWT, account: acct}, nil
}

// scopeTrust holds the current account JWT of one scope and checks events
// against it.
type scopeTrust struct {
	scope     string
	account   string   // the account key the account JWT must have as subject
	operators []string // trusted issuers of the account JWT; empty: any O...
	cache     *events.JWTCache
	log       *slog.Logger
	cur       atomic.Pointer[jwt.AccountClaims]
	// firstErr is why the bucket's first value was not used (set before
	// the watch reports ready).
	firstErr atomic.Pointer[error]
}

// accept makes token the current account JWT if it is one of this scope's
// account, from a trusted operator, unexpired and not older than the
// current one. Issue times have whole seconds: of two JWTs issued in the
// same second, the one accepted last wins.
func (t *scopeTrust) accept(token, source string) error {
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		return fmt.Errorf("account JWT from %s is not valid: %w", source, err)
	}
	if ac.Subject != t.account {
		return fmt.Errorf("account JWT from %s is of account %s, not of %s (the issuer account of the name server's JWT)", source, ac.Subject, t.account)
	}
	if !nkeys.IsValidPublicOperatorKey(ac.Issuer) {
		return fmt.Errorf("account JWT from %s is issued by %s, not by an operator key", source, ac.Issuer)
	}
	if len(t.operators) > 0 && !slices.Contains(t.operators, ac.Issuer) {
		return fmt.Errorf("account JWT from %s is issued by %s, not by a trusted operator key %v", source, ac.Issuer, t.operators)
	}
	if ac.Expires > 0 && time.Now().Unix() > ac.Expires {
		return fmt.Errorf("account JWT from %s expired at %s", source, time.Unix(ac.Expires, 0).UTC().Format(time.RFC3339))
	}
	for {
		cur := t.cur.Load()
		if cur != nil && cur.ID == ac.ID {
			return nil // the one in use (a restarted watch delivers it again)
		}
		if cur != nil && ac.IssuedAt < cur.IssuedAt {
			return fmt.Errorf("account JWT from %s was issued at %s, before the one in use (%s)", source,
				time.Unix(ac.IssuedAt, 0).UTC().Format(time.RFC3339), time.Unix(cur.IssuedAt, 0).UTC().Format(time.RFC3339))
		}
		if t.cur.CompareAndSwap(cur, ac) {
			break
		}
	}
	t.log.Info("account JWT in use", "source", source, "account", ac.Subject, "issued_at", time.Unix(ac.IssuedAt, 0).UTC(),
		"signing_keys", len(ac.SigningKeys), "revocations", len(ac.Revocations))
	return nil
}

// verify checks msg's JWT chain and signature against the current account
// JWT.
func (t *scopeTrust) verify(msg *nats.Msg, now time.Time) (string, error) {
	return t.cache.VerifyEventChain(msg, t.cur.Load(), now)
}

// watch keeps the account JWT current from the bucket rsp_auth; ready is
// closed once the bucket's current value was read. The watch is restarted
// when it ends or stalls (see keepWatching).
func (t *scopeTrust) watch(ctx context.Context, kv jetstream.KeyValue, ready chan<- struct{}) error {
	source := AuthBucket + "." + t.scope
	err := keepWatching(ctx, watchSpec{
		what: "key " + source, log: t.log,
		start: func(ctx context.Context) (jetstream.KeyWatcher, error) { return kv.Watch(ctx, t.scope) },
		latest: func(ctx context.Context) (uint64, error) {
			e, err := kv.Get(ctx, t.scope)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0, nil
			}
			if err != nil {
				return 0, err
			}
			return e.Revision(), nil
		},
		apply: func(e jetstream.KeyValueEntry) {
			if e.Operation() != jetstream.KeyValuePut {
				t.log.Warn("account JWT removed from the bucket: keeping the last one", "key", source)
				return
			}
			if err := t.accept(string(e.Value()), fmt.Sprintf("%s revision %d", source, e.Revision())); err != nil {
				t.log.Warn("account JWT not used", "err", err)
				if t.cur.Load() == nil {
					t.firstErr.Store(&err)
				}
			}
		},
		synced: func(uint64) {},
	}, ready)
	if err != nil {
		return fmt.Errorf("watch %s: %w", source, err)
	}
	return nil
}

// startTrust sets up JWT authorization of scope: the initial account JWT
// from the config and the bucket, then the watch that keeps it current.
func (n *NameServer) startTrust(ctx, runCtx context.Context, kv jetstream.KeyValue, scope string, log *slog.Logger) (*scopeTrust, error) {
	cfg := n.cfg
	t := &scopeTrust{
		scope: scope, account: n.ident.account, operators: cfg.Auth.Operators,
		cache: events.NewJWTCache(cfg.Auth.JWTCacheSize), log: log,
	}
	if cfg.Auth.AccountJWT != "" {
		if err := t.accept(cfg.Auth.AccountJWT, "Config.Auth.AccountJWT"); err != nil {
			return nil, err
		}
	}
	ready := make(chan struct{})
	watchErr := make(chan error, 1)
	n.wg.Go(func() {
		if err := t.watch(runCtx, kv, ready); err != nil {
			log.Error("account JWT no longer kept current", "err", err)
			watchErr <- err
		}
	})
	select {
	case <-ready:
	case err := <-watchErr:
		return nil, err
	case <-ctx.Done():
		return nil, fmt.Errorf("reading %s.%s: %w", AuthBucket, scope, ctx.Err())
	}
	if t.cur.Load() == nil {
		err := fmt.Errorf("JWT authorization: no usable account JWT of account %s for scope %s: put it in the key-value bucket %s, key %s (rsp auth), or set Config.Auth.AccountJWT",
			t.account, scope, AuthBucket, scope)
		if first := t.firstErr.Load(); first != nil {
			err = fmt.Errorf("%w (%v)", err, *first)
		}
		return nil, err
	}
	if cfg.Auth.AccountJWT != "" {
		// Let replicas that are not told the account JWT find it.
		if _, err := kv.Create(ctx, scope, []byte(cfg.Auth.AccountJWT)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			log.Warn("account JWT not written to the bucket", "bucket", AuthBucket, "err", err)
		}
	}
	return t, nil
}

// importsDisconnects tells whether the account JWT ac imports the
// disconnect advisories of account from the system account (package auth
// makes every scope account do so), so that they reach the name servers.
func importsDisconnects(ac *jwt.AccountClaims, account string) bool {
	if ac == nil {
		return false
	}
	return slices.ContainsFunc(ac.Imports, func(i *jwt.Import) bool {
		return i.IsStream() && string(i.Subject) == events.DisconnectSubject(account) &&
			(i.LocalSubject == "" || string(i.LocalSubject) == events.DisconnectSubject(account))
	})
}
