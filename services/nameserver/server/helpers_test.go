package server_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/events"

	"github.com/rserpool/rsp/services/nameserver/nstest"
)

var (
	startNATS       = nstest.StartNATS
	connect         = nstest.Connect
	startNameServer = nstest.StartNameServer
)

// nextMsg waits for a message on sub or fails the test.
func nextMsg(t testing.TB, sub *nats.Subscription, within time.Duration) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(within)
	if err != nil {
		t.Fatalf("no message on %s within %s: %v", sub.Subject, within, err)
	}
	return m
}

func decode[T any](t testing.TB, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return v
}

// signer publishes signed events the way the client library does, so that
// tests can also send what the library never would (replays, forgeries).
type signer struct {
	t   testing.TB
	nc  *nats.Conn
	kp  nkeys.KeyPair
	jwt string // sent in Rsp-Jwt when set
}

func newSigner(t testing.TB, nc *nats.Conn) *signer {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return &signer{t: t, nc: nc, kp: kp}
}

// publish signs body for subject and publishes it through JetStream.
func (s *signer) publish(subject string, msgID string, body []byte) {
	s.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	if err := events.SignEvent(m, s.kp); err != nil {
		s.t.Fatal(err)
	}
	if s.jwt != "" {
		events.SetJWT(m, s.jwt)
	}
	s.publishMsg(m, msgID)
}

func (s *signer) publishMsg(m *nats.Msg, msgID string) {
	s.t.Helper()
	m.Header.Set(events.HeaderMsgID, msgID)
	js, _ := jetstream.New(s.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		s.t.Fatalf("publish %s: %v", m.Subject, err)
	}
}

func registration(id string, seq uint64) events.Registration {
	return events.Registration{
		PEID: id, Seq: seq, Time: time.Now().UTC(), LifetimeMS: 30000,
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}},
		Policy:     events.PolicyParams{Name: "round_robin"},
	}
}

// register publishes a registration and returns its outcome.
func (s *signer) register(pool string, reg events.Registration) events.Outcome {
	s.t.Helper()
	return s.event(events.KindRegister, pool, reg.PEID, reg.Seq, events.Marshal(reg))
}

func (s *signer) deregister(pool, id string, seq uint64) events.Outcome {
	s.t.Helper()
	body := events.Marshal(events.Deregistration{PEID: id, Seq: seq, Time: time.Now().UTC()})
	return s.event(events.KindDeregister, pool, id, seq, body)
}

// event publishes a signed event and waits for its outcome.
func (s *signer) event(kind events.Kind, pool, id string, seq uint64, body []byte) events.Outcome {
	s.t.Helper()
	sub, err := s.nc.SubscribeSync(events.OutcomeSubject("default", pool, id))
	if err != nil {
		s.t.Fatal(err)
	}
	defer sub.Unsubscribe()
	s.publish(events.Subject("default", kind, pool), nuid.Next(), body)
	for {
		out := decode[events.Outcome](s.t, nextMsg(s.t, sub, 5*time.Second).Data)
		if out.Seq == seq {
			return out
		}
	}
}

// resolve asks for pool and decodes the answer.
func resolve(t testing.TB, nc *nats.Conn, pool string, q events.ResolveRequest) events.ResolveAnswer {
	t.Helper()
	m, err := nc.Request(events.Subject("default", events.KindResolve, pool), events.Marshal(q), 5*time.Second)
	if err != nil {
		t.Fatalf("resolve %s: %v", pool, err)
	}
	return decode[events.ResolveAnswer](t, m.Data)
}

func ids(els []events.Element) []string {
	out := make([]string, len(els))
	for i, e := range els {
		out[i] = e.PEID
	}
	return out
}
