package rspclient

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// recordConn reads the connection that PE id of pool's record names. Each
// read is bounded by 2 s: right after a node dies the bucket's stream may
// be electing a leader, and the caller retries.
func recordConn(ctx context.Context, js jetstream.JetStream, pool, id string) (*events.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, events.Bucket("default"))
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, events.Key(pool, id))
	if err != nil {
		return nil, fmt.Errorf("record of %s: %w", id, err)
	}
	var rec events.Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, err
	}
	return rec.Conn, nil
}

// TestRegistrationSurvivesServerLoss: a PE connected to node 1 of a
// three-node cluster, given all three URLs, registers with a 2 s
// lifetime; node 1 is killed. The PE's connection moves to another node,
// it registers again over it at once (its record names the new
// connection) and keeps renewing: for three lifetimes after the kill the
// PE resolves every time it is asked, no watcher sees it removed, and the
// registration is still alive.
//
// Bound: about 8 s (1 s setup, 6 s of lifetimes), 25 s at worst.
func TestRegistrationSurvivesServerLoss(t *testing.T) {
	c := nstest.StartCluster(t, 3)
	for i := range c.Size() {
		c.StartNameServer(t, c.URLs(i), server.Config{ID: fmt.Sprintf("ns-%d", i+1)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()

	peConn := c.Connect(t, c.URLs(0))
	first := peConn.ConnectedServerName()
	// The first event on a cluster just formed may wait for the
	// consumer's leader: more than the default 5 s now and then.
	pe := newClient(t, peConn, WithLogger(testLogger()), WithTimeout(15*time.Second))
	const lifetime = 2 * time.Second
	reg, err := pe.Register(ctx, "keep", PE{ID: "k", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	puConn := c.Connect(t, c.URLs(1))
	pu := newClient(t, puConn)
	js, _ := jetstream.New(puConn)
	before, err := recordConn(ctx, js, "keep", "k")
	if err != nil {
		t.Fatal(err)
	}
	if before == nil || before.Server != c.Server(0).ID() {
		t.Fatalf("record names connection %+v, want one on %s", before, c.Name(0))
	}
	changes, err := pu.Watch(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if ch := nextChange(t, changes); ch.Op != events.OpAdd || ch.PEID != "k" {
		t.Fatalf("change %+v, want the add of k", ch)
	}

	c.Kill(0)
	killed := time.Now()
	var after *events.Conn
	var readErr error
	deadline := time.Now().Add(10 * time.Second)
	for {
		if peConn.Status() == nats.CONNECTED && peConn.ConnectedServerName() != first {
			if after, readErr = recordConn(ctx, js, "keep", "k"); readErr == nil && after != nil && after.Server != before.Server {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("PE connection on %q (%s), record names %+v (last read: %v), 10 s after %s was killed", peConn.ConnectedServerName(), peConn.Status(), after, readErr, first)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("PE moved from %s to %s; registered again over its new connection %s after the kill", first, peConn.ConnectedServerName(), time.Since(killed).Round(time.Millisecond))
	if after.Server != peConn.ConnectedServerId() {
		t.Errorf("record names server %s, the PE is connected to %s", after.Server, peConn.ConnectedServerId())
	}

	// Three lifetimes after the kill: always resolvable, never removed.
	resolves := 0
	for time.Since(killed) < 3*lifetime {
		a, err := pu.Resolve(ctx, "keep", events.ResolveRequest{})
		if err != nil || len(a.Elements) != 1 || a.Elements[0].PEID != "k" {
			t.Fatalf("%s after the kill: resolve %v, %+v", time.Since(killed).Round(time.Millisecond), err, a)
		}
		resolves++
		select {
		case ch := <-changes:
			if ch.Op == events.OpRemove {
				t.Fatalf("%s after the kill: %+v", time.Since(killed).Round(time.Millisecond), ch)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := reg.Err(); err != nil {
		t.Fatalf("registration ended: %v", err)
	}
	t.Logf("k resolved %d times in %s (%d lifetimes) after the kill", resolves, 3*lifetime, 3)
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}
