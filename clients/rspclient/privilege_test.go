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
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// privConn is a raw connection with a credential that records the
// server's permission errors.
type privConn struct {
	*nats.Conn
	errs chan error
}

func dialPriv(t *testing.T, url, creds string) *privConn {
	t.Helper()
	c := &privConn{errs: make(chan error, 64)}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second), natsconn.Creds(creds),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c
}

// refused fails unless the server refuses what do does, naming subject.
func (c *privConn) refused(t *testing.T, what, subject string, do func() error) {
	t.Helper()
	if err := do(); err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("%s: %v", what, err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
		case <-deadline:
			t.Fatalf("%s: not refused (no permissions violation for %s)", what, subject)
		}
	}
}

// TestLeastPrivilege: with credentials limited to pool A, a PE and a PU
// can do their own jobs — register, resolve (a PE too: RFC 5351), read
// and watch pool A — and nothing else, each attempt made for real against
// a secure name server: no other user's inbox, no name-server delivery,
// no JetStream API (consumers, acks, direct get, message get, stream
// info), no other pool through any subject; and a refused request fails
// at once with ErrPermission, not by timing out (issue 16).
func TestLeastPrivilege(t *testing.T) {
	s, st := nstest.StartSecure(t)
	nstest.StartSecureNameServer(t, s, st, "default", server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := s.ClientURL()
	client := func(creds string) *Client {
		t.Helper()
		return newClient(t, nstest.ConnectCreds(t, s, creds), WithCreds(creds))
	}
	peA := nstest.IssueCreds(t, st, "default", auth.RolePE, "A")
	puA := nstest.IssueCreds(t, st, "default", auth.RolePU, "A")
	peB := nstest.IssueCreds(t, st, "default", auth.RolePE, "B")
	puAll := st.CredsPath("default", auth.RolePU)

	tr := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}
	if _, err := client(peB).Register(ctx, "B", PE{ID: "b1", Transports: tr, Lifetime: time.Minute}); err != nil {
		t.Fatal(err)
	}
	pe := client(peA)
	if _, err := pe.Register(ctx, "A", PE{ID: "a1", Transports: tr, Lifetime: time.Minute}); err != nil {
		t.Fatal(err)
	}

	// Their own jobs: the PU resolves, watches and caches A; so does the PE.
	pu := client(puA)
	for who, c := range map[string]*Client{"pu": pu, "pe": pe} {
		if ans, err := c.Resolve(ctx, "A", events.ResolveRequest{}); err != nil || len(ans.Elements) != 1 {
			t.Fatalf("%s resolves A: %+v %v", who, ans, err)
		}
		w, err := c.Watcher(ctx, "A")
		if err != nil {
			t.Fatalf("%s watches A: %v", who, err)
		}
		if ch := nextWatched(t, w, 5*time.Second); ch.PEID != "a1" {
			t.Fatalf("%s's watch of A: %+v", who, ch)
		}
	}
	recs, err := client(puAll).Pools(ctx)
	if err != nil || len(recs) != 2 {
		t.Fatalf("a pu of every pool lists the pools: %v %v", recs, err)
	}

	// Other pools through the client: refused at once, as permission
	// errors (well within the client's 5 s timeout).
	for name, try := range map[string]func() error{
		"resolve B": func() error { _, err := pu.Resolve(ctx, "B", events.ResolveRequest{}); return err },
		"watch B":   func() error { _, err := pu.Watcher(ctx, "B"); return err },
		"list pools": func() error {
			_, err := pu.Pools(ctx)
			return err
		},
		"pe resolves B": func() error { _, err := pe.Resolve(ctx, "B", events.ResolveRequest{}); return err },
	} {
		if err := try(); !errors.Is(err, ErrPermission) {
			t.Errorf("%s: %v, want ErrPermission", name, err)
		}
	}

	// Raw attempts of an insider.
	raw := dialPriv(t, url, puA)
	rawPE := dialPriv(t, url, peA)
	_, puKey := nstest.ReadCreds(t, puA)
	puPub, _ := puKey.PublicKey()
	sub := func(c *privConn, subject string) func() error {
		return func() error { _, err := c.SubscribeSync(subject); return err }
	}
	pub := func(c *privConn, subject string) func() error {
		return func() error { return c.Publish(subject, []byte("+ACK")) }
	}
	// Junk on its own pool's event subject: refused before it is stored
	// (RSP_EVENTS keeps messages of at most 64 KiB).
	js, err := jetstream.New(rawPE.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "rsp.default.register.A", make([]byte, 200<<10)); err == nil || !strings.Contains(err.Error(), "maximum") {
		t.Errorf("200 KiB of junk on the event subject: %v, want refused for its size", err)
	}

	for _, c := range []struct {
		who     *privConn
		what    string
		subject string
		do      func() error
	}{
		{rawPE, "every inbox", "_INBOX.>", nil},
		{rawPE, "the pu's inbox", events.InboxPrefix(puPub) + ".>", nil},
		{raw, "pool B's changes", "rsp.default.changes.B", nil},
		{raw, "pool B's outcomes", "rsp.default.outcome.B.>", nil},
		{raw, "the event stream's subjects", "rsp.default.register.>", nil},
		{raw, "the bucket's subjects", "$KV.rsp_default.>", nil},
		{raw, "JetStream deliveries", "$JS.>", nil},
		{raw, "read pool B", "rsp.default.read.B", pub(raw, "rsp.default.read.B")},
		{raw, "list the pools", "rsp.default.pools", pub(raw, "rsp.default.pools")},
		{raw, "stream info of the bucket", "$JS.API.STREAM.INFO.KV_rsp_default", pub(raw, "$JS.API.STREAM.INFO.KV_rsp_default")},
		{raw, "create a consumer on the bucket", "$JS.API.CONSUMER.CREATE.KV_rsp_default", pub(raw, "$JS.API.CONSUMER.CREATE.KV_rsp_default")},
		{raw, "delete the name servers' consumer", "$JS.API.CONSUMER.DELETE.RSP_EVENTS.rsp-nameservers-default", pub(raw, "$JS.API.CONSUMER.DELETE.RSP_EVENTS.rsp-nameservers-default")},
		{raw, "direct get from pool B", "$JS.API.DIRECT.GET.KV_rsp_default.$KV.rsp_default.B.b1", pub(raw, "$JS.API.DIRECT.GET.KV_rsp_default.$KV.rsp_default.B.b1")},
		{raw, "message get", "$JS.API.STREAM.MSG.GET.KV_rsp_default", pub(raw, "$JS.API.STREAM.MSG.GET.KV_rsp_default")},
		{raw, "ack a name server's delivery", "$JS.ACK.RSP_EVENTS.rsp-nameservers-default.1.1.1.0.0", pub(raw, "$JS.ACK.RSP_EVENTS.rsp-nameservers-default.1.1.1.0.0")},
		{rawPE, "nak a name server's delivery", "$JS.ACK.RSP_EVENTS.rsp-nameservers-default.1.2.2.0.0", pub(rawPE, "$JS.ACK.RSP_EVENTS.rsp-nameservers-default.1.2.2.0.0")},
		{rawPE, "register in pool B", "rsp.default.register.B", pub(rawPE, "rsp.default.register.B")},
		{rawPE, "write the bucket", "$KV.rsp_default.A.a1", pub(rawPE, "$KV.rsp_default.A.a1")},
		// A request whose reply subject is a name server's ack: a PE
		// answering it would ack for the PU (the server refuses a reply
		// subject its sender may not subscribe to; Serve also answers
		// inboxes only, TestServeRepliesToInboxesOnly).
		{raw, "make a PE ack for it", "$JS.ACK.RSP_EVENTS.rsp-nameservers-default.1.1.1.0.0", func() error {
			return raw.PublishRequest(events.ServiceSubject("default", "A", "a1"), "$JS.ACK.RSP_EVENTS.rsp-nameservers-default.1.1.1.0.0", nil)
		}},
	} {
		do := c.do
		if do == nil {
			do = sub(c.who, c.subject)
		}
		c.who.refused(t, c.what, c.subject, do)
	}
}

// TestServeRepliesToInboxesOnly: a PE's Server answers requests whose
// reply subject is an inbox, and ignores others: its reply permission
// would let a requester make it publish anywhere (a JetStream ack).
func TestServeRepliesToInboxesOnly(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pe := newClient(t, connect(t, s))
	srv, err := pe.Serve(ctx, "A", PE{ID: "a2", Lifetime: time.Minute}, func(context.Context, *Request) (*Response, error) {
		return &Response{Data: []byte("+ACK")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Close(context.Background()) }()
	nc := connect(t, s)
	// A reply subject that is no inbox. (Not a $JS.ACK one: this server
	// does not pass those to plain subscribers, and the name server's own
	// acks of the PE's events would be on others.)
	const notInbox = "rsp.test.not-an-inbox"
	acks, err := nc.SubscribeSync(notInbox)
	if err != nil {
		t.Fatal(err)
	}
	svc := events.ServiceSubject(events.DefaultScope, "A", "a2")
	if m, err := nc.Request(svc, nil, 5*time.Second); err != nil || string(m.Data) != "+ACK" {
		t.Fatalf("a plain request to the PE: %v %v", m, err)
	}
	if err := nc.PublishRequest(svc, notInbox, nil); err != nil {
		t.Fatal(err)
	}
	if m, err := acks.NextMsg(500 * time.Millisecond); err == nil {
		t.Fatalf("the PE replied on %s", m.Subject)
	}
}

// TestDenialsSharedPerConnection: the clients of one connection share one
// hook on its error handler, so a connection with many short-lived
// clients does not grow a chain of handlers.
func TestDenialsSharedPerConnection(t *testing.T) {
	nc := connect(t, startNATS(t))
	a, b := newClient(t, nc), newClient(t, nc)
	if a.denials != b.denials {
		t.Fatal("two clients of one connection hook its error handler twice")
	}
	other := newClient(t, connect(t, startNATS(t)))
	if other.denials == a.denials {
		t.Fatal("clients of two connections share their denials")
	}
}
