package rspclient

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestOperatorMode runs the whole chain on a NATS server in operator mode
// with the users of package auth: the server authenticates connections,
// the name server authorizes events, the client checks answers; a
// revocation written to rsp_auth stops the revoked PE at its next event.
func TestOperatorMode(t *testing.T) {
	store, err := auth.Init(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir(), Configure: store.Configure})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := func(role auth.Role) (*nats.Conn, string) {
		t.Helper()
		path := store.CredsPath("default", role)
		nc, err := nats.Connect(s.ClientURL(), natsconn.Creds(path))
		if err != nil {
			t.Fatalf("connect as %s: %v", role, err)
		}
		t.Cleanup(nc.Close)
		return nc, path
	}
	if _, err := nats.Connect(s.ClientURL()); err == nil {
		t.Fatal("anonymous connection accepted: not in operator mode")
	}

	nsConn, nsCreds := conn(auth.RoleNameServer)
	token, kp, err := LoadCreds(nsCreds)
	if err != nil {
		t.Fatal(err)
	}
	acctJWT, err := store.AccountJWT("default")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.Start(ctx, nsConn, server.Config{
		Key: kp, JWT: token, Logger: nstest.Logger(),
		Auth: &server.AuthConfig{AccountJWT: acctJWT, Operators: []string{store.OperatorPublicKey()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)

	peConn, peCreds := conn(auth.RolePE)
	pe := newClient(t, peConn, WithCreds(peCreds))
	puConn, puCreds := conn(auth.RolePU)
	pu := newClient(t, puConn, WithCreds(puCreds))
	tr := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}
	reg, err := pe.Register(ctx, "echo", PE{ID: "a", Transports: tr, Lifetime: time.Minute})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if ans, err := pu.Resolve(ctx, "echo", events.ResolveRequest{}); err != nil || len(ans.Elements) != 1 {
		t.Fatalf("resolve: %+v, %v", ans, err)
	}

	// rsp auth revoke: a new account JWT, written to rsp_auth by an admin.
	if err := store.Revoke("default", pe.PublicKey()); err != nil {
		t.Fatal(err)
	}
	revoked, err := store.AccountJWT("default")
	if err != nil {
		t.Fatal(err)
	}
	adminConn, _ := conn(auth.RoleAdmin)
	js, _ := jetstream.New(adminConn)
	kv, err := js.KeyValue(ctx, server.AuthBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "default", []byte(revoked)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = pe.Register(ctx, "echo", PE{ID: "b", Transports: tr})
		if err != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ee *events.Error
	if !errors.As(err, &ee) || ee.Code != events.CodeForbidden || !strings.Contains(ee.Message, "revoked") {
		t.Fatalf("register after revocation: %v, want forbidden (revoked)", err)
	}
	if err := reg.UpdateLoad(ctx, 0.5); err == nil {
		t.Fatal("renewal of the revoked PE accepted")
	}
}
