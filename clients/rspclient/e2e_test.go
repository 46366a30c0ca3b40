package rspclient

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
)

func nextChange(t *testing.T, ch <-chan events.Change) events.Change {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no change within 5s")
	}
	return events.Change{}
}

// TestEndToEnd is a smoke test of the library against the real name
// server; the name server's own tests cover the protocol in depth.
func TestEndToEnd(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	pe := newClient(t, connect(t, s), WithLogger(testLogger()))
	pu := newClient(t, connect(t, s), WithLogger(testLogger()))

	// Unknown pool: an error answer with code not_found.
	_, err := pu.Resolve(ctx, "echo", events.ResolveRequest{})
	var ee *events.Error
	if !errors.As(err, &ee) || ee.Code != events.CodeNotFound {
		t.Fatalf("resolve of an empty pool: %v, want not_found", err)
	}

	// A live address: the name server's check of the reported PE passes.
	tr := []events.Transport{{Proto: "tcp", Addr: liveAddr(t)}}
	a, err := pe.Register(ctx, "echo", PE{ID: "a", Transports: tr, Lifetime: time.Second, Meta: map[string]string{"zone": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() != "a" || a.Pool() != "echo" {
		t.Errorf("registration is %s/%s", a.Pool(), a.ID())
	}

	wctx, wcancel := context.WithCancel(context.Background()) // no deadline, as the CLI's
	changes, err := pu.Watch(wctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpAdd || c.PEID != "a" || c.Element == nil || c.Element.Meta["zone"] != "x" {
		t.Errorf("first watched change = %+v, want the add of a", c)
	}

	b, err := pe.Register(ctx, "echo", PE{Transports: tr, Lifetime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpAdd || c.PEID != b.ID() {
		t.Errorf("change = %+v, want the add of %s", c, b.ID())
	}

	// Renewals keep a (lifetime 1 s) alive well past its lifetime, and
	// change nothing a watcher would see.
	time.Sleep(2500 * time.Millisecond)
	ans, err := pu.Resolve(ctx, "echo", events.ResolveRequest{Max: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Elements) != 2 {
		t.Fatalf("after 2.5 s: %d PEs, want 2 (renewals lost?): %+v", len(ans.Elements), ans)
	}
	select {
	case err := <-chanErr(a):
		t.Fatalf("registration ended: %v", err)
	default:
	}

	if err := a.UpdateLoad(ctx, 0.5); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpUpdate || c.PEID != "a" || c.Element.Policy.Load != 0.5 {
		t.Errorf("change = %+v, want an update of a with load 0.5", c)
	}
	wantField(t, a.UpdateLoad(ctx, -1), "policy.load")

	// Another key may not take over PE a.
	thief := newClient(t, connect(t, s))
	_, err = thief.Register(ctx, "echo", PE{ID: "a", Transports: tr})
	if !errors.As(err, &ee) || (ee.Code != events.CodeForbidden && ee.Code != events.CodeConflict) {
		t.Errorf("masquerade: %v, want forbidden or conflict", err)
	}
	if err := thief.Deregister(ctx, "echo", "a"); err == nil {
		t.Error("another key deregistered PE a")
	}

	recs, err := pu.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Pool != "echo" || recs[0].PEID > recs[1].PEID || recs[0].Signer != pe.PublicKey() {
		t.Errorf("pools = %+v", recs)
	}

	if err := pu.ReportFailure(ctx, "echo", b.ID(), "connect refused"); err != nil {
		t.Errorf("report failure: %v", err)
	}

	if err := a.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed after Deregister")
	}
	if !errors.Is(a.Err(), ErrDeregistered) {
		t.Errorf("Err = %v, want ErrDeregistered", a.Err())
	}
	if err := a.Deregister(ctx); err != nil {
		t.Errorf("second Deregister: %v", err)
	}
	if c := nextChange(t, changes); c.Op != events.OpRemove || c.PEID != "a" {
		t.Errorf("change = %+v, want the remove of a", c)
	}

	// Deregistering by id, as the CLI does from another process with the
	// same key file.
	other := newClient(t, connect(t, s), WithKey(pe.kp))
	if err := other.Deregister(ctx, "echo", b.ID()); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpRemove || c.PEID != b.ID() {
		t.Errorf("change = %+v, want the remove of %s", c, b.ID())
	}
	wcancel()
	for range changes {
	}
}

func chanErr(r *Registration) <-chan error {
	ch := make(chan error, 1)
	select {
	case <-r.Done():
		ch <- r.Err()
	default:
	}
	return ch
}
