package rspclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/rserpool/rsp/events"
)

// Reading a pool through the name servers (rsp.<scope>.read.<pool>, a
// page at a time): its live records, and the PEs removed after a
// revision, with their removal reasons. A client reads nothing from the
// bucket itself: its credentials allow no JetStream API.

// snapEntry is a live record of the pool, its revision, and the revision
// at which the PE joined the pool as the answering name server knows it.
type snapEntry struct {
	rec   events.Record
	rev   uint64
	added uint64
}

// removal is a removed PE of the pool: PE id, its revision, the reason.
type removal struct {
	id     string
	rev    uint64
	reason string
}

// poolRead is the pool as one read found it.
type poolRead struct {
	live    []snapEntry // sorted by PE id
	removed []removal   // sorted by PE id; those after the read's removedAfter
	// upTo: every revision up to it is reflected in live and removed.
	upTo uint64
}

// ErrCompacted ends a watch asked to resume from a revision the name
// space never reached (it was made anew, or the revision is made up):
// resuming would miss removals. Start a watch without WithRevision and
// take its snapshot as the pool's members instead (as etcd's
// ErrCompacted).
var ErrCompacted = errors.New("revision not resumable: the name space has not reached it")

// readPool reads the live records of pool and, when removedAfter > 0, the
// removals after that revision. Pages after the first may be read at
// later revisions; upTo is the first's, and the changes after it (which
// the caller subscribed to before) bring what a later page already shows
// at most twice, never less.
func (c *Client) readPool(ctx context.Context, pool string, removedAfter uint64) (poolRead, error) {
	subject := events.Subject(c.scope, events.KindRead, pool)
	var r poolRead
	q := events.ReadRequest{RemovedAfter: removedAfter}
	for page := 0; ; page++ {
		var a events.ReadAnswer
		if err := c.ask(ctx, subject, events.Marshal(q), &a); err != nil {
			return poolRead{}, fmt.Errorf("read pool %s: %w", pool, err)
		}
		if a.Error != nil {
			return poolRead{}, fmt.Errorf("read pool %s: %w", pool, a.Error)
		}
		if page == 0 {
			r.upTo = a.Revision
			for _, x := range a.Removed {
				r.removed = append(r.removed, removal{id: x.PEID, rev: x.Revision, reason: x.Reason})
			}
		}
		for _, e := range a.Records {
			rec := e.Record
			rec.Pool = cmp.Or(rec.Pool, pool)
			r.live = append(r.live, snapEntry{rec: rec, rev: e.Revision, added: e.Added})
		}
		if a.Next == "" {
			break
		}
		if a.Next <= q.After {
			return poolRead{}, fmt.Errorf("read pool %s: page after %q names %q next, not a later PE id", pool, q.After, a.Next)
		}
		q = events.ReadRequest{After: a.Next}
	}
	slices.SortFunc(r.live, func(a, b snapEntry) int { return cmp.Compare(a.rec.PEID, b.rec.PEID) })
	r.live = slices.CompactFunc(r.live, func(a, b snapEntry) bool { return a.rec.PEID == b.rec.PEID })
	slices.SortFunc(r.removed, func(a, b removal) int { return cmp.Compare(a.id, b.id) })
	return r, nil
}

// Pools lists every PE record in the scope's name space, sorted by pool and
// PE id. It needs a credential for every pool of the scope.
func (c *Client) Pools(ctx context.Context) ([]events.Record, error) {
	ctx, cancel := c.wait(ctx)
	defer cancel()
	var a events.PoolsAnswer
	if err := c.ask(ctx, events.PoolsSubject(c.scope), nil, &a); err != nil {
		return nil, fmt.Errorf("pools: %w", err)
	}
	if a.Error != nil {
		return nil, fmt.Errorf("pools: %w", a.Error)
	}
	var recs []events.Record
	for _, p := range a.Pools {
		r, err := c.readPool(ctx, p.Pool, 0)
		if err != nil {
			return nil, fmt.Errorf("pools: %w", err)
		}
		for _, e := range r.live {
			recs = append(recs, e.rec)
		}
	}
	return recs, nil
}
