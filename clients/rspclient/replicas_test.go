package rspclient

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestTwoReplicas drives the library against two name-server replicas on
// one NATS server: three PEs, round-robin answers, a watcher seeing add,
// update and remove, and a PE whose process hangs expiring.
func TestTwoReplicas(t *testing.T) {
	s := startNATS(t)
	replicas := []*server.NameServer{
		nstest.StartNameServer(t, s, server.Config{ID: "ns-1"}),
		nstest.StartNameServer(t, s, server.Config{ID: "ns-2"}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pu := newClient(t, connect(t, s))
	changes, err := pu.Watch(ctx, "rr")
	if err != nil {
		t.Fatal(err)
	}

	pe := newClient(t, connect(t, s))
	tr := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}
	regs := map[string]*Registration{}
	for _, id := range []string{"a", "b", "c"} {
		r, err := pe.Register(ctx, "rr", PE{ID: id, Transports: tr, Lifetime: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		regs[id] = r
		if c := nextChange(t, changes); c.Op != events.OpAdd || c.PEID != id {
			t.Fatalf("change %+v, want add of %s", c, id)
		}
	}

	// The replica that accepted c answered once its own view showed c; the
	// other one follows within milliseconds.
	for _, ns := range replicas {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if sum, _, ok := ns.Pool("default", "rr"); ok && sum.Size == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s does not show the 3 PEs within 5 s", ns.ID())
			}
		}
	}

	// Each replica keeps its own round-robin position (see the policy
	// package), so every answer is a rotation of (a, b, c), and over a few
	// answers every rotation turns up.
	rotations := [][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}}
	seen := map[int]bool{}
	for range 30 {
		ans, err := pu.Resolve(ctx, "rr", events.ResolveRequest{})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]string, len(ans.Elements))
		for i, e := range ans.Elements {
			got[i] = e.PEID
		}
		i := slices.IndexFunc(rotations, func(r []string) bool { return slices.Equal(r, got) })
		if i < 0 {
			t.Fatalf("answer %v is not a round-robin rotation", got)
		}
		seen[i] = true
	}
	if len(seen) != 3 {
		t.Fatalf("rotations seen: %v", seen)
	}

	if err := regs["b"].UpdateLoad(ctx, 0.3); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpUpdate || c.PEID != "b" || c.Reason != events.ReasonUpdated {
		t.Fatalf("change %+v, want update of b", c)
	}
	if err := regs["a"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpRemove || c.PEID != "a" || c.Reason != events.ReasonDeregistered {
		t.Fatalf("change %+v, want remove of a (deregistered)", c)
	}

	// A PE that stops renewing (its process hangs: here its connection is
	// gone) leaves when its lifetime runs out, with no event from it.
	hung := connect(t, s)
	hc := newClient(t, hung)
	if _, err := hc.Register(ctx, "rr", PE{ID: "h", Transports: tr, Lifetime: time.Second}); err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpAdd || c.PEID != "h" {
		t.Fatalf("change %+v, want add of h", c)
	}
	hung.Close()
	start := time.Now()
	c := nextChange(t, changes)
	if c.Op != events.OpRemove || c.PEID != "h" || c.Reason != events.ReasonExpired {
		t.Fatalf("change %+v, want remove of h (expired)", c)
	}
	t.Logf("hung PE expired %s after its connection went (lifetime 1 s)", time.Since(start))

	// b and c outlive several lifetimes through renewals.
	time.Sleep(3 * time.Second)
	ans, err := pu.Resolve(ctx, "rr", events.ResolveRequest{Max: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Elements) != 2 {
		t.Fatalf("left in the pool: %+v", ans.Elements)
	}
}
