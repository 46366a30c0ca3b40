package auth_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

// disconnectAdvisory is the part of nats-server's client_disconnect
// advisory that name servers read.
type disconnectAdvisory struct {
	Type   string `json:"type"`
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Client struct {
		ID      uint64 `json:"id"`
		Account string `json:"acc"`
		User    string `json:"user"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// TestDisconnectAdvisories: a scope account's nameserver user sees the
// disconnects of its own account's clients on
// $SYS.ACCOUNT.<account>.DISCONNECT (the import keeps the subject), both
// for a clean Close and for a socket closed under the client, and does
// not see another scope's.
func TestDisconnectAdvisories(t *testing.T) {
	w := newWorld(t, "default", "prod")
	acct, _ := w.store.AccountPublicKey("default")
	prodAcct, _ := w.store.AccountPublicKey("prod")
	ns := w.mustDial(w.store.CredsPath("default", auth.RoleNameServer))
	sub, err := ns.SubscribeSync(events.DisconnectSubject(acct))
	if err != nil {
		t.Fatal(err)
	}
	// What prod's name server could try: another account's advisories.
	prodNS := w.mustDial(w.store.CredsPath("prod", auth.RoleNameServer))
	spy, err := prodNS.SubscribeSync(events.DisconnectSubject(acct))
	if err != nil {
		t.Fatal(err)
	}
	spyAll, err := prodNS.SubscribeSync("$SYS.ACCOUNT.*.DISCONNECT")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*conn{ns, prodNS} {
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	next := func(what string) disconnectAdvisory {
		t.Helper()
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("%s: no disconnect advisory: %v", what, err)
		}
		var a disconnectAdvisory
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}

	// A clean close.
	pe := w.mustDial(w.store.CredsPath("default", auth.RolePE))
	cid, _ := pe.GetClientID()
	srv := pe.ConnectedServerId()
	pe.Close()
	a := next("Close")
	if a.Type != "io.nats.server.advisory.v1.client_disconnect" || a.Server.ID != srv || a.Client.ID != cid || a.Client.Account != acct {
		t.Fatalf("advisory %+v, want server %s cid %d account %s", a, srv, cid, acct)
	}

	// A socket closed under the client (what a kill -9 does): no Drain,
	// no UNSUB, no goodbye.
	var raw net.Conn
	pe2 := w.mustDial(w.store.CredsPath("default", auth.RolePE), nats.SetCustomDialer(dialerFunc(func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		raw = c
		return c, err
	})), nats.NoReconnect())
	cid2, _ := pe2.GetClientID()
	srv2 := pe2.ConnectedServerId()
	start := time.Now()
	_ = raw.Close()
	a = next("socket closed")
	if a.Client.ID != cid2 || a.Server.ID != srv2 {
		t.Fatalf("advisory %+v, want cid %d", a, cid2)
	}
	t.Logf("socket closed → advisory in %s (reason %q)", time.Since(start), a.Reason)

	// prod's name server saw none of default's, and a prod client's
	// disconnect stays in prod.
	if m, err := spy.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("prod saw default's advisory: %s", m.Data)
	}
	if m, err := spyAll.NextMsg(10 * time.Millisecond); err == nil {
		t.Fatalf("prod saw an advisory on $SYS.ACCOUNT.*.DISCONNECT: %s", m.Data)
	}
	prodPE := w.mustDial(w.store.CredsPath("prod", auth.RolePE))
	prodPE.Close()
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Fatalf("default saw an advisory it should not: %s", m.Data)
	}
	_ = prodAcct

	// A pe or pu user cannot listen to the advisories.
	pu := w.mustDial(w.store.CredsPath("default", auth.RolePU))
	if _, err := pu.SubscribeSync(events.DisconnectSubject(acct)); err != nil {
		t.Fatal(err)
	}
	pu.wantViolation(t, events.DisconnectSubject(acct))
}

type dialerFunc func(network, addr string) (net.Conn, error)

func (f dialerFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

// TestServiceSubjects: a pu requests a pe's service subject
// (events.ServiceSubject) and gets its answer; each only in its pools.
func TestServiceSubjects(t *testing.T) {
	w := newWorld(t)
	pePath, _ := w.issue("default", auth.RolePE, "echo")
	pe := w.mustDial(pePath)
	subj := events.ServiceSubject("default", "echo", "echo-1")
	if _, err := pe.Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(append([]byte("echo: "), m.Data...)) }); err != nil {
		t.Fatal(err)
	}
	if err := pe.Flush(); err != nil {
		t.Fatal(err)
	}
	puPath, _ := w.issue("default", auth.RolePU, "echo")
	pu := w.mustDial(puPath)
	m, err := pu.Request(subj, []byte("hi"), 5*time.Second)
	if err != nil || string(m.Data) != "echo: hi" {
		t.Fatalf("pu request to %s: %v %v", subj, m, err)
	}
	// The role creds of Init (all pools) do the same.
	peAll := w.mustDial(w.store.CredsPath("default", auth.RolePE))
	other := events.ServiceSubject("default", "other", "o-1")
	if _, err := peAll.Subscribe(other, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	if err := peAll.Flush(); err != nil {
		t.Fatal(err)
	}
	puAll := w.mustDial(w.store.CredsPath("default", auth.RolePU))
	if m, err := puAll.Request(other, nil, 5*time.Second); err != nil || string(m.Data) != "ok" {
		t.Fatalf("pu (all pools) request to %s: %v %v", other, m, err)
	}

	// Not the pools they are not given.
	if _, err := pe.SubscribeSync(events.ServiceSubject("default", "other", "x")); err != nil {
		t.Fatal(err)
	}
	pe.wantViolation(t, "rsp.default.svc.other.x")
	if err := pu.Publish(other, nil); err != nil {
		t.Fatal(err)
	}
	pu.wantViolation(t, other)
	// A pe is a pu of its own pools (RFC 5351: a PE may be a PU), of no
	// other.
	if err := pe.Publish(subj, nil); err != nil {
		t.Fatal(err)
	}
	if err := pe.Publish(other, nil); err != nil {
		t.Fatal(err)
	}
	pe.wantViolation(t, other)
	// A pu may not serve.
	if _, err := pu.SubscribeSync(subj); err != nil {
		t.Fatal(err)
	}
	pu.wantViolation(t, subj)
}

// TestInitUpgradesAccounts: a store made before the disconnect
// export/import (account JWTs without them) gains them at the next Init,
// keeping keys and revocations, and a further Init changes nothing.
func TestInitUpgradesAccounts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	st, err := auth.Init(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Revoke("default", "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"); err != nil {
		t.Fatal(err)
	}
	op, _ := os.ReadFile(filepath.Join(dir, "operator.nk"))
	okp := mustOperator(t, op)
	// Strip the export and import, as an older rsp made them.
	strip := func(path string, f func(*jwt.AccountClaims)) {
		b, _ := os.ReadFile(path)
		ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		f(ac)
		ac.IssuedAt = 0
		tok, err := ac.Encode(okp)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(tok+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sysPath := filepath.Join(dir, "system", "account.jwt")
	accPath := filepath.Join(dir, "accounts", "default", "account.jwt")
	strip(sysPath, func(ac *jwt.AccountClaims) { ac.Exports = nil })
	strip(accPath, func(ac *jwt.AccountClaims) { ac.Imports = nil })

	st, err = auth.Init(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	sys := accountClaims(t, sysPath)
	if !slices.ContainsFunc(sys.Exports, func(e *jwt.Export) bool {
		return e.Subject == events.DisconnectExport && e.Type == jwt.Stream && e.AccountTokenPosition == events.DisconnectAccountToken
	}) {
		t.Fatalf("system account not upgraded: exports %+v", sys.Exports)
	}
	acc := accountClaims(t, accPath)
	if len(acc.Imports) != 1 || string(acc.Imports[0].Subject) != events.DisconnectSubject(acc.Subject) ||
		acc.Imports[0].Account != st.SystemAccountPublicKey() || acc.Imports[0].Type != jwt.Stream {
		t.Fatalf("scope account not upgraded: imports %+v", acc.Imports)
	}
	if len(acc.Revocations) != 1 {
		t.Fatalf("upgrade lost the revocations: %v", acc.Revocations)
	}
	before, _ := os.ReadFile(accPath)
	beforeSys, _ := os.ReadFile(sysPath)
	if _, err := auth.Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(accPath)
	afterSys, _ := os.ReadFile(sysPath)
	if string(before) != string(after) || string(beforeSys) != string(afterSys) {
		t.Fatal("Init after the upgrade changed the account JWTs again")
	}
	// The pe creds Init made (all pools) have the service permissions.
	uc := credsClaims(t, st.CredsPath("default", auth.RolePE))
	if !slices.Contains(uc.Sub.Allow, "rsp.default.svc.*.>") || uc.Resp == nil || uc.Resp.MaxMsgs != 1 {
		t.Fatalf("pe creds: sub %v resp %+v", uc.Sub.Allow, uc.Resp)
	}
}

func mustOperator(t *testing.T, seed []byte) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func accountClaims(t *testing.T, path string) *jwt.AccountClaims {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return ac
}
