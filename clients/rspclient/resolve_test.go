package rspclient

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// responder answers resolutions of pool echo with what answer makes of the
// request; it stands in for a name server, honest or not.
func responder(t *testing.T, nc *nats.Conn, answer func(req *nats.Msg) *nats.Msg) {
	t.Helper()
	sub, err := nc.Subscribe(events.Subject("default", events.KindResolve, "echo"), func(req *nats.Msg) {
		if m := answer(req); m != nil {
			_ = req.RespondMsg(m)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

var goodAnswer = events.ResolveAnswer{Scope: "default", Pool: "echo", Policy: "round_robin", Revision: 7,
	Elements: []events.Element{{PEID: "e1", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7"}}, Policy: events.PolicyParams{Name: "round_robin"}}}}

func signedAnswer(t *testing.T, kp nkeys.KeyPair, subject, nonce string, body []byte) *nats.Msg {
	m := nats.NewMsg("")
	m.Data = body
	if err := events.SignAnswer(m.Header, kp, subject, nonce, body); err != nil {
		t.Error(err)
	}
	return m
}

func TestResolveVerifiesAnswers(t *testing.T) {
	s := startNATS(t)
	ns := connect(t, s)
	c := newClient(t, connect(t, s), WithTimeout(2*time.Second))
	server, _ := nkeys.CreateUser()
	body := events.Marshal(goodAnswer)
	ctx := context.Background()

	var lastReq *nats.Msg
	var mode string
	responder(t, ns, func(req *nats.Msg) *nats.Msg {
		lastReq = req
		nonce := req.Header.Get(events.HeaderNonce)
		switch mode {
		case "good":
			return signedAnswer(t, server, req.Subject, nonce, body)
		case "unsigned":
			m := nats.NewMsg("")
			m.Data = body
			return m
		case "other nonce": // a replayed answer to another request
			return signedAnswer(t, server, req.Subject, "some-other-nonce", body)
		case "other subject":
			return signedAnswer(t, server, "rsp.default.resolve.other", nonce, body)
		case "tampered":
			m := signedAnswer(t, server, req.Subject, nonce, body)
			m.Data = []byte(strings.Replace(string(body), "127.0.0.1:7", "10.6.6.6:7", 1))
			return m
		case "signer swapped":
			m := signedAnswer(t, server, req.Subject, nonce, body)
			other, _ := nkeys.CreateUser()
			pub, _ := other.PublicKey()
			m.Header.Set(events.HeaderSigner, pub)
			return m
		case "garbage signature":
			m := signedAnswer(t, server, req.Subject, nonce, body)
			m.Header.Set(events.HeaderSignature, "!!!")
			return m
		case "not_found":
			eb := events.Marshal(events.ResolveAnswer{Error: &events.Error{Code: events.CodeNotFound, Message: "no pool echo in scope default"}})
			return signedAnswer(t, server, req.Subject, nonce, eb)
		case "silent":
			return nil
		}
		t.Errorf("unknown mode %q", mode)
		return nil
	})

	mode = "good"
	ans, err := c.Resolve(ctx, "echo", events.ResolveRequest{})
	if err != nil {
		t.Fatalf("good answer refused: %v", err)
	}
	if len(ans.Elements) != 1 || ans.Elements[0].PEID != "e1" || ans.Revision != 7 {
		t.Errorf("answer = %+v", ans)
	}
	if nonce := lastReq.Header.Get(events.HeaderNonce); nonce == "" {
		t.Error("request carried no Rsp-Nonce")
	}
	if len(lastReq.Data) != 0 {
		t.Errorf("empty request sent body %q, want none", lastReq.Data)
	}
	first := lastReq.Header.Get(events.HeaderNonce)
	if _, err := c.Resolve(ctx, "echo", events.ResolveRequest{Max: 2, Exclude: []string{"e9"}, Affinity: "e1"}); err != nil {
		t.Fatal(err)
	}
	if lastReq.Header.Get(events.HeaderNonce) == first {
		t.Error("two requests carried the same nonce")
	}
	var q events.ResolveRequest
	if err := events.Decode(lastReq.Data, &q); err != nil || q.Max != 2 || q.Affinity != "e1" || len(q.Exclude) != 1 {
		t.Errorf("request body %s decoded to %+v, %v", lastReq.Data, q, err)
	}

	for _, bad := range []string{"unsigned", "other nonce", "other subject", "tampered", "signer swapped", "garbage signature"} {
		mode = bad
		ans, err := c.Resolve(ctx, "echo", events.ResolveRequest{})
		if err == nil {
			t.Errorf("%s answer accepted: %+v", bad, ans)
			continue
		}
		if !strings.Contains(err.Error(), "unverified") {
			t.Errorf("%s answer: error %q does not say it was unverified", bad, err)
		}
	}

	mode = "not_found"
	_, err = c.Resolve(ctx, "echo", events.ResolveRequest{})
	var ee *events.Error
	if !errors.As(err, &ee) || ee.Code != events.CodeNotFound {
		t.Fatalf("error answer gave %v, want an *events.Error not_found", err)
	}

	mode = "silent"
	start := time.Now()
	if _, err := c.Resolve(ctx, "echo", events.ResolveRequest{}); err == nil {
		t.Error("no answer, no error")
	} else if d := time.Since(start); d > 4*time.Second {
		t.Errorf("silent responder took %s, want about the 2s timeout", d)
	}
}

func TestResolveNoResponders(t *testing.T) {
	c := newClient(t, connect(t, startNATS(t)))
	_, err := c.Resolve(context.Background(), "nobody-home", events.ResolveRequest{})
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("err = %v, want no responders", err)
	}
}

func TestBadInputNamesField(t *testing.T) {
	c := newClient(t, connect(t, startNATS(t)), WithTimeout(time.Second))
	ctx := context.Background()
	tcp := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7"}}

	_, err := c.Resolve(ctx, "bad.pool", events.ResolveRequest{})
	wantField(t, err, "pool")
	_, err = c.Resolve(ctx, "echo", events.ResolveRequest{Max: 1000})
	wantField(t, err, "max")
	_, err = c.Resolve(ctx, "echo", events.ResolveRequest{Exclude: []string{"ok", "not ok"}})
	wantField(t, err, "exclude[1]")
	_, err = c.Resolve(ctx, "echo", events.ResolveRequest{Affinity: "a.b"})
	wantField(t, err, "affinity")

	for _, tc := range []struct {
		name, pool string
		pe         PE
		field      string
	}{
		{"pool", "", PE{Transports: tcp}, "pool"},
		{"pool chars", "echo pool", PE{Transports: tcp}, "pool"},
		{"id", "echo", PE{ID: "-x", Transports: tcp}, "pe_id"},
		{"no transports", "echo", PE{}, "transports"},
		{"proto", "echo", PE{Transports: []events.Transport{{Proto: "quic", Addr: "h:1"}}}, "transports[0].proto"},
		{"addr", "echo", PE{Transports: []events.Transport{tcp[0], {Proto: "udp", Addr: "nohost"}}}, "transports[1].addr"},
		{"nats subject", "echo", PE{Transports: []events.Transport{{Proto: "nats"}}}, "transports[0].subject"},
		{"lifetime", "echo", PE{Transports: tcp, Lifetime: -time.Second}, "lifetime"},
		{"load", "echo", PE{Transports: tcp, Policy: events.PolicyParams{Load: 1.5}}, "policy.load"},
		{"weight", "echo", PE{Transports: tcp, Policy: events.PolicyParams{Weight: -1}}, "policy.weight"},
	} {
		t.Run("register "+tc.name, func(t *testing.T) {
			_, err := c.Register(ctx, tc.pool, tc.pe)
			wantField(t, err, tc.field)
			if tc.field != "pool" {
				wantField(t, tc.pe.Validate(), tc.field)
			}
		})
	}

	err = c.Deregister(ctx, "echo", "a b")
	wantField(t, err, "pe_id")
	err = c.Deregister(ctx, "ec.ho", "a")
	wantField(t, err, "pool")
	err = c.ReportFailure(ctx, "echo", "", "down")
	wantField(t, err, "pe_id")
	err = c.ReportFailure(ctx, "", "a", "down")
	wantField(t, err, "pool")
	_, err = c.Watch(ctx, "a*")
	wantField(t, err, "pool")
}

func TestRegistrationBodyDefaults(t *testing.T) {
	c := newClient(t, connect(t, startNATS(t)))
	meta := map[string]string{"zone": "a"}
	tr := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7"}}
	b, err := c.registrationBody("echo", PE{Transports: tr, Meta: meta, Lifetime: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if events.CheckPEID(b.PEID) != nil {
		t.Errorf("random id %q is not a valid PE id", b.PEID)
	}
	if b.Policy.Name != "round_robin" {
		t.Errorf("policy = %q, want the default round_robin", b.Policy.Name)
	}
	if b.LifetimeMS != 1500 || b.Lifetime() != 2*time.Second {
		t.Errorf("lifetime_ms = %d (%s)", b.LifetimeMS, b.Lifetime())
	}
	meta["zone"] = "changed"
	tr[0].Addr = "changed:1"
	if b.Meta["zone"] != "a" || b.Transports[0].Addr != "127.0.0.1:7" {
		t.Error("body shares the caller's map or slice")
	}
	b2, _ := c.registrationBody("echo", PE{Transports: tr})
	if b2.PEID == b.PEID {
		t.Error("two random ids are equal")
	}
	if b2.LifetimeMS != 0 || b2.Lifetime() != events.DefaultLifetime {
		t.Errorf("default lifetime: lifetime_ms %d (%s)", b2.LifetimeMS, b2.Lifetime())
	}
	if b3, _ := c.registrationBody("echo", PE{Transports: tr, Lifetime: time.Microsecond}); b3.LifetimeMS != 1 {
		t.Errorf("1µs lifetime gave lifetime_ms %d, want 1 (rounded up)", b3.LifetimeMS)
	}
}
