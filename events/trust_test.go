package events_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

const poolSubject = "rsp.default.register.echo"

// chainEvent is an event on poolSubject signed by u, carrying its JWT.
func chainEvent(t *testing.T, u *nstest.User) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(poolSubject)
	m.Data = []byte(`{"pe_id":"pe-1","seq":1}`)
	if err := events.SignEvent(m, u.Key); err != nil {
		t.Fatal(err)
	}
	events.SetJWT(m, u.JWT)
	return m
}

func wantFieldErr(t *testing.T, err error, field, mentions string) {
	t.Helper()
	var fe *events.FieldError
	if !errors.As(err, &fe) || fe.Field != field || !strings.Contains(fe.Rule, mentions) {
		t.Fatalf("err = %v, want a FieldError on %q mentioning %q", err, field, mentions)
	}
}

func TestVerifyEventChain(t *testing.T) {
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	now := time.Now()
	pe := acct.User(t, events.RolePE, "default")

	t.Run("good chain", func(t *testing.T) {
		for _, cache := range []*events.JWTCache{nil, events.NewJWTCache(2)} {
			for range 2 {
				signer, err := cache.VerifyEventChain(chainEvent(t, pe), acct.Claims, now)
				if err != nil || signer != pe.Public {
					t.Fatalf("signer %q, err %v", signer, err)
				}
			}
		}
	})
	t.Run("issued by the account key itself", func(t *testing.T) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		uc := jwt.NewUserClaims(pub)
		tok, err := uc.Encode(acct.Key)
		if err != nil {
			t.Fatal(err)
		}
		u := &nstest.User{Key: kp, Public: pub, JWT: tok}
		if _, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, now); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing Rsp-Jwt", func(t *testing.T) {
		m := chainEvent(t, pe)
		m.Header.Del(events.HeaderJWT)
		_, err := events.VerifyEventChain(m, acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt", "missing")
	})
	t.Run("not a JWT", func(t *testing.T) {
		m := chainEvent(t, pe)
		m.Header.Set(events.HeaderJWT, "x.y.z")
		_, err := events.VerifyEventChain(m, acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt", "not a valid user JWT")
	})
	t.Run("tampered JWT", func(t *testing.T) {
		m := chainEvent(t, pe)
		parts := strings.Split(pe.JWT, ".")
		other := acct.User(t, events.RoleAdmin, "default") // broader permissions
		parts[1] = strings.Split(other.JWT, ".")[1]
		m.Header.Set(events.HeaderJWT, strings.Join(parts, "."))
		_, err := events.VerifyEventChain(m, acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt", "signature")
	})
	t.Run("account JWT instead of a user JWT", func(t *testing.T) {
		m := chainEvent(t, pe)
		m.Header.Set(events.HeaderJWT, acct.JWT(t))
		_, err := events.VerifyEventChain(m, acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt", "not user claim")
	})
	t.Run("another account", func(t *testing.T) {
		foreign := op.NewAccount(t, "other").User(t, events.RolePE, "default")
		_, err := events.VerifyEventChain(chainEvent(t, foreign), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.nats.issuer_account", "is not this scope's account")
	})
	t.Run("foreign signing key claiming this account", func(t *testing.T) {
		other := op.NewAccount(t, "other")
		u := other.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) { uc.IssuerAccount = acct.Public })
		_, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.iss", "neither account")
	})
	t.Run("signing key without issuer_account", func(t *testing.T) {
		u := acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) { uc.IssuerAccount = "" })
		_, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.nats.issuer_account", "missing")
	})
	t.Run("expired", func(t *testing.T) {
		u := acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) { uc.Expires = now.Add(-time.Minute).Unix() })
		_, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.exp", "expired")
	})
	t.Run("not yet valid", func(t *testing.T) {
		u := acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) { uc.NotBefore = now.Add(time.Hour).Unix() })
		_, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.nbf", "not valid before")
	})
	t.Run("revoked", func(t *testing.T) {
		revoked := *acct.Claims
		revoked.Revocations = jwt.RevocationList{}
		revoked.Revoke(pe.Public)
		_, err := events.VerifyEventChain(chainEvent(t, pe), &revoked, now)
		wantFieldErr(t, err, "Rsp-Jwt", "revoked")
		all := *acct.Claims
		all.Revocations = jwt.RevocationList{}
		all.Revoke(jwt.All)
		_, err = events.VerifyEventChain(chainEvent(t, pe), &all, now)
		wantFieldErr(t, err, "Rsp-Jwt", "revoked")
	})
	t.Run("subject is not Rsp-Signer", func(t *testing.T) {
		other := acct.User(t, events.RolePE, "default")
		m := chainEvent(t, other)
		m.Header.Set(events.HeaderJWT, pe.JWT) // someone else's JWT
		_, err := events.VerifyEventChain(m, acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.sub", "is not Rsp-Signer")
	})
	t.Run("publish permission", func(t *testing.T) {
		u := acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) {
			uc.Pub.Allow = jwt.StringList{"rsp.default.register.other"}
		})
		_, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.nats.pub", "do not allow rsp.default.register.echo")
		u = acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) {
			uc.Pub.Deny = jwt.StringList{"rsp.*.register.echo"}
		})
		_, err = events.VerifyEventChain(chainEvent(t, u), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.nats.pub", "do not allow")
		pu := acct.User(t, events.RolePU, "default")
		_, err = events.VerifyEventChain(chainEvent(t, pu), acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Jwt.nats.pub", "do not allow")
	})
	t.Run("bad signature", func(t *testing.T) {
		m := chainEvent(t, pe)
		m.Data = []byte(`{"pe_id":"pe-1","seq":2}`)
		_, err := events.VerifyEventChain(m, acct.Claims, now)
		wantFieldErr(t, err, "Rsp-Signature", "does not verify")
	})
	t.Run("scoped signing key", func(t *testing.T) {
		sk, _ := nkeys.CreateAccount()
		skPub, _ := sk.PublicKey()
		scoped := *acct.Claims
		scoped.SigningKeys = jwt.SigningKeys{}
		us := jwt.NewUserScope()
		us.Key = skPub
		us.Template.Pub.Allow.Add("rsp.default.register.echo")
		scoped.SigningKeys.AddScopedSigner(us)
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		uc := jwt.NewUserClaims(pub)
		uc.IssuerAccount = acct.Public
		uc.SetScoped(true)
		tok, _ := uc.Encode(sk)
		u := &nstest.User{Key: kp, Public: pub, JWT: tok}
		if _, err := events.VerifyEventChain(chainEvent(t, u), &scoped, now); err != nil {
			t.Fatalf("allowed by the scope's template: %v", err)
		}
		us.Template.Pub.Allow = jwt.StringList{"rsp.default.register.other"}
		_, err := events.VerifyEventChain(chainEvent(t, u), &scoped, now)
		wantFieldErr(t, err, "Rsp-Jwt.nats.pub", "do not allow")
		// A scoped key's users carry no permissions of their own.
		uc.SetScoped(false)
		uc.Pub.Allow.Add(">")
		tok, _ = uc.Encode(sk)
		u.JWT = tok
		_, err = events.VerifyEventChain(chainEvent(t, u), &scoped, now)
		wantFieldErr(t, err, "Rsp-Jwt.iss", "scoped users require no permissions")
	})
	t.Run("expired account", func(t *testing.T) {
		expired := *acct.Claims
		expired.Expires = now.Add(-time.Second).Unix()
		_, err := events.VerifyEventChain(chainEvent(t, pe), &expired, now)
		wantFieldErr(t, err, "account JWT", "expired")
	})
}

// The publish check matches subjects the way the NATS server does.
func TestPublishMatchingAgreesWithServer(t *testing.T) {
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	filters := []string{"rsp.default.register.echo", "rsp.*.register.*", "rsp.>", ">", "*", "rsp.default.register",
		"rsp.default.register.echo.x", "rsp.default.*", "rsp.default.>", "*.*.*.*", "rsp.*.*.echo", "rsp.default.register.*.>"}
	for _, f := range filters {
		u := acct.User(t, events.RolePE, "default", func(uc *jwt.UserClaims) { uc.Pub.Allow = jwt.StringList{f} })
		_, err := events.VerifyEventChain(chainEvent(t, u), acct.Claims, time.Now())
		if got, want := err == nil, natsserver.SubjectMatchesFilter(poolSubject, f); got != want {
			t.Errorf("allow %q: accepted %v, server would match %v (err %v)", f, got, want, err)
		}
	}
}

func nsAnswer(t *testing.T, u *nstest.User, subject, nonce string, body []byte) *nats.Msg {
	t.Helper()
	m := nats.NewMsg("")
	m.Data = body
	if err := events.SignAnswer(m.Header, u.Key, subject, nonce, body); err != nil {
		t.Fatal(err)
	}
	if u.JWT != "" {
		m.Header.Set(events.HeaderJWT, u.JWT)
	}
	return m
}

func TestVerifyAnswerChain(t *testing.T) {
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	pu := acct.User(t, events.RolePU, "default")
	ns := acct.User(t, events.RoleNameServer, "default")
	trust, err := events.TrustFromUserJWT(pu.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if trust.Issuer != acct.SigningPub || trust.Account != acct.Public {
		t.Fatalf("trust %+v", trust)
	}
	const subject, nonce = "rsp.default.resolve.echo", "n-1"
	body := []byte(`{"pool":"echo"}`)

	if signer, err := events.VerifyAnswerChain(nsAnswer(t, ns, subject, nonce, body), subject, nonce, trust); err != nil || signer != ns.Public {
		t.Fatalf("good answer: signer %q, err %v", signer, err)
	}
	refusals := []struct {
		name, field string
		msg         func() *nats.Msg
		trust       events.AnswerTrust
	}{
		{"no JWT", "Rsp-Jwt", func() *nats.Msg {
			m := nsAnswer(t, ns, subject, nonce, body)
			m.Header.Del(events.HeaderJWT)
			return m
		}, trust},
		{"not a name server", "Rsp-Jwt.nats.tags", func() *nats.Msg {
			return nsAnswer(t, acct.User(t, events.RolePE, "default"), subject, nonce, body)
		}, trust},
		{"foreign account", "Rsp-Jwt.iss", func() *nats.Msg {
			return nsAnswer(t, op.NewAccount(t, "evil").User(t, events.RoleNameServer, "default"), subject, nonce, body)
		}, trust},
		{"foreign signing key claiming the account", "Rsp-Jwt.iss", func() *nats.Msg {
			evil := op.NewAccount(t, "evil").User(t, events.RoleNameServer, "default",
				func(uc *jwt.UserClaims) { uc.IssuerAccount = acct.Public })
			return nsAnswer(t, evil, subject, nonce, body)
		}, trust},
		{"expired", "Rsp-Jwt.exp", func() *nats.Msg {
			old := acct.User(t, events.RoleNameServer, "default",
				func(uc *jwt.UserClaims) { uc.Expires = time.Now().Add(-time.Minute).Unix() })
			return nsAnswer(t, old, subject, nonce, body)
		}, trust},
		{"JWT of another name server", "Rsp-Jwt.sub", func() *nats.Msg {
			m := nsAnswer(t, acct.User(t, events.RoleNameServer, "default"), subject, nonce, body)
			m.Header.Set(events.HeaderJWT, ns.JWT)
			return m
		}, trust},
		{"wrong nonce", "Rsp-Signature", func() *nats.Msg { return nsAnswer(t, ns, subject, "n-0", body) }, trust},
		{"no trust", "", func() *nats.Msg { return nsAnswer(t, ns, subject, nonce, body) }, events.AnswerTrust{}},
	}
	for _, r := range refusals {
		_, err := events.VerifyAnswerChain(r.msg(), subject, nonce, r.trust)
		if err == nil {
			t.Errorf("%s: accepted", r.name)
			continue
		}
		if r.field != "" {
			wantFieldErr(t, err, r.field, "")
		}
	}

	// Explicit trust: another account's signing key, or a pinned name
	// server key without any JWT.
	other := op.NewAccount(t, "other")
	otherNS := other.User(t, events.RoleNameServer, "default")
	explicit := events.AnswerTrust{Keys: []string{other.SigningPub}}
	if _, err := events.VerifyAnswerChain(nsAnswer(t, otherNS, subject, nonce, body), subject, nonce, explicit); err != nil {
		t.Fatalf("explicitly trusted issuer: %v", err)
	}
	if _, err := events.VerifyAnswerChain(nsAnswer(t, ns, subject, nonce, body), subject, nonce, explicit); err == nil {
		t.Fatal("explicit trust also accepted the client's own account")
	}
	bare := &nstest.User{Key: ns.Key, Public: ns.Public}
	pinned := events.AnswerTrust{Keys: []string{ns.Public}}
	if _, err := events.VerifyAnswerChain(nsAnswer(t, bare, subject, nonce, body), subject, nonce, pinned); err != nil {
		t.Fatalf("pinned key: %v", err)
	}
	if _, err := events.VerifyAnswerChain(nsAnswer(t, bare, subject, "n-0", body), subject, nonce, pinned); err == nil {
		t.Fatal("pinned key with a wrong nonce accepted")
	}
	if _, err := events.TrustFromUserJWT("nope"); err == nil {
		t.Fatal("TrustFromUserJWT accepted garbage")
	}
}
