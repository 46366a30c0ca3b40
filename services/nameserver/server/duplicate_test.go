package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestSamePublishStoredTwice: a publisher sends an event again (its PubAck
// was lost in a stream leader change) and the stream's duplicate detection
// misses it, so RSP_EVENTS holds the event twice. The second copy finds
// its message id on the revision the first wrote and is accepted again
// without a second write; the same signed body under another message id is
// a replay and refused.
func TestSamePublishStoredTwice(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	owner := newSigner(t, nc)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	outcomes, err := nc.SubscribeSync(events.OutcomeSubject("default", "dup", "pe-1"))
	if err != nil {
		t.Fatal(err)
	}
	send := func(kind events.Kind, msgID string, body []byte) events.Outcome {
		t.Helper()
		owner.publish(events.Subject("default", kind, "dup"), msgID, body)
		return decode[events.Outcome](t, nextMsg(t, outcomes, 5*time.Second).Data)
	}
	register := events.Marshal(registration("pe-1", 1))
	if out := send(events.KindRegister, "pe-1-1", register); !out.Accepted {
		t.Fatalf("registration refused: %+v", out.Error)
	}
	kv, err := js.KeyValue(ctx, events.Bucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := kv.Get(ctx, "dup.pe-1")
	if err != nil {
		t.Fatal(err)
	}

	// A duplicates window too short to catch the second publish, as a
	// stream leader change can make it.
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)

	if out := send(events.KindRegister, "pe-1-1", register); !out.Accepted {
		t.Fatalf("the same publish stored twice was refused: %+v", out.Error)
	}
	if cur, err := kv.Get(ctx, "dup.pe-1"); err != nil || cur.Revision() != first.Revision() {
		t.Fatalf("the second copy wrote again: revision %d, first %d (%v)", cur.Revision(), first.Revision(), err)
	}
	wantRefused(t, send(events.KindRegister, "pe-1-1-replayed", register), events.CodeStale, "seq 1")

	deregister := events.Marshal(events.Deregistration{PEID: "pe-1", Seq: 2, Time: time.Now().UTC()})
	if out := send(events.KindDeregister, "pe-1-2", deregister); !out.Accepted {
		t.Fatalf("deregistration refused: %+v", out.Error)
	}
	time.Sleep(300 * time.Millisecond)
	if out := send(events.KindDeregister, "pe-1-2", deregister); !out.Accepted {
		t.Fatalf("the same deregistration stored twice was refused: %+v", out.Error)
	}
	wantRefused(t, send(events.KindDeregister, "pe-1-2-replayed", deregister), events.CodeNotFound, "pe-1")
}
