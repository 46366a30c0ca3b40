package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestCheckpointAtLoad: a record whose lifetime ran out while a name
// server ran, but whose removal was lost (a crash between the two), is
// not served by the next name server even in its first moments, when it
// still holds lifetimes: the expiry checkpoint the first one left says the
// PE was overdue. The sweeper then removes it, with reason expired.
func TestCheckpointAtLoad(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	first := startNameServer(t, s, server.Config{})
	owner := newSigner(t, nc)
	if out := owner.register("cp", registration("live", 1)); !out.Accepted {
		t.Fatalf("registration refused: %+v", out.Error)
	}
	// Let the replica run (probes pass) and write checkpoints well past
	// the zombie's deadline below.
	time.Sleep(3 * time.Second)
	first.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, events.Bucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := owner.kp.PublicKey()
	gone := time.Now().Add(-10 * time.Second).UTC()
	zombie := events.Record{PEID: "zombie", Pool: "cp", LifetimeMS: 1000, Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:9"}},
		Policy: events.PolicyParams{Name: "round_robin"}, Signer: pub, RegisteredAt: gone, UpdatedAt: gone, LastSeq: 1, Home: "lost"}
	if _, err := kv.Put(ctx, "cp.zombie", events.Marshal(zombie)); err != nil {
		t.Fatal(err)
	}

	changes, err := nc.SubscribeSync(events.Subject("default", events.KindChanges, "cp"))
	if err != nil {
		t.Fatal(err)
	}
	startNameServer(t, s, server.Config{})
	a := resolve(t, nc, "cp", events.ResolveRequest{Max: 10})
	if a.Error != nil || len(a.Elements) != 1 || a.Elements[0].PEID != "live" {
		t.Fatalf("first answer after the restart: %+v, want only the live PE", a)
	}
	wantRemove(t, nextChange(t, changes, 5*time.Second), "zombie", events.ReasonExpired)
}

// TestAcknowledgedOutlivesSkew: events the stream acknowledged while no
// name server ran are applied when one comes back, however long after:
// the clock-skew rule compares an event's time with when the stream
// stored it, not with when it is applied.
func TestAcknowledgedOutlivesSkew(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	cfg := server.Config{ClockSkew: time.Second}
	first := startNameServer(t, s, cfg)
	owner := newSigner(t, nc)
	if out := owner.register("late", registration("gone", 1)); !out.Accepted {
		t.Fatalf("registration refused: %+v", out.Error)
	}
	first.Stop()

	// Acknowledged by the stream; no name server to apply them.
	owner.publish(events.Subject("default", events.KindRegister, "late"), "kept-1", events.Marshal(registration("kept", 1)))
	owner.publish(events.Subject("default", events.KindDeregister, "late"), "gone-2",
		events.Marshal(events.Deregistration{PEID: "gone", Seq: 2, Time: time.Now().UTC()}))
	time.Sleep(3 * cfg.ClockSkew)

	startNameServer(t, s, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := resolve(t, nc, "late", events.ResolveRequest{Max: 10})
		if a.Error == nil && len(a.Elements) == 1 && a.Elements[0].PEID == "kept" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("want only kept in pool late, got %+v", a)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
