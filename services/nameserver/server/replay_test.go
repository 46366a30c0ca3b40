package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/schemas"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestReplayCannotResurrect: captured events of a PE, replayed under new
// message ids after the PE left (deregistered or expired), are refused:
// the removal's tombstone keeps the PE id's owner and last seq. Neither
// does a replayed deregistration undo anything, and another signer cannot
// take the id while the tombstone lives; the owner's own new event brings
// the PE back.
func TestReplayCannotResurrect(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	owner, other := newSigner(t, nc), newSigner(t, nc)

	first, renewal := registration("pe-1", 1), registration("pe-1", 2)
	for _, reg := range []events.Registration{first, renewal} {
		if out := owner.register("replay", reg); !out.Accepted {
			t.Fatalf("registration %d refused: %+v", reg.Seq, out.Error)
		}
	}
	dereg := events.Marshal(events.Deregistration{PEID: "pe-1", Seq: 3, Time: time.Now().UTC()})
	if out := owner.event(events.KindDeregister, "replay", "pe-1", 3, dereg); !out.Accepted {
		t.Fatalf("deregistration refused: %+v", out.Error)
	}

	// The purge marker carries the tombstone.
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "KV_"+events.Bucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	marker, err := st.GetLastMsgForSubject(ctx, "$KV."+events.Bucket("default")+".replay.pe-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate("tombstone", marker.Data); err != nil {
		t.Fatal(err)
	}
	if tomb := decode[events.Tombstone](t, marker.Data); tomb.LastSeq != 3 || tomb.Reason != events.ReasonDeregistered || tomb.PEID != "pe-1" || tomb.Pool != "replay" {
		t.Fatalf("tombstone %+v", tomb)
	}

	// The same signed bodies, as an attacker who captured them sends them
	// (event publishes each under a new message id).
	wantRefused(t, owner.register("replay", first), events.CodeStale, "last applied seq 3")
	wantRefused(t, owner.register("replay", renewal), events.CodeStale, "removed: deregistered")
	wantRefused(t, owner.event(events.KindDeregister, "replay", "pe-1", 3, dereg), events.CodeNotFound, "pe-1")
	if a := resolve(t, nc, "replay", events.ResolveRequest{}); a.Error == nil || a.Error.Code != events.CodeNotFound {
		t.Fatalf("a replay brought the PE back: %+v", a)
	}
	wantRefused(t, other.register("replay", registration("pe-1", 10)), events.CodeForbidden, "removed (deregistered)")

	// A new event of its owner registers it again.
	if out := owner.register("replay", registration("pe-1", 4)); !out.Accepted {
		t.Fatalf("the owner's new registration refused: %+v", out.Error)
	}
	if a := resolve(t, nc, "replay", events.ResolveRequest{}); a.Error != nil || len(a.Elements) != 1 {
		t.Fatalf("want pe-1 back, got %+v", a)
	}

	// Expired: the name server's removal keeps the last seq too.
	changes, err := nc.SubscribeSync(events.Subject("default", events.KindChanges, "replay"))
	if err != nil {
		t.Fatal(err)
	}
	short := registration("pe-2", 5)
	short.LifetimeMS = 1000
	if out := owner.register("replay", short); !out.Accepted {
		t.Fatalf("registration refused: %+v", out.Error)
	}
	if c := nextChange(t, changes, 5*time.Second); c.Op != events.OpAdd || c.PEID != "pe-2" {
		t.Fatalf("want pe-2 added, got %+v", c)
	}
	wantRemove(t, nextChange(t, changes, 10*time.Second), "pe-2", events.ReasonExpired)
	wantRefused(t, owner.register("replay", short), events.CodeStale, "removed: expired")
	wantRefused(t, other.register("replay", registration("pe-2", 6)), events.CodeForbidden, "removed (expired)")
}

// TestTombstoneLifeEnds: once the removal's tombstone is gone, the PE id
// is free for any signer.
func TestTombstoneLifeEnds(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{TombstoneLife: 2 * time.Second})
	nc := connect(t, s)
	owner, other := newSigner(t, nc), newSigner(t, nc)
	if out := owner.register("free", registration("pe-1", 1)); !out.Accepted {
		t.Fatalf("registration refused: %+v", out.Error)
	}
	if out := owner.deregister("free", "pe-1", 2); !out.Accepted {
		t.Fatalf("deregistration refused: %+v", out.Error)
	}
	wantRefused(t, other.register("free", registration("pe-1", 1)), events.CodeForbidden, "belongs to another signer")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := other.register("free", registration("pe-1", uint64(time.Now().UnixMicro())))
		if out.Accepted {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PE id is still held 10 s after a 2 s tombstone life: %+v", out.Error)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
