package auth_test

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

func accountLimits(t *testing.T, st *auth.Store) jwt.AccountLimits {
	t.Helper()
	tok, err := st.AccountJWT("default")
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return ac.Limits.AccountLimits
}

// TestAccountLimits: a scope account carries the default limits; Init
// WithAccountLimits changes them, a later Init keeps them; and the NATS
// server enforces them for all users of the scope together (issue 16).
func TestAccountLimits(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	st, err := auth.Init(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	def := auth.DefaultAccountLimits()
	if got := accountLimits(t, st); got.Conn != def.Connections {
		t.Fatalf("connections %d, want the default %d", got.Conn, def.Connections)
	}
	l := def
	l.Connections = 3
	if st, err = auth.Init(dir, nil, auth.WithAccountLimits(l)); err != nil {
		t.Fatal(err)
	}
	if st, err = auth.Init(dir, nil); err != nil { // as every name-server start does
		t.Fatal(err)
	}
	if got := accountLimits(t, st); got.Conn != 3 {
		t.Fatalf("connections %d after a plain Init, want the 3 set before", got.Conn)
	}

	w := &world{t: t, store: st, data: t.TempDir()}
	w.start()
	pu := st.CredsPath("default", auth.RolePU)
	for i := range 3 {
		if _, err := w.dial(pu); err != nil {
			t.Fatalf("connection %d of 3: %v", i+1, err)
		}
	}
	if nc, err := nats.Connect(w.s.ClientURL(), natsconn.Creds(pu), nats.NoReconnect()); err == nil {
		// The server may accept, then close at once.
		if err := nc.Flush(); err == nil && nc.IsConnected() {
			t.Fatal("a 4th connection beyond the account's limit of 3 stays")
		}
		nc.Close()
	}
}

func TestParseAccountLimits(t *testing.T) {
	l, err := auth.ParseAccountLimits("connections=10, consumers=-1")
	if err != nil || l.Connections != 10 || l.Consumers != -1 || l.Streams != auth.DefaultAccountLimits().Streams {
		t.Fatalf("%+v %v", l, err)
	}
	for _, bad := range []string{"connections", "connections=0", "connections=x", "bogus=1", "streams=-2"} {
		if _, err := auth.ParseAccountLimits(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
