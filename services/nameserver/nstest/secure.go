package nstest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// StartSecure starts an embedded JetStream server in operator mode with
// the operator, accounts (one per scope; none: "default") and role users
// of a fresh auth store, as `nameserver` runs by default. Connect with
// ConnectCreds and the store's CredsPath, or IssueCreds.
func StartSecure(t testing.TB, scopes ...string) (*natsserver.Server, *auth.Store) {
	t.Helper()
	st, err := auth.Init(filepath.Join(t.TempDir(), "auth"), scopes)
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir(), Configure: st.Configure})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s, st
}

// ConnectCreds opens a connection to s with the creds file path, closed at
// the end of the test.
func ConnectCreds(t testing.TB, s *natsserver.Server, path string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{nats.Timeout(5 * time.Second), natsconn.Creds(path)}, opts...)...)
	if err != nil {
		t.Fatalf("connect with %s: %v", path, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// IssueCreds issues a new user of scope with role and pools (see
// auth.Permissions) and writes its creds file; it returns the path.
func IssueCreds(t testing.TB, st *auth.Store, scope string, role auth.Role, pools ...string) string {
	t.Helper()
	creds, _, err := st.IssueUser(scope, role, pools, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), string(role)+".creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ReadCreds returns the user JWT and nkey of a creds file.
func ReadCreds(t testing.TB, path string) (string, nkeys.KeyPair) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := jwt.ParseDecoratedUserNKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return tok, kp
}

// StartSecureNameServer starts one replica serving scope (cfg.Scopes is
// set to it) on s, connected as the scope's nameserver user of st, with
// JWT authorization of events as `nameserver` runs it.
func StartSecureNameServer(t testing.TB, s *natsserver.Server, st *auth.Store, scope string, cfg server.Config) *server.NameServer {
	t.Helper()
	path := st.CredsPath(scope, auth.RoleNameServer)
	cfg.Scopes = []string{scope}
	cfg.JWT, cfg.Key = ReadCreds(t, path)
	acct, err := st.AccountJWT(scope)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Auth = &server.AuthConfig{AccountJWT: acct, Operators: []string{st.OperatorPublicKey()}}
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := server.Start(ctx, ConnectCreds(t, s, path), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return ns
}
