package server_test

import (
	"testing"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestPoliciesEndToEnd: per-policy validation, load feedback by
// re-registration, and hints reaching the policy through resolution.
func TestPoliciesEndToEnd(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)

	// A weighted policy needs a weight; loads are fractions.
	reg := registration("w", 1)
	reg.Policy.Name = "weighted_round_robin"
	wantRefused(t, pe.register("weighted", reg), events.CodeBadRequest, "policy.weight")
	reg = registration("l", 1)
	reg.Policy = events.PolicyParams{Name: "least_used", Load: 1.5}
	wantRefused(t, pe.register("lu", reg), events.CodeBadRequest, "policy.load")

	// least_used: the lowest load first; a re-registration with a new load
	// (UpdateLoad) changes the order.
	for i, id := range []string{"a", "b", "c"} {
		r := registration(id, 1)
		r.Policy = events.PolicyParams{Name: "least_used", Load: []float64{0.5, 0.2, 0.9}[i]}
		if out := pe.register("lu", r); !out.Accepted {
			t.Fatal(out.Error)
		}
	}
	if got := ids(resolve(t, nc, "lu", events.ResolveRequest{}).Elements); got[0] != "b" || got[1] != "a" || got[2] != "c" {
		t.Fatalf("least_used order %v, want b a c", got)
	}
	r := registration("c", 2)
	r.Policy = events.PolicyParams{Name: "least_used", Load: 0.1}
	if out := pe.register("lu", r); !out.Accepted {
		t.Fatal(out.Error)
	}
	if got := ids(resolve(t, nc, "lu", events.ResolveRequest{}).Elements); got[0] != "c" {
		t.Fatalf("after c's load fell to 0.1: %v", got)
	}

	// The zone hint puts the PEs of that zone first, the pool policy
	// ranking them, and fills up with the others.
	for i, id := range []string{"z1", "z2", "z3"} {
		r := registration(id, 1)
		r.Meta = map[string]string{"zone": []string{"a", "b", "a"}[i]}
		if out := pe.register("zoned", r); !out.Accepted {
			t.Fatal(out.Error)
		}
	}
	for range 4 {
		got := ids(resolve(t, nc, "zoned", events.ResolveRequest{Hint: map[string]string{"zone": "b"}}).Elements)
		if len(got) != 3 || got[0] != "z2" {
			t.Fatalf("hint zone=b: %v", got)
		}
	}
}
