package server_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

func wantRefused(t *testing.T, out events.Outcome, code, mentions string) {
	t.Helper()
	if out.Accepted || out.Error == nil || out.Error.Code != code || !strings.Contains(out.Error.Message, mentions) {
		t.Fatalf("want refused with %s mentioning %q, got %+v (error %+v)", code, mentions, out, out.Error)
	}
}

func TestRefusals(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	owner, other := newSigner(t, nc), newSigner(t, nc)

	if out := owner.register("echo", registration("pe-1", 10)); !out.Accepted {
		t.Fatalf("first registration refused: %+v", out.Error)
	}

	t.Run("bad pe_id", func(t *testing.T) {
		wantRefused(t, owner.register("echo", registration("-bad", 1)), events.CodeBadRequest, "pe_id")
		// A PE id that cannot be a subject token gets its outcome under "_".
		sub := mustSub(t, nc, "rsp.default.outcome.echo._")
		owner.publish("rsp.default.register.echo", "x1", events.Marshal(registration("a.b", 1)))
		wantRefused(t, decode[events.Outcome](t, nextMsg(t, sub, 5e9).Data), events.CodeBadRequest, "pe_id")
	})
	t.Run("bad pool", func(t *testing.T) {
		sub := mustSub(t, nc, "rsp.default.outcome.no!pool.pe-9")
		owner.publish("rsp.default.register.no!pool", "x2", events.Marshal(registration("pe-9", 1)))
		wantRefused(t, decode[events.Outcome](t, nextMsg(t, sub, 5e9).Data), events.CodeBadRequest, "pool")
	})
	t.Run("bad field", func(t *testing.T) {
		reg := registration("pe-2", 1)
		reg.Transports[0].Addr = "no-port"
		wantRefused(t, owner.register("echo", reg), events.CodeBadRequest, "transports[0].addr")
		reg = registration("pe-2", 1)
		reg.Policy.Name = "nope"
		wantRefused(t, owner.register("echo", reg), events.CodeBadRequest, "policy.name")
	})
	t.Run("too big for an answer", func(t *testing.T) {
		// Issue 16: three PEs with 400 KiB of meta each made the pool
		// unresolvable (the answer exceeded max_payload).
		reg := registration("pe-big", 1)
		reg.Meta = map[string]string{"blob": strings.Repeat("x", 400<<10)}
		// The stream refuses it before it is stored (64 KiB at most) ...
		js, _ := jetstream.New(nc)
		if _, err := js.Publish(t.Context(), "rsp.default.register.echo", events.Marshal(reg)); err == nil || !strings.Contains(err.Error(), "maximum") {
			t.Fatalf("a 400 KiB event: %v, want refused by the stream for its size", err)
		}
		// ... and the name server what the stream takes.
		reg.Meta = map[string]string{"blob": strings.Repeat("x", 40<<10)}
		wantRefused(t, owner.register("echo", reg), events.CodeBadRequest, "meta.blob")
		reg.Meta = nil
		for i := range events.MaxMetaKeys {
			if reg.Meta == nil {
				reg.Meta = map[string]string{}
			}
			reg.Meta[strings.Repeat(string(rune('a'+i)), events.MaxMetaKey)] = strings.Repeat("v", events.MaxMetaValue)
		}
		reg.Transports = nil
		for range events.MaxTransports {
			reg.Transports = append(reg.Transports, events.Transport{Proto: "http", Addr: "http://h/" + strings.Repeat("p", 240)})
		}
		wantRefused(t, owner.register("echo", reg), events.CodeBadRequest, "registration")
	})
	t.Run("bad signature", func(t *testing.T) {
		sub := mustSub(t, nc, "rsp.default.outcome.echo.pe-3")
		m := nats.NewMsg("rsp.default.register.echo")
		m.Data = events.Marshal(registration("pe-3", 1))
		_ = events.SignEvent(m, owner.kp)
		m.Data = events.Marshal(registration("pe-3", 2)) // body changed after signing
		owner.publishMsg(m, "x3")
		wantRefused(t, decode[events.Outcome](t, nextMsg(t, sub, 5e9).Data), events.CodeForbidden, "Rsp-Signature")
	})
	t.Run("someone else's PE id", func(t *testing.T) {
		wantRefused(t, other.register("echo", registration("pe-1", 99)), events.CodeForbidden, "another signer")
		wantRefused(t, other.deregister("echo", "pe-1", 99), events.CodeForbidden, "another signer")
	})
	t.Run("replayed event", func(t *testing.T) {
		// Same signed body under a new Nats-Msg-Id: the stream keeps it,
		// the seq check refuses it.
		wantRefused(t, owner.register("echo", registration("pe-1", 10)), events.CodeStale, "seq 10")
	})
	t.Run("out of order seq", func(t *testing.T) {
		if out := owner.register("echo", registration("pe-1", 20)); !out.Accepted {
			t.Fatalf("%+v", out.Error)
		}
		wantRefused(t, owner.register("echo", registration("pe-1", 15)), events.CodeStale, "seq 15")
		wantRefused(t, owner.deregister("echo", "pe-1", 19), events.CodeStale, "seq 19")
	})
	t.Run("time outside skew", func(t *testing.T) {
		reg := registration("pe-4", 1)
		reg.Time = reg.Time.Add(-time30s * 2)
		wantRefused(t, owner.register("echo", reg), events.CodeBadRequest, "time")
	})
	t.Run("policy different from the pool's", func(t *testing.T) {
		reg := registration("pe-5", 1)
		reg.Policy.Name = "random"
		wantRefused(t, owner.register("echo", reg), events.CodeConflict, "round_robin")
	})
	t.Run("deregister unknown", func(t *testing.T) {
		wantRefused(t, owner.deregister("echo", "pe-404", 1), events.CodeNotFound, "pe-404")
	})
	// Nothing refused changed the pool: pe-1 alone, still owned by owner.
	if a := resolve(t, nc, "echo", events.ResolveRequest{Max: 10}); strings.Join(ids(a.Elements), ",") != "pe-1" {
		t.Fatalf("pool after refusals: %v", ids(a.Elements))
	}
	if out := owner.deregister("echo", "pe-1", 21); !out.Accepted {
		t.Fatalf("owner deregistration refused: %+v", out.Error)
	}
}

const time30s = 30 * 1e9

func mustSub(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}
