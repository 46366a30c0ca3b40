package server

import (
	"errors"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
)

// TestHeldBy: a tombstone keeps its PE id's owner and last seq for its
// life, and an expiry also stands against the events stored before it (a
// backlog that drains after the removal must not bring back a PE that
// died); other removals do not: a registration stored before a
// deregistration or a disconnect was applied may be the PE's own return.
func TestHeldBy(t *testing.T) {
	removed := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	life := events.TombstoneLife(events.DefaultClockSkew)
	tomb := func(reason string) *events.Tombstone {
		return &events.Tombstone{PEID: "x", Pool: "p", Signer: "owner", LastSeq: 10, Reason: reason, RemovedAt: removed}
	}
	before, after, now := removed.Add(-time.Second), removed.Add(time.Millisecond), removed.Add(time.Second)
	for _, c := range []struct {
		name   string
		tomb   *events.Tombstone
		signer string
		seq    uint64
		stored time.Time
		now    time.Time
		want   string // the refusal's code; "" when accepted
	}{
		{"no tombstone", nil, "other", 1, before, now, ""},
		{"another signer", tomb(events.ReasonDeregistered), "other", 11, after, now, events.CodeForbidden},
		{"old seq", tomb(events.ReasonDeregistered), "owner", 10, after, now, events.CodeStale},
		{"owner goes on", tomb(events.ReasonDeregistered), "owner", 11, after, now, ""},
		{"stored before a deregistration", tomb(events.ReasonDeregistered), "owner", 11, before, now, ""},
		{"stored before a disconnect", tomb(events.ReasonDisconnected), "owner", 11, before, now, ""},
		{"stored before an expiry", tomb(events.ReasonExpired), "owner", 11, before, now, events.CodeStale},
		{"stored after an expiry", tomb(events.ReasonExpired), "owner", 11, after, now, ""},
		{"tombstone's life over", tomb(events.ReasonExpired), "other", 1, before, removed.Add(life), ""},
	} {
		err := heldBy(c.tomb, c.signer, c.seq, c.stored, c.now, life)
		var r *rejection
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused %v, want accepted", c.name, err)
		case c.want != "" && (!errors.As(err, &r) || r.e.Code != c.want):
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}
}
