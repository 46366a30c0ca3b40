package rspclient

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

func TestLoadCreds(t *testing.T) {
	acct := nstest.NewOperator(t).NewAccount(t, "default")
	u := acct.User(t, events.RolePE, "default")
	token, kp, err := LoadCreds(u.Creds(t))
	if err != nil {
		t.Fatal(err)
	}
	if pub, _ := kp.PublicKey(); token != u.JWT || pub != u.Public {
		t.Fatalf("LoadCreds gave %s / %s", token, pub)
	}

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	other := acct.User(t, events.RolePE, "default")
	seed, _ := other.Key.Seed()
	mixed, _ := jwt.FormatUserConfig(u.JWT, seed) // JWT of u, seed of other
	for name, path := range map[string]string{
		"missing":          filepath.Join(dir, "nope.creds"),
		"empty path":       "",
		"no seed":          write("jwt-only.creds", u.JWT),
		"key mismatch":     write("mixed.creds", string(mixed)),
		"not a JWT at all": write("junk.creds", "hello"),
	} {
		if _, _, err := LoadCreds(path); err == nil {
			t.Errorf("%s: LoadCreds accepted it", name)
		}
		if _, err := New(connect(t, startNATS(t)), WithCreds(path)); err == nil {
			t.Errorf("%s: New accepted WithCreds", name)
		}
	}
	nc := connect(t, startNATS(t))
	kp2, _ := LoadOrCreateKey(filepath.Join(dir, "k.nk"))
	if _, err := New(nc, WithCreds(u.Creds(t)), WithKey(kp2)); err == nil || !strings.Contains(err.Error(), "not the signing key") {
		t.Errorf("WithKey after WithCreds with another key: %v", err)
	}
	if _, err := New(nc, WithUserJWT(u.JWT, other.Key)); err == nil {
		t.Error("WithUserJWT accepted a key the JWT does not name")
	}
	if _, err := New(nc, WithNameServerKeys("nope")); err == nil {
		t.Error("WithNameServerKeys accepted a bad key")
	}
	c := newClient(t, nc, WithUserJWT(u.JWT, u.Key))
	if c.JWT() != u.JWT || c.PublicKey() != u.Public {
		t.Errorf("client JWT/key = %s / %s", c.JWT(), c.PublicKey())
	}
}

// authWorld is a name server with JWT authorization on scope default.
type authWorld struct {
	s    *natsserver.Server
	op   *nstest.Operator
	acct *nstest.Account
	ns   *nstest.User
}

func newAuthWorld(t *testing.T) *authWorld {
	s := startNATS(t)
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	ns := acct.User(t, events.RoleNameServer, "default")
	nstest.StartNameServer(t, s, server.Config{
		Key: ns.Key, JWT: ns.JWT,
		Auth: &server.AuthConfig{AccountJWT: acct.JWT(t), Operators: []string{op.Public}},
	})
	return &authWorld{s: s, op: op, acct: acct, ns: ns}
}

func TestCredsAgainstJWTAuthorization(t *testing.T) {
	w := newAuthWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pe := newClient(t, connect(t, w.s), WithCreds(w.acct.User(t, events.RolePE, "default").Creds(t)))
	pu := newClient(t, connect(t, w.s), WithCreds(w.acct.User(t, events.RolePU, "default").Creds(t)))

	// A live address: the name server's check of the reported PE passes.
	reg, err := pe.Register(ctx, "echo", PE{ID: "a", Transports: []events.Transport{{Proto: "tcp", Addr: liveAddr(t)}}})
	if err != nil {
		t.Fatalf("register with creds: %v", err)
	}
	ans, err := pu.Resolve(ctx, "echo", events.ResolveRequest{})
	if err != nil {
		t.Fatalf("resolve with creds (answer checked against the PU's account): %v", err)
	}
	if len(ans.Elements) != 1 || ans.Elements[0].PEID != "a" {
		t.Fatalf("answer %+v", ans)
	}
	if err := pu.ReportFailure(ctx, "echo", "a", "test"); err != nil {
		t.Fatal(err)
	}

	// A PU may not register: its JWT's publish permissions say so.
	_, err = pu.Register(ctx, "echo", PE{ID: "b", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:8"}}})
	var ee *events.Error
	if !errors.As(err, &ee) || ee.Code != events.CodeForbidden || !strings.Contains(ee.Message, "Rsp-Jwt.nats.pub") {
		t.Fatalf("PU registering: %v, want forbidden by publish permissions", err)
	}
	// Without creds: forbidden, Rsp-Jwt missing. Its resolutions still
	// work (insecure mode checks signatures only).
	anon := newClient(t, connect(t, w.s))
	_, err = anon.Register(ctx, "echo", PE{ID: "c", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:9"}}})
	if !errors.As(err, &ee) || ee.Code != events.CodeForbidden || !strings.Contains(ee.Message, "Rsp-Jwt") {
		t.Fatalf("register without creds: %v, want forbidden for want of Rsp-Jwt", err)
	}
	if _, err := anon.Resolve(ctx, "echo", events.ResolveRequest{}); err != nil {
		t.Fatal(err)
	}
	// A client of another account does not trust this name server...
	foreign := newClient(t, connect(t, w.s), WithCreds(w.op.NewAccount(t, "other").User(t, events.RolePU, "default").Creds(t)))
	if _, err := foreign.Resolve(ctx, "echo", events.ResolveRequest{}); err == nil || !strings.Contains(err.Error(), "not a trusted issuer") {
		t.Fatalf("foreign client resolve: %v, want the answer refused", err)
	}
	// ...unless told to.
	trusting := newClient(t, connect(t, w.s), WithCreds(w.op.NewAccount(t, "other").User(t, events.RolePU, "default").Creds(t)),
		WithNameServerKeys(w.acct.SigningPub))
	if _, err := trusting.Resolve(ctx, "echo", events.ResolveRequest{}); err != nil {
		t.Fatal(err)
	}
	// A client without creds can pin the name server's key.
	pinned := newClient(t, connect(t, w.s), WithNameServerKeys(w.ns.Public))
	if _, err := pinned.Resolve(ctx, "echo", events.ResolveRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatalf("deregister with creds: %v", err)
	}
}

// A forged answer is refused: signed by a user of the same account that is
// not a name server, by a name server of a foreign account, or over another
// nonce.
func TestResolveRefusesForgedAnswers(t *testing.T) {
	s := startNATS(t)
	op := nstest.NewOperator(t)
	acct := op.NewAccount(t, "default")
	ns := acct.User(t, events.RoleNameServer, "default")
	c := newClient(t, connect(t, s), WithCreds(acct.User(t, events.RolePU, "default").Creds(t)), WithTimeout(2*time.Second))
	body := events.Marshal(goodAnswer)

	var answerer *nstest.User
	var nonceOf func(req *nats.Msg) string
	responder(t, connect(t, s), func(req *nats.Msg) *nats.Msg {
		m := signedAnswer(t, answerer.Key, req.Subject, nonceOf(req), body)
		if answerer.JWT != "" {
			m.Header.Set(events.HeaderJWT, answerer.JWT)
		}
		return m
	})
	requestNonce := func(req *nats.Msg) string { return req.Header.Get(events.HeaderNonce) }

	answerer, nonceOf = ns, requestNonce
	if _, err := c.Resolve(context.Background(), "echo", events.ResolveRequest{}); err != nil {
		t.Fatalf("the account's name server: %v", err)
	}
	for _, tc := range []struct {
		name     string
		answerer *nstest.User
		nonce    func(*nats.Msg) string
		mentions string
	}{
		{"PE of the same account", acct.User(t, events.RolePE, "default"), requestNonce, "rsp-role:nameserver"},
		{"admin of the same account", acct.User(t, events.RoleAdmin, "default"), requestNonce, "rsp-role:nameserver"},
		{"name server of a foreign account", op.NewAccount(t, "evil").User(t, events.RoleNameServer, "default"), requestNonce, "not a trusted issuer"},
		{"foreign signing key claiming the account", op.NewAccount(t, "evil").User(t, events.RoleNameServer, "default",
			func(uc *jwt.UserClaims) { uc.IssuerAccount = acct.Public }), requestNonce, "not a trusted issuer"},
		{"wrong nonce", ns, func(*nats.Msg) string { return "replayed" }, "Rsp-Signature"},
		{"no JWT", &nstest.User{Key: ns.Key, Public: ns.Public}, requestNonce, "Rsp-Jwt"},
	} {
		answerer, nonceOf = tc.answerer, tc.nonce
		_, err := c.Resolve(context.Background(), "echo", events.ResolveRequest{})
		if err == nil || !strings.Contains(err.Error(), "unverified") || !strings.Contains(err.Error(), tc.mentions) {
			t.Errorf("%s: err = %v, want refused mentioning %q", tc.name, err, tc.mentions)
		}
	}
}
