package server_test

import (
	"testing"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestSignerQuotas: one signer may own MaxPEsPerSigner PEs and add new
// ones at NewPEsPerSecond; beyond either, a new PE is refused naming the
// limit, while its renewals and other signers go on (issue 16).
func TestSignerQuotas(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{MaxPEsPerSigner: 3, NewPEsPerSecond: -1})
	nc := connect(t, s)
	greedy, other := newSigner(t, nc), newSigner(t, nc)
	for i, id := range []string{"g1", "g2", "g3"} {
		if out := greedy.register("q", registration(id, uint64(i+1))); !out.Accepted {
			t.Fatalf("%s: %+v", id, out.Error)
		}
	}
	wantRefused(t, greedy.register("q", registration("g4", 9)), events.CodeForbidden, "--max-pes-per-signer")
	wantRefused(t, greedy.register("other-pool", registration("g5", 9)), events.CodeForbidden, "--max-pes-per-signer")
	if out := greedy.register("q", registration("g1", 10)); !out.Accepted {
		t.Fatalf("a renewal at the limit: %+v", out.Error)
	}
	if out := other.register("q", registration("o1", 1)); !out.Accepted {
		t.Fatalf("another signer: %+v", out.Error)
	}
	if out := greedy.deregister("q", "g2", 11); !out.Accepted {
		t.Fatalf("deregister: %+v", out.Error)
	}
	if out := greedy.register("q", registration("g4", 12)); !out.Accepted {
		t.Fatalf("a new PE once one left: %+v", out.Error)
	}
}

func TestSignerNewPERate(t *testing.T) {
	s := startNATS(t)
	// 0.1 a second, burst 1: the second new PE within seconds is refused.
	startNameServer(t, s, server.Config{NewPEsPerSecond: 0.1})
	nc := connect(t, s)
	fast, other := newSigner(t, nc), newSigner(t, nc)
	if out := fast.register("r", registration("f1", 1)); !out.Accepted {
		t.Fatalf("f1: %+v", out.Error)
	}
	wantRefused(t, fast.register("r", registration("f2", 2)), events.CodeUnavailable, "--new-pes-per-second")
	if out := fast.register("r", registration("f1", 3)); !out.Accepted {
		t.Fatalf("a renewal: %+v", out.Error)
	}
	if out := other.register("r", registration("o1", 1)); !out.Accepted {
		t.Fatalf("another signer: %+v", out.Error)
	}
}
