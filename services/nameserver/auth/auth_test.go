package auth_test

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
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// world is a store and an embedded server in operator mode.
type world struct {
	t     *testing.T
	store *auth.Store
	data  string // JetStream data dir
	s     *natsserver.Server
}

func newWorld(t *testing.T, scopes ...string) *world {
	t.Helper()
	st, err := auth.Init(filepath.Join(t.TempDir(), "auth"), scopes)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, store: st, data: t.TempDir()}
	w.start()
	return w
}

// start (re)starts the server on the same dirs.
func (w *world) start() {
	w.t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: w.data, Configure: w.store.Configure})
	if err != nil {
		w.t.Fatal(err)
	}
	w.s = s
	w.t.Cleanup(s.Shutdown)
}

func (w *world) stop() {
	w.s.Shutdown()
	w.s.WaitForShutdown()
}

// conn is a connection whose asynchronous errors (permission violations)
// and close are recorded.
type conn struct {
	*nats.Conn
	errs   chan error
	closed chan struct{}
}

func (w *world) dial(creds string, extra ...nats.Option) (*conn, error) {
	c := &conn{errs: make(chan error, 100), closed: make(chan struct{})}
	opts := append([]nats.Option{
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(c.closed) }),
	}, extra...)
	if creds != "" {
		opts = append(opts, natsconn.Creds(creds))
	}
	nc, err := nats.Connect(w.s.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	w.t.Cleanup(nc.Close)
	return c, nil
}

func (w *world) mustDial(creds string, extra ...nats.Option) *conn {
	w.t.Helper()
	c, err := w.dial(creds, extra...)
	if err != nil {
		w.t.Fatalf("connect with %s: %v", filepath.Base(creds), err)
	}
	return c
}

// issue writes new creds for a user and returns the path and public key.
func (w *world) issue(scope string, role auth.Role, pools ...string) (string, string) {
	w.t.Helper()
	creds, pub, err := w.store.IssueUser(scope, role, pools, time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	path := filepath.Join(w.t.TempDir(), string(role)+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path, pub
}

// wantViolation waits for a permissions violation naming subject.
func (c *conn) wantViolation(t *testing.T, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %s", subject)
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// eventsStream creates the RSP_EVENTS stream as a name server would.
func eventsStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateStream(ctx(t), jetstream.StreamConfig{
		Name: events.StreamName, Subjects: events.EventSubjects(), Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("create stream with nameserver creds: %v", err)
	}
	return js
}

func TestAnonymousRefused(t *testing.T) {
	w := newWorld(t)
	if _, err := w.dial(""); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("anonymous connect: %v, want an authorization violation", err)
	}
	// A user nkey the operator never signed is refused too.
	other, err := auth.Init(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.dial(other.CredsPath("default", auth.RoleAdmin)); err == nil {
		t.Fatal("a user of another operator connected")
	}
}

func TestNameServerAndAdmin(t *testing.T) {
	w := newWorld(t)
	for _, role := range []auth.Role{auth.RoleNameServer, auth.RoleAdmin} {
		nc := w.mustDial(w.store.CredsPath("default", role))
		js := eventsStream(t, nc.Conn)
		kv, err := js.CreateOrUpdateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: events.Bucket("default"), History: 1})
		if err != nil {
			t.Fatalf("%s: create bucket: %v", role, err)
		}
		if _, err := kv.Put(ctx(t), "echo.pe-1", []byte("x")); err != nil {
			t.Fatalf("%s: put: %v", role, err)
		}
		sub, err := nc.SubscribeSync("anything.at.all")
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("anything.at.all", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("%s: core pub/sub: %v", role, err)
		}
		if _, err := js.Publish(ctx(t), "rsp.default.register.echo", []byte("{}")); err != nil {
			t.Fatalf("%s: event publish: %v", role, err)
		}
	}
}

func TestPEPermissions(t *testing.T) {
	w := newWorld(t)
	ns := w.mustDial(w.store.CredsPath("default", auth.RoleNameServer))
	eventsStream(t, ns.Conn)

	path, _ := w.issue("default", auth.RolePE, "echo")
	pe := w.mustDial(path)
	js, err := jetstream.New(pe.Conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"rsp.default.register.echo", "rsp.default.deregister.echo"} {
		ack, err := js.Publish(ctx(t), subj, []byte("{}"))
		if err != nil || ack.Stream != events.StreamName {
			t.Fatalf("pe publish %s: %+v %v", subj, ack, err)
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := js.Publish(short, "rsp.default.register.other", []byte("{}")); err == nil {
		t.Fatal("pe for echo published rsp.default.register.other")
	}
	pe.wantViolation(t, "rsp.default.register.other")
	// A PE may be a PU of its own pools (RFC 5351): it resolves and reads
	// them, no other.
	if _, err := ns.Subscribe("rsp.default.resolve.*", func(m *nats.Msg) { _ = m.Respond([]byte(`{"pool":"echo"}`)) }); err != nil {
		t.Fatal(err)
	}
	if err := ns.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := pe.Request("rsp.default.resolve.echo", nil, 5*time.Second); err != nil || string(m.Data) != `{"pool":"echo"}` {
		t.Fatalf("pe resolve of its pool: %v %v", m, err)
	}
	if err := pe.Publish("rsp.default.resolve.other", nil); err != nil {
		t.Fatal(err)
	}
	pe.wantViolation(t, "rsp.default.resolve.other")

	// Outcomes of its pool reach it; other pools' do not.
	sub, err := pe.SubscribeSync("rsp.default.outcome.echo.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := pe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ns.Publish("rsp.default.outcome.echo.pe-1", []byte(`{"accepted":true}`)); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(5 * time.Second); err != nil || m.Subject != "rsp.default.outcome.echo.pe-1" {
		t.Fatalf("outcome: %v %v", m, err)
	}
	if _, err := pe.SubscribeSync("rsp.default.outcome.other.>"); err != nil {
		t.Fatal(err)
	}
	pe.wantViolation(t, "rsp.default.outcome.other.>")

	// "*" is every pool of the scope, and of no other scope.
	path, _ = w.issue("default", auth.RolePE, auth.AllPools)
	all := w.mustDial(path)
	jsAll, _ := jetstream.New(all.Conn)
	if _, err := jsAll.Publish(ctx(t), "rsp.default.register.other", []byte("{}")); err != nil {
		t.Fatalf("pe for * publish: %v", err)
	}
	if err := all.Publish("rsp.prod.register.echo", nil); err != nil {
		t.Fatal(err)
	}
	all.wantViolation(t, "rsp.prod.register.echo")
}

func TestPUPermissions(t *testing.T) {
	w := newWorld(t)
	ns := w.mustDial(w.store.CredsPath("default", auth.RoleNameServer))
	nsJS := eventsStream(t, ns.Conn)
	kvNS, err := nsJS.CreateOrUpdateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: events.Bucket("default"), History: 1, LimitMarkerTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvNS.Put(ctx(t), "echo.pe-1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Subscribe("rsp.default.resolve.*", func(m *nats.Msg) { _ = m.Respond([]byte(`{"pool":"echo"}`)) }); err != nil {
		t.Fatal(err)
	}
	if err := ns.Flush(); err != nil {
		t.Fatal(err)
	}

	path, _ := w.issue("default", auth.RolePU)
	pu := w.mustDial(path)
	if m, err := pu.Request("rsp.default.resolve.echo", nil, 5*time.Second); err != nil || string(m.Data) != `{"pool":"echo"}` {
		t.Fatalf("pu resolve: %v %v", m, err)
	}
	js, err := jetstream.New(pu.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx(t), "rsp.default.failure.echo", []byte("{}")); err != nil {
		t.Fatalf("pu failure report: %v", err)
	}
	chg, err := pu.SubscribeSync("rsp.default.changes.echo")
	if err != nil {
		t.Fatal(err)
	}
	if err := pu.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ns.Publish("rsp.default.changes.echo", []byte("c")); err != nil {
		t.Fatal(err)
	}
	if _, err := chg.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("pu changes: %v", err)
	}
	beats, err := pu.SubscribeSync("rsp.default.nameservers.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := pu.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ns.Publish("rsp.default.nameservers.ns1", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if _, err := beats.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("pu name-server beats: %v", err)
	}

	// No JetStream API at all: reads go through the name servers.
	short := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	if _, err := js.KeyValue(short(), events.Bucket("default")); err == nil {
		t.Fatal("pu opened the bucket")
	}
	pu.wantViolation(t, "$JS.API.STREAM.INFO.KV_rsp_default")
	if _, err := js.Publish(short(), "rsp.default.register.echo", []byte("{}")); err == nil {
		t.Fatal("pu registered")
	}
	pu.wantViolation(t, "rsp.default.register.echo")
	if e, err := kvNS.Get(ctx(t), "echo.pe-1"); err != nil || string(e.Value()) != "one" {
		t.Fatalf("bucket changed by pu: %v %v", e, err)
	}

	// A pu for one pool resolves only that pool.
	path, _ = w.issue("default", auth.RolePU, "echo")
	one := w.mustDial(path)
	if _, err := one.Request("rsp.default.resolve.echo", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := one.Publish("rsp.default.resolve.other", nil); err != nil {
		t.Fatal(err)
	}
	one.wantViolation(t, "rsp.default.resolve.other")
}

func TestJWTContents(t *testing.T) {
	st, err := auth.Init(t.TempDir(), []string{"default"})
	if err != nil {
		t.Fatal(err)
	}
	creds, pub, err := st.IssueUser("default", auth.RolePE, []string{"echo", "b"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := st.AccountPublicKey("default")
	sk, _ := st.SigningKeyPublicKey("default")
	if uc.Subject != pub || uc.IssuerAccount != acc || uc.Issuer != sk {
		t.Errorf("user %s issuer %s issuer_account %s; want %s, %s, %s", uc.Subject, uc.Issuer, uc.IssuerAccount, pub, sk, acc)
	}
	if !uc.Tags.Contains("rsp-role:pe") || !uc.Tags.Contains("rsp-scope:default") {
		t.Errorf("tags %v", uc.Tags)
	}
	if d := time.Until(time.Unix(uc.Expires, 0)); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("expires in %s", d)
	}
	want := []string{"rsp.default.register.echo", "rsp.default.deregister.echo", "rsp.default.register.b", "rsp.default.deregister.b",
		"rsp.default.resolve.echo", "rsp.default.failure.echo", "rsp.default.read.echo", "rsp.default.svc.echo.>",
		"rsp.default.resolve.b", "rsp.default.failure.b", "rsp.default.read.b", "rsp.default.svc.b.>"}
	if strings.Join(uc.Pub.Allow, " ") != strings.Join(want, " ") {
		t.Errorf("pub allow %v, want %v", uc.Pub.Allow, want)
	}
	wantSub := []string{"rsp.default.outcome.echo.>", "rsp.default.svc.echo.>", "rsp.default.outcome.b.>", "rsp.default.svc.b.>",
		"rsp.default.changes.echo", "rsp.default.changes.b", "rsp.default.nameservers.*", "_INBOX." + pub + ".>"}
	if strings.Join(uc.Sub.Allow, " ") != strings.Join(wantSub, " ") {
		t.Errorf("sub allow %v, want %v", uc.Sub.Allow, wantSub)
	}
	accJWT, _ := st.AccountJWT("default")
	ac, err := jwt.DecodeAccountClaims(accJWT)
	if err != nil {
		t.Fatal(err)
	}
	if !ac.DidSign(uc) || ac.Issuer != st.OperatorPublicKey() || ac.Name != "default" || !ac.Limits.DisallowBearer {
		t.Errorf("account claims %+v", ac)
	}
	vr := jwt.CreateValidationResults()
	ac.Validate(vr)
	if len(vr.Issues) > 0 {
		t.Errorf("account jwt issues: %v", vr.Errors())
	}
}

func TestIssueUserErrors(t *testing.T) {
	st, err := auth.Init(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		scope string
		role  auth.Role
		pools []string
		exp   time.Duration
		field string
	}{
		{"default", "boss", nil, 0, "role"},
		{"default", auth.RolePE, nil, 0, "pool"},
		{"default", auth.RolePE, []string{"bad.pool"}, 0, "pool"},
		{"default", auth.RolePU, []string{"echo", "x y"}, 0, "pool"},
		{"default", auth.RoleAdmin, []string{"echo"}, 0, "pool"},
		{"nosuch", auth.RolePU, nil, 0, "scope"},
		{"Bad.Scope", auth.RolePU, nil, 0, "scope"},
		{"default", auth.RolePU, nil, -time.Second, "expires"},
	}
	for _, c := range cases {
		_, _, err := st.IssueUser(c.scope, c.role, c.pools, c.exp)
		var fe *events.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("IssueUser(%q, %q, %v, %s) = %v, want an error naming %q", c.scope, c.role, c.pools, c.exp, err, c.field)
		}
	}
	if err := st.Revoke("default", "not-a-key"); err == nil {
		t.Error("Revoke of a malformed key succeeded")
	}
}

func TestRevokeWithoutRestart(t *testing.T) {
	w := newWorld(t)
	path, pub := w.issue("default", auth.RolePU)
	keepPath, _ := w.issue("default", auth.RolePU)
	victim := w.mustDial(path, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	keep := w.mustDial(keepPath)

	if err := w.store.Revoke("default", pub); err != nil {
		t.Fatal(err)
	}
	if ok, err := w.store.Revoked("default", pub); err != nil || !ok {
		t.Fatalf("Revoked = %v, %v", ok, err)
	}
	sys := w.mustDial(w.store.SystemCredsPath())
	tok, _ := w.store.AccountJWT("default")
	if err := auth.PushAccount(ctx(t), sys.Conn, tok); err != nil {
		t.Fatalf("push: %v", err)
	}

	// The server closes the revoked user's connection at once; it cannot
	// come back.
	deadline := time.Now().Add(5 * time.Second)
	for victim.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if victim.IsConnected() {
		t.Fatal("revoked user still connected")
	}
	time.Sleep(300 * time.Millisecond)
	if victim.IsConnected() {
		t.Fatal("revoked user reconnected")
	}
	if _, err := w.dial(path); err == nil {
		t.Fatal("revoked user connected anew")
	}
	// Others are untouched.
	if !keep.IsConnected() {
		t.Fatal("another user of the account lost its connection")
	}
	if _, err := w.dial(keepPath); err != nil {
		t.Fatalf("another user cannot connect: %v", err)
	}

	// The server's answer is checked.
	if err := auth.PushAccount(ctx(t), sys.Conn, "not a jwt"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("push of garbage: %v", err)
	}
	// Only the system user may push.
	admin := w.mustDial(w.store.CredsPath("default", auth.RoleAdmin))
	if err := auth.PushAccount(ctx(t), admin.Conn, tok); err == nil {
		t.Fatal("push as an admin user succeeded")
	}
}

func TestInitIsIdempotent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	a, err := auth.Init(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := d.Info()
		if d.IsDir() {
			if info.Mode().Perm() != 0o700 {
				t.Errorf("dir %s mode %v, want 0700", p, info.Mode().Perm())
			}
			return nil
		}
		b, _ := os.ReadFile(p)
		files[p] = string(b)
		if strings.HasSuffix(p, ".nk") || strings.HasSuffix(p, ".creds") {
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", p, info.Mode().Perm())
			}
		}
		return nil
	})
	for _, f := range []string{"operator.nk", "operator.jwt", "system/account.nk", "system/account.jwt",
		"accounts/default/account.nk", "accounts/default/signing.nk", "accounts/default/account.jwt",
		"creds/system.creds", "creds/default/nameserver.creds", "creds/default/admin.creds",
		"creds/default/pe.creds", "creds/default/pu.creds"} {
		if _, ok := files[filepath.Join(dir, f)]; !ok {
			t.Errorf("%s not created", f)
		}
	}

	b, err := auth.Init(dir, []string{"default", "prod"})
	if err != nil {
		t.Fatal(err)
	}
	for p, content := range files {
		if now, _ := os.ReadFile(p); string(now) != content {
			t.Errorf("second Init changed %s", p)
		}
	}
	pa, _ := a.AccountPublicKey("default")
	pb, _ := b.AccountPublicKey("default")
	if a.OperatorPublicKey() != b.OperatorPublicKey() || pa != pb || a.SystemAccountPublicKey() != b.SystemAccountPublicKey() {
		t.Error("second Init made new keys")
	}
	if got := strings.Join(b.Scopes(), ","); got != "default,prod" {
		t.Errorf("scopes %s", got)
	}
	// A third Init without naming prod keeps it; Open sees the same.
	c, err := auth.Init(dir, nil)
	if err != nil || strings.Join(c.Scopes(), ",") != "default,prod" {
		t.Fatalf("third Init: %v %v", c.Scopes(), err)
	}
	o, err := auth.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	po, _ := o.AccountPublicKey("prod")
	pp, _ := b.AccountPublicKey("prod")
	if o.OperatorPublicKey() != a.OperatorPublicKey() || po != pp || strings.Join(o.Scopes(), ",") != "default,prod" {
		t.Error("Open differs from Init")
	}
	if _, err := auth.Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "rsp auth init") {
		t.Errorf("Open of an empty dir: %v", err)
	}
	if _, err := auth.Init(dir, []string{"Bad.Scope"}); err == nil {
		t.Error("Init with a bad scope succeeded")
	}

	// Init replaces a revoked role creds file.
	uc := credsClaims(t, o.CredsPath("default", auth.RolePE))
	if err := o.Revoke("default", uc.Subject); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	if credsClaims(t, o.CredsPath("default", auth.RolePE)).Subject == uc.Subject {
		t.Error("Init kept a revoked creds file")
	}
}

func credsClaims(t *testing.T, path string) *jwt.UserClaims {
	t.Helper()
	tok, _ := nstest.ReadCreds(t, path)
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

func TestRestartKeepsDataAndRevocations(t *testing.T) {
	w := newWorld(t, "default", "prod")
	ns := w.mustDial(w.store.CredsPath("default", auth.RoleNameServer))
	js := eventsStream(t, ns.Conn)
	kv, err := js.CreateOrUpdateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: events.Bucket("default"), History: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx(t), "echo.pe-1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	pushed, pushedPub := w.issue("default", auth.RolePU)
	if err := w.store.Revoke("default", pushedPub); err != nil {
		t.Fatal(err)
	}
	sys := w.mustDial(w.store.SystemCredsPath())
	tok, _ := w.store.AccountJWT("default")
	if err := auth.PushAccount(ctx(t), sys.Conn, tok); err != nil {
		t.Fatal(err)
	}
	w.stop()

	// Revoked while the server is down, by another process.
	offline, offlinePub := w.issue("prod", auth.RolePE, "echo")
	other, err := auth.Open(w.store.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Revoke("prod", offlinePub); err != nil {
		t.Fatal(err)
	}
	stillOK, _ := w.issue("prod", auth.RolePE, "echo")

	w.start()
	for _, p := range []string{pushed, offline} {
		if _, err := w.dial(p); err == nil {
			t.Errorf("revoked user %s connected after restart", filepath.Base(p))
		}
	}
	w.mustDial(stillOK)
	ns = w.mustDial(w.store.CredsPath("default", auth.RoleNameServer))
	js, _ = jetstream.New(ns.Conn)
	kv, err = js.KeyValue(ctx(t), events.Bucket("default"))
	if err != nil {
		t.Fatalf("bucket after restart: %v", err)
	}
	if e, err := kv.Get(ctx(t), "echo.pe-1"); err != nil || string(e.Value()) != "one" {
		t.Fatalf("key after restart: %v %v", e, err)
	}
	// JetStream works in the second scope's account too.
	prod := w.mustDial(w.store.CredsPath("prod", auth.RoleNameServer))
	pjs, _ := jetstream.New(prod.Conn)
	if _, err := pjs.CreateOrUpdateKeyValue(ctx(t), jetstream.KeyValueConfig{Bucket: events.Bucket("prod")}); err != nil {
		t.Fatalf("jetstream in scope prod: %v", err)
	}
	// The default account does not see prod's bucket.
	if _, err := js.KeyValue(ctx(t), events.Bucket("prod")); err == nil {
		t.Error("scope default sees bucket rsp_prod")
	}
}
