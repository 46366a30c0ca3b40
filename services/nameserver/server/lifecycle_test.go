package server_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

func TestRoundRobinOrder(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	for _, id := range []string{"c", "a", "b"} {
		if out := pe.register("rr", registration(id, 1)); !out.Accepted {
			t.Fatal(out.Error)
		}
	}
	want := [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}}
	for i, w := range want {
		if got := ids(resolve(t, nc, "rr", events.ResolveRequest{}).Elements); !slices.Equal(got, w) {
			t.Fatalf("answer %d: got %v, want %v", i, got, w)
		}
	}
	// max, exclude and affinity.
	if got := ids(resolve(t, nc, "rr", events.ResolveRequest{Max: 1}).Elements); len(got) != 1 {
		t.Fatalf("max 1: %v", got)
	}
	for range 3 {
		got := ids(resolve(t, nc, "rr", events.ResolveRequest{Exclude: []string{"b"}}).Elements)
		if len(got) != 2 || slices.Contains(got, "b") {
			t.Fatalf("exclude b: %v", got)
		}
		got = ids(resolve(t, nc, "rr", events.ResolveRequest{Affinity: "c", Max: 2}).Elements)
		if len(got) != 2 || got[0] != "c" || got[1] == "c" {
			t.Fatalf("affinity c: %v", got)
		}
	}
	if a := resolve(t, nc, "rr", events.ResolveRequest{Exclude: []string{"a", "b", "c"}}); a.Error == nil || a.Error.Code != events.CodeNotFound {
		t.Fatalf("all excluded: %+v", a)
	}
	// Bad requests name the field.
	for body, field := range map[string]string{`{"max":500}`: "max", `{"max":"x"}`: "max", `{"exclude":["a b"]}`: "exclude[0]", `{`: "body"} {
		m, err := nc.Request("rsp.default.resolve.rr", []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		a := decode[events.ResolveAnswer](t, m.Data)
		if a.Error == nil || a.Error.Code != events.CodeBadRequest || !contains(a.Error.Message, field) {
			t.Fatalf("request %s: want bad_request naming %s, got %s", body, field, m.Data)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestExpiry(t *testing.T) {
	s := startNATS(t)
	ns := startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	changes := mustSub(t, nc, "rsp.default.changes.short")

	reg := registration("brief", 1)
	reg.LifetimeMS = 1000
	if out := pe.register("short", reg); !out.Accepted {
		t.Fatal(out.Error)
	}
	if c := decode[events.Change](t, nextMsg(t, changes, 5*time.Second).Data); c.Op != events.OpAdd {
		t.Fatalf("first change %+v", c)
	}
	start := time.Now()
	c := decode[events.Change](t, nextMsg(t, changes, 5*time.Second).Data)
	if c.Op != events.OpRemove || c.Reason != events.ReasonExpired || c.PEID != "brief" || c.Element == nil {
		t.Fatalf("expiry change %+v", c)
	}
	t.Logf("expired %s after the add was seen (lifetime 1 s)", time.Since(start))
	if a := resolve(t, nc, "short", events.ResolveRequest{}); a.Error == nil || a.Error.Code != events.CodeNotFound {
		t.Fatalf("expired PE still resolves: %+v", a)
	}

	// The purge marker says why the PE left.
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "KV_rsp_default")
	if err != nil {
		t.Fatal(err)
	}
	marker, err := st.GetLastMsgForSubject(context.Background(), "$KV.rsp_default.short.brief")
	if err != nil {
		t.Fatal(err)
	}
	if got := marker.Header.Get(events.HeaderReason); got != events.ReasonExpired {
		t.Fatalf("purge marker %s = %q, want %q", events.HeaderReason, got, events.ReasonExpired)
	}

	// With no name server running nothing expires: the store keeps the
	// record (it has no TTL). The next name server to start gives it a
	// fresh lifetime, then removes it and announces it, since it was
	// not renewed.
	reg = registration("orphan", 2)
	reg.LifetimeMS = 1000
	if out := pe.register("short", reg); !out.Accepted {
		t.Fatal(out.Error)
	}
	nextMsg(t, changes, 5*time.Second) // add
	ns.Stop()
	kv, err := js.KeyValue(context.Background(), "rsp_default")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // 2.5 lifetimes with no name server
	if _, err := kv.Get(context.Background(), "short.orphan"); err != nil {
		t.Fatalf("record gone while no name server ran: %v", err)
	}
	restarted := time.Now()
	startNameServer(t, s, server.Config{})
	c = decode[events.Change](t, nextMsg(t, changes, 5*time.Second).Data)
	if c.Op != events.OpRemove || c.Reason != events.ReasonExpired || c.PEID != "orphan" || c.Element == nil {
		t.Fatalf("late expiry change %+v", c)
	}
	if took := time.Since(restarted); took < time.Second {
		t.Fatalf("removed %s after the restart, before a fresh lifetime (1 s) ran out", took)
	}
	t.Logf("removed %s after the restart (lifetime 1 s)", time.Since(restarted))
}

// TestRenewalsOutliveNameServerOutage: renewals published while no name
// server runs are stored in the stream; a PE that kept sending them is not
// expired when a name server is back, though its record's lifetime ran
// out long before.
func TestRenewalsOutliveNameServerOutage(t *testing.T) {
	s := startNATS(t)
	ns := startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	changes := mustSub(t, nc, "rsp.default.changes.kept")
	reg := registration("alive", 1)
	reg.LifetimeMS = 1000
	if out := pe.register("kept", reg); !out.Accepted {
		t.Fatal(out.Error)
	}
	nextMsg(t, changes, 5*time.Second) // add
	ns.Stop()
	// Renew every 300 ms for 3 s (three lifetimes) with no name server,
	// then keep renewing while one starts.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := uint64(2); ; seq++ {
			r := registration("alive", seq)
			r.LifetimeMS = 1000
			pe.publish(events.Subject("default", events.KindRegister, "kept"), events.MsgID("alive", seq), events.Marshal(r))
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	time.Sleep(3 * time.Second)
	startNameServer(t, s, server.Config{})
	noChange(t, changes, 3*time.Second)
	if a := resolve(t, nc, "kept", events.ResolveRequest{}); a.Error != nil || len(a.Elements) != 1 {
		t.Fatalf("renewed PE not resolvable after the outage: %+v", a)
	}
	close(stop)
	<-done
	// Once it stops renewing it expires as usual.
	if c := nextChange(t, changes, 5*time.Second); c.Op != events.OpRemove || c.Reason != events.ReasonExpired {
		t.Fatalf("change %+v, want remove/expired", c)
	}
}

// TestReplicasShareWork runs two replicas on one server, cuts one off while
// events stream in, and checks that every accepted event is applied.
func TestReplicasShareWork(t *testing.T) {
	s := startNATS(t)
	// ns-a gets a connection of its own so the test can cut it like a crash.
	ncA := connect(t, s)
	a, err := server.Start(context.Background(), ncA, server.Config{ID: "ns-a", AckWait: time.Second, Logger: nstest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	b := startNameServer(t, s, server.Config{ID: "ns-b", AckWait: time.Second})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	outcomes := mustSub(t, nc, "rsp.default.outcome.load.*")
	_ = outcomes.SetPendingLimits(-1, -1)

	const n = 300
	js, _ := jetstream.New(nc)
	publish := func(i int) jetstream.PubAckFuture {
		reg := registration(fmt.Sprintf("pe-%03d", i), 1)
		m := nats.NewMsg("rsp.default.register.load")
		m.Data = events.Marshal(reg)
		if err := events.SignEvent(m, pe.kp); err != nil {
			t.Fatal(err)
		}
		m.Header.Set(events.HeaderMsgID, events.MsgID(reg.PEID, reg.Seq))
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	accepted := map[string]bool{}
	awaitOutcomes := func(count int) {
		for len(accepted) < count {
			o := decode[events.Outcome](t, nextMsg(t, outcomes, 10*time.Second).Data)
			if !o.Accepted {
				t.Fatalf("refused: %+v", o.Error)
			}
			accepted[o.PEID] = true
		}
	}
	// Phase 1: both replicas take events.
	for i := range n / 2 {
		publish(i)
	}
	awaitOutcomes(n / 2)
	// Phase 2: one replica stops while events stream in.
	acks := make([]jetstream.PubAckFuture, 0, n)
	for i := n / 2; i < n; i++ {
		acks = append(acks, publish(i))
		if i == n/2+n/6 {
			// A crash: the connection goes without acks for the events
			// ns-a holds; after AckWait they go to ns-b.
			ncA.Close()
		}
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish not stored: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no PubAck within 5s")
		}
	}
	awaitOutcomes(n)
	homes := map[string]int{}
	kv, _ := js.KeyValue(context.Background(), "rsp_default")
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for k := range keys.Keys() {
		e, err := kv.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		homes[decode[events.Record](t, e.Value()).Home]++
		count++
	}
	if count != n {
		t.Fatalf("%d PEs in the name space, want %d", count, n)
	}
	if homes["ns-a"] == 0 || homes["ns-b"] == 0 {
		t.Fatalf("work not shared: %v", homes)
	}
	t.Logf("records by home name server: %v", homes)
	if got := resolve(t, nc, "load", events.ResolveRequest{Max: 128}); len(got.Elements) != 128 {
		t.Fatalf("resolution by the surviving replica: %d elements", len(got.Elements))
	}
	_ = b
}

// TestOnlyPEMayChangePolicy: the first PE sets the pool's policy, and while
// it is alone it may change it; resolution follows.
func TestOnlyPEMayChangePolicy(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	if out := pe.register("solo", registration("only", 1)); !out.Accepted {
		t.Fatal(out.Error)
	}
	reg := registration("only", 2)
	reg.Policy.Name = "random"
	if out := pe.register("solo", reg); !out.Accepted {
		t.Fatal(out.Error)
	}
	if a := resolve(t, nc, "solo", events.ResolveRequest{}); a.Policy != "random" {
		t.Fatalf("pool policy %q after its only PE changed it to random", a.Policy)
	}
}
