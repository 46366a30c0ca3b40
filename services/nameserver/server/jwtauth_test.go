package server_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// logRecorder keeps the log records of a name server.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// waitWarn waits for a Warn record with message msg whose attributes
// include all of want (key → substring of the value).
func (l *logRecorder) waitWarn(t *testing.T, msg string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, r := range l.recs {
			if r.Level != slog.LevelWarn || r.Message != msg {
				continue
			}
			found := 0
			r.Attrs(func(a slog.Attr) bool {
				if sub, ok := want[a.Key]; ok && strings.Contains(a.Value.String(), sub) {
					found++
				}
				return true
			})
			if found == len(want) {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no Warn %q with %v in the log", msg, want)
}

// authWorld is a scope "default" under JWT authorization: its account,
// a name server with its own JWT, and the account JWT it trusts.
type authWorld struct {
	op   *nstest.Operator
	acct *nstest.Account
	ns   *nstest.User
	nc   *nats.Conn
	logs *logRecorder
	kv   jetstream.KeyValue
}

func newAuthWorld(t *testing.T) *authWorld {
	s := startNATS(t)
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	ns := acct.User(t, events.RoleNameServer, "default")
	logs := &logRecorder{}
	startNameServer(t, s, server.Config{
		Key: ns.Key, JWT: ns.JWT, Logger: slog.New(logs),
		Auth: &server.AuthConfig{AccountJWT: acct.JWT(t), Operators: []string{op.Public}},
	})
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), server.AuthBucket)
	if err != nil {
		t.Fatalf("bucket %s: %v", server.AuthBucket, err)
	}
	return &authWorld{op: op, acct: acct, ns: ns, nc: nc, logs: logs, kv: kv}
}

// signerFor publishes events signed by u's key and carrying its JWT.
func (w *authWorld) signerFor(t *testing.T, u *nstest.User) *signer {
	return &signer{t: t, nc: w.nc, kp: u.Key, jwt: u.JWT}
}

// putAccount writes the account JWT to rsp_auth, as `rsp auth` does.
func (w *authWorld) putAccount(t *testing.T, token string) {
	t.Helper()
	if _, err := w.kv.Put(context.Background(), "default", []byte(token)); err != nil {
		t.Fatal(err)
	}
}

func TestJWTAuthorization(t *testing.T) {
	w := newAuthWorld(t)
	pe := w.acct.User(t, events.RolePE, "default")
	good := w.signerFor(t, pe)

	if out := good.register("echo", registration("pe-1", 1)); !out.Accepted {
		t.Fatalf("good chain refused: %+v", out.Error)
	}

	refusals := []struct {
		name, mentions string
		signer         func() *signer
	}{
		{"missing Rsp-Jwt", "Rsp-Jwt: header is missing", func() *signer {
			return &signer{t: t, nc: w.nc, kp: pe.Key}
		}},
		{"JWT from another account", "is not this scope's account", func() *signer {
			return w.signerFor(t, w.op.NewAccount(t, "other").User(t, events.RolePE, "default"))
		}},
		{"JWT from another operator's account", "is not this scope's account", func() *signer {
			return w.signerFor(t, nstest.NewOperator(t).NewAccount(t, "x").User(t, events.RolePE, "default"))
		}},
		{"expired JWT", "Rsp-Jwt.exp", func() *signer {
			return w.signerFor(t, w.acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) {
				uc.Expires = time.Now().Add(-time.Minute).Unix()
			}))
		}},
		{"JWT subject is not Rsp-Signer", "Rsp-Jwt.sub", func() *signer {
			other := w.acct.User(t, events.RolePE, "default")
			return &signer{t: t, nc: w.nc, kp: other.Key, jwt: pe.JWT}
		}},
		{"publish permission not covering the pool", "do not allow rsp.default.register.echo", func() *signer {
			return w.signerFor(t, w.acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) {
				uc.Pub.Allow = jwt.StringList{"rsp.default.register.other", "rsp.default.deregister.*"}
			}))
		}},
		{"PU publishing a registration", "Rsp-Jwt.nats.pub", func() *signer {
			return w.signerFor(t, w.acct.User(t, events.RolePU, "default"))
		}},
	}
	for i, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			s := r.signer()
			id := "x-" + string(rune('a'+i))
			wantRefused(t, s.register("echo", registration(id, 1)), events.CodeForbidden, r.mentions)
			pub, _ := s.kp.PublicKey()
			w.logs.waitWarn(t, "event refused by JWT authorization", map[string]string{
				"signer": pub, "subject": "rsp.default.register.echo", "reason": r.mentions,
			})
		})
	}
	t.Run("bad signature", func(t *testing.T) {
		sub := mustSub(t, w.nc, "rsp.default.outcome.echo.pe-3")
		m := nats.NewMsg("rsp.default.register.echo")
		m.Data = events.Marshal(registration("pe-3", 1))
		_ = events.SignEvent(m, pe.Key)
		events.SetJWT(m, pe.JWT)
		m.Data = events.Marshal(registration("pe-3", 2)) // body changed after signing
		good.publishMsg(m, "bad-sig")
		wantRefused(t, decode[events.Outcome](t, nextMsg(t, sub, 5e9).Data), events.CodeForbidden, "Rsp-Signature")
	})
	t.Run("deregistration needs the chain too", func(t *testing.T) {
		noJWT := &signer{t: t, nc: w.nc, kp: pe.Key}
		wantRefused(t, noJWT.deregister("echo", "pe-1", 2), events.CodeForbidden, "Rsp-Jwt")
	})
	t.Run("failure report refused and logged", func(t *testing.T) {
		pu := w.acct.User(t, events.RolePU, "default", func(uc *jwt.UserClaims) {
			uc.Pub.Allow = jwt.StringList{"rsp.default.failure.other"}
		})
		body := events.Marshal(events.FailureReport{PEID: "pe-1", Time: time.Now().UTC(), Reason: "refused"})
		w.signerFor(t, pu).publish("rsp.default.failure.echo", nuid.Next(), body)
		w.logs.waitWarn(t, "event refused by JWT authorization", map[string]string{
			"signer": pu.Public, "subject": "rsp.default.failure.echo", "reason": "do not allow",
		})
	})

	// Nothing refused changed the pool.
	if a := resolve(t, w.nc, "echo", events.ResolveRequest{Max: 10}); strings.Join(ids(a.Elements), ",") != "pe-1" {
		t.Fatalf("pool after refusals: %v", ids(a.Elements))
	}
	if out := good.deregister("echo", "pe-1", 3); !out.Accepted {
		t.Fatalf("good deregistration refused: %+v", out.Error)
	}
}

func TestJWTRevocationWithoutRestart(t *testing.T) {
	w := newAuthWorld(t)
	pe := w.acct.User(t, events.RolePE, "default")
	other := w.acct.User(t, events.RolePE, "default")
	s := w.signerFor(t, pe)
	if out := s.register("echo", registration("pe-1", 1)); !out.Accepted {
		t.Fatalf("refused before revocation: %+v", out.Error)
	}
	before := w.acct.JWT(t)             // an account JWT without the revocation
	time.Sleep(1100 * time.Millisecond) // iat has whole seconds: make it older

	w.acct.Claims.Revoke(pe.Public)
	w.putAccount(t, w.acct.JWT(t))
	out := refusedWithin(t, s, "pe-1", 2)
	wantRefused(t, out, events.CodeForbidden, "revoked")
	// Others of the account are not affected.
	if out := w.signerFor(t, other).register("echo", registration("pe-2", 1)); !out.Accepted {
		t.Fatalf("unrevoked user refused: %+v", out.Error)
	}

	// Undoing the revocation needs a newer account JWT from the trusted
	// operator: an older one, or one of another operator, is not used.
	w.putAccount(t, before)
	evilOp := nstest.NewOperator(t)
	forged := *w.acct.Claims
	forged.Revocations = nil
	tok, err := forged.Encode(evilOp.Key)
	if err != nil {
		t.Fatal(err)
	}
	w.putAccount(t, tok)
	w.logs.waitWarn(t, "account JWT not used", map[string]string{"err": "not by a trusted operator"})
	w.logs.waitWarn(t, "account JWT not used", map[string]string{"err": "before the one in use"})
	wantRefused(t, s.register("echo", registration("pe-1", 100)), events.CodeForbidden, "revoked")

	// A new JWT for the same user key, issued after the revocation, is
	// accepted again (NATS revocations cover JWTs issued up to their time).
	time.Sleep(1100 * time.Millisecond) // iat has whole seconds
	renewed := *pe
	uc := *pe.Claims
	renewed.JWT, err = uc.Encode(w.acct.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	if out := w.signerFor(t, &renewed).register("echo", registration("pe-1", 200)); !out.Accepted {
		t.Fatalf("JWT issued after the revocation refused: %+v", out.Error)
	}
}

// refusedWithin registers pe-id again (new seqs) until the name server
// refuses it; the account JWT reaches it through a watch, in milliseconds.
func refusedWithin(t *testing.T, s *signer, id string, seq uint64) events.Outcome {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		out := s.register("echo", registration(id, seq))
		if !out.Accepted || time.Now().After(deadline) {
			return out
		}
		seq++
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJWTAuthAnswersCarryJWT(t *testing.T) {
	w := newAuthWorld(t)
	pe := w.acct.User(t, events.RolePE, "default")
	if out := w.signerFor(t, pe).register("echo", registration("pe-1", 1)); !out.Accepted {
		t.Fatalf("%+v", out.Error)
	}
	pu := w.acct.User(t, events.RolePU, "default")
	trust, err := events.TrustFromUserJWT(pu.JWT)
	if err != nil {
		t.Fatal(err)
	}
	for _, pool := range []string{"echo", "nope"} { // an answer and an error answer
		subject := events.Subject("default", events.KindResolve, pool)
		req := nats.NewMsg(subject)
		req.Header.Set(events.HeaderNonce, "nonce-"+pool)
		m, err := w.nc.RequestMsg(req, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(events.HeaderJWT) != w.ns.JWT {
			t.Fatalf("answer carries Rsp-Jwt %q", m.Header.Get(events.HeaderJWT))
		}
		signer, err := events.VerifyAnswerChain(m, subject, "nonce-"+pool, trust)
		if err != nil || signer != w.ns.Public {
			t.Fatalf("answer to %s: signer %s, err %v", pool, signer, err)
		}
	}
}

func TestJWTAuthStart(t *testing.T) {
	s := startNATS(t)
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	ns := acct.User(t, events.RoleNameServer, "default")
	start := func(cfg server.Config) error {
		cfg.Logger = nstest.Logger()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n, err := server.Start(ctx, connect(t, s), cfg)
		if err == nil {
			n.Stop()
		}
		return err
	}
	wantErr := func(err error, mentions string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), mentions) {
			t.Fatalf("err = %v, want one mentioning %q", err, mentions)
		}
	}
	wantErr(start(server.Config{Key: ns.Key, JWT: ns.JWT, Auth: &server.AuthConfig{}}), "no usable account JWT")
	wantErr(start(server.Config{Key: ns.Key, Auth: &server.AuthConfig{AccountJWT: acct.JWT(t)}}), "JWT: is required with Auth")
	wantErr(start(server.Config{JWT: ns.JWT}), "Key: is required with JWT")
	other := acct.User(t, events.RoleNameServer, "default")
	wantErr(start(server.Config{Key: other.Key, JWT: ns.JWT}), "the JWT must be the one of the answer key")
	foreign := op.NewAccount(t, "other")
	wantErr(start(server.Config{Key: ns.Key, JWT: ns.JWT, Auth: &server.AuthConfig{AccountJWT: foreign.JWT(t)}}), "not of "+acct.Public)
	wantErr(start(server.Config{Key: ns.Key, JWT: ns.JWT, Auth: &server.AuthConfig{
		AccountJWT: acct.JWT(t), Operators: []string{nstest.NewOperator(t).Public},
	}}), "not by a trusted operator key")

	// The first replica, told the account JWT, writes it to rsp_auth; a
	// second one finds it there.
	if err := start(server.Config{Key: ns.Key, JWT: ns.JWT, Auth: &server.AuthConfig{AccountJWT: acct.JWT(t)}}); err != nil {
		t.Fatal(err)
	}
	ns2 := acct.User(t, events.RoleNameServer, "default")
	if err := start(server.Config{Key: ns2.Key, JWT: ns2.JWT, Auth: &server.AuthConfig{Operators: []string{op.Public}}}); err != nil {
		t.Fatalf("second replica without the account JWT: %v", err)
	}
}
