package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

var userKeyRE = regexp.MustCompile(`\bU[A-Z2-7]{55}\b`)

func wantMode(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	if info.Mode().Perm() != mode {
		t.Errorf("%s: mode %v, want %v", path, info.Mode().Perm(), mode)
	}
}

func TestAuthInitAndUser(t *testing.T) {
	e := &env{t: t, url: "nats://127.0.0.1:1", dir: t.TempDir()}
	data := filepath.Join(t.TempDir(), "data")
	store := filepath.Join(data, "auth")

	r := e.run("auth", "init", "--data", data)
	peCreds := filepath.Join(store, "creds", "default", "pe.creds")
	if r.code != 0 || !strings.Contains(r.stdout, peCreds) || !strings.Contains(r.stdout, filepath.Join(store, "creds", "system.creds")) {
		t.Fatalf("auth init: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	wantMode(t, store, 0o700)
	wantMode(t, filepath.Join(store, "operator.nk"), 0o600)
	wantMode(t, filepath.Join(store, "accounts", "default", "signing.nk"), 0o600)
	wantMode(t, peCreds, 0o600)
	// Again, with one more scope: the same operator, and a new account.
	r2 := e.run("auth", "init", "--data", data, "--scope", "default", "--scope", "prod")
	if r2.code != 0 || !strings.HasPrefix(r2.stdout, strings.SplitN(r.stdout, "\n", 2)[0]) ||
		!strings.Contains(r2.stdout, filepath.Join(store, "creds", "prod", "pu.creds")) {
		t.Fatalf("second auth init: exit %d stdout %q (first %q)", r2.code, r2.stdout, r.stdout)
	}

	out := filepath.Join(t.TempDir(), "echo-pe.creds")
	r = e.run("auth", "user", "--data", data, "--role", "pe", "--pool", "echo", "--out", out)
	if r.code != 0 || !strings.Contains(r.stdout, out) || !userKeyRE.MatchString(r.stdout) {
		t.Fatalf("auth user --out: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	wantMode(t, out, 0o600)
	b, _ := os.ReadFile(out)
	if !strings.Contains(string(b), "BEGIN NATS USER JWT") || !strings.Contains(string(b), "BEGIN USER NKEY SEED") {
		t.Errorf("creds file %q", b)
	}

	r = e.run("--scope", "prod", "auth", "user", "--data", data, "--role", "pu", "--expires", "24h")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "-----BEGIN NATS USER JWT-----") || !userKeyRE.MatchString(r.stderr) ||
		!strings.Contains(r.stderr, "scope prod") {
		t.Fatalf("auth user to stdout: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	wantFail(t, e.run("auth", "user", "--data", data), 2, "--role")
	wantFail(t, e.run("auth", "user", "--data", data, "--role", "boss"), 2, "role", "boss")
	wantFail(t, e.run("auth", "user", "--data", data, "--role", "pe"), 2, "pool")
	wantFail(t, e.run("auth", "user", "--data", data, "--role", "pe", "--pool", "bad.pool"), 2, "pool")
	wantFail(t, e.run("auth", "user", "--data", data, "--role", "pu", "--expires", "soon"), 2, "--expires")
	wantFail(t, e.run("--scope", "nosuch", "auth", "user", "--data", data, "--role", "pu"), 2, "nosuch")
	wantFail(t, e.run("auth", "init", "--data", data, "--scope", "Bad.Scope"), 2, "scope")
	wantFail(t, e.run("auth", "user", "--data", t.TempDir(), "--role", "pu"), 1, "rsp auth init")
	wantFail(t, e.run("auth", "revoke", "--data", data), 2, "USER_KEY")
	wantFail(t, e.run("auth", "revoke", "--data", data, "notakey"), 2, "user_key")
	wantFail(t, e.run("auth", "bogus"), 2, "bogus")

	// No server: the revocation is saved for the next start.
	key := userKeyRE.FindString(r.stderr)
	r = e.run("--scope", "prod", "auth", "revoke", "--data", data, key)
	if r.code != 0 || !strings.Contains(r.stdout, "next") {
		t.Fatalf("auth revoke without a server: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	st, err := auth.Open(store)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := st.Revoked("prod", key); err != nil || !ok {
		t.Errorf("not revoked in the store: %v %v", ok, err)
	}
}

func TestAuthRevokePushesToServer(t *testing.T) {
	data := t.TempDir()
	st, err := auth.Init(filepath.Join(data, "auth"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir(), Configure: st.Configure})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	e := &env{t: t, url: s.ClientURL(), dir: t.TempDir(), s: s}

	out := filepath.Join(t.TempDir(), "pu.creds")
	r := e.run("auth", "user", "--data", data, "--role", "pu", "--out", out)
	key := userKeyRE.FindString(r.stdout)
	if r.code != 0 || key == "" {
		t.Fatalf("auth user: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	nc, err := nats.Connect(s.ClientURL(), natsconn.Creds(out), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect with the new user: %v", err)
	}
	defer nc.Close()

	r = e.run("auth", "revoke", "--data", data, key)
	if r.code != 0 || !strings.Contains(r.stdout, "applied") {
		t.Fatalf("auth revoke: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if nc.IsConnected() {
		t.Fatal("revoked user still connected")
	}
	if c, err := nats.Connect(s.ClientURL(), natsconn.Creds(out)); err == nil {
		c.Close()
		t.Fatal("revoked user connected anew")
	}

	// With a bucket rsp_auth (made by a name server), revoke writes the
	// new account JWT there too.
	admin, err := nats.Connect(s.ClientURL(), natsconn.Creds(st.CredsPath("default", auth.RoleAdmin)))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, _ := jetstream.New(admin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: server.AuthBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, key2, err := st.IssueUser("default", auth.RolePE, []string{"echo"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	r = e.run("auth", "revoke", "--data", data, key2)
	if r.code != 0 || !strings.Contains(r.stdout, server.AuthBucket) {
		t.Fatalf("auth revoke with rsp_auth: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	after, err := auth.Open(filepath.Join(data, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := after.AccountJWT("default")
	if e, err := kv.Get(ctx, "default"); err != nil || string(e.Value()) != want {
		t.Fatalf("rsp_auth.default: %v, want the store's new account JWT", err)
	}
	for _, k := range []string{key, key2} {
		if ok, _ := after.Revoked("default", k); !ok {
			t.Errorf("%s not revoked in the store", k)
		}
	}
}

func TestAuthHelp(t *testing.T) {
	e := &env{t: t, url: "nats://127.0.0.1:1", dir: t.TempDir()}
	for _, args := range [][]string{{"auth"}, {"auth", "--help"}, {"auth", "init", "--help"}, {"auth", "user", "--help"}, {"auth", "revoke", "--help"}} {
		r := e.run(args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "rsp "+strings.Join(args[:len(args)-1], " ")) {
			t.Errorf("rsp %v: exit %d stdout %q stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := e.run("--help"); !strings.Contains(r.stdout, "auth") {
		t.Errorf("rsp --help does not list auth: %q", r.stdout)
	}
}
