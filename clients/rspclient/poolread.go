package rspclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Reading a pool from the scope's name-space bucket (rsp_<scope>, stream
// KV_rsp_<scope>): its live records, and the purge markers of the PEs
// removed lately, with their removal reasons.

// RemovalsKept is how long the bucket keeps a removal (its purge marker,
// with the reason): a watch can resume from a revision at most this old,
// and a resync tells the reason of a removal it missed for that long.
const RemovalsKept = time.Minute

// removalsHeld is how far back a watch may resume: RemovalsKept less a
// margin for the clock skew between this host and the NATS servers and
// the time the reading takes.
var removalsHeld = RemovalsKept - 5*time.Second

// snapEntry is a live record of the pool and its revision.
type snapEntry struct {
	rec events.Record
	rev uint64
}

// removal is a purge marker of the pool: PE id, its revision, the reason.
type removal struct {
	id     string
	rev    uint64
	reason string
}

// poolRead is the pool as one read of the bucket found it.
type poolRead struct {
	live    []snapEntry // sorted by PE id
	removed []removal   // sorted by PE id
	// upTo: every revision up to it is reflected in live and removed.
	upTo uint64
}

// readPool reads the live records and the purge markers of pool. A scope
// no name server made yet has no bucket: an empty pool.
func (c *Client) readPool(ctx context.Context, pool string) (poolRead, error) {
	kv, err := c.js.KeyValue(ctx, events.Bucket(c.scope))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return poolRead{}, nil
	}
	if err != nil {
		return poolRead{}, fmt.Errorf("name space %s: %w", events.Bucket(c.scope), err)
	}
	var r poolRead
	began := time.Now()
	if st, err := kv.Status(ctx); err == nil {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
			r.upTo = bs.StreamInfo().State.LastSeq
			c.anchor(r.upTo, began)
		}
	}
	var markers []removal
	r.live, err = c.readEntries(ctx, kv, events.Key(pool, "*"), func(e jetstream.KeyValueEntry) {
		if _, id, ok := events.SplitKey(e.Key()); ok {
			markers = append(markers, removal{id: id, rev: e.Revision()})
		}
	})
	if err != nil {
		return poolRead{}, err
	}
	for _, e := range r.live {
		r.upTo = max(r.upTo, e.rev)
	}
	if len(markers) > 0 {
		// The reason is in the marker's headers, which a key-value entry
		// does not show: read each marker from the stream (removals of the
		// last minute only, so few).
		st, err := c.js.Stream(ctx, "KV_"+events.Bucket(c.scope))
		if err != nil {
			return poolRead{}, fmt.Errorf("name space stream: %w", err)
		}
		for i := range markers {
			m := &markers[i]
			r.upTo = max(r.upTo, m.rev)
			msg, err := st.GetMsg(ctx, m.rev)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				m.reason = events.ReasonExpired // its marker just went
			case err != nil:
				return poolRead{}, fmt.Errorf("read removal %s: %w", m.id, err)
			default:
				m.reason = removalReason(msg.Header)
			}
		}
		slices.SortFunc(markers, func(a, b removal) int { return cmp.Compare(a.id, b.id) })
		r.removed = markers
	}
	return r, nil
}

// removalReason is the reason a purge or delete marker of the bucket
// gives: its Rsp-Reason header; a marker the NATS server wrote when a
// record's TTL ran out is an expiry; a marker without reason (written by
// a name server that did not name it yet) counts as a deregistration.
func removalReason(h nats.Header) string {
	switch r := h.Get(events.HeaderReason); r {
	case events.ReasonDeregistered, events.ReasonExpired, events.ReasonFailed, events.ReasonDisconnected:
		return r
	}
	if h.Get(jetstream.MarkerReasonHeader) != "" {
		return events.ReasonExpired
	}
	return events.ReasonDeregistered
}

// readAll reads the live records under the key filter, sorted by pool and
// PE id.
func (c *Client) readAll(ctx context.Context, kv jetstream.KeyValue, filter string) ([]snapEntry, error) {
	return c.readEntries(ctx, kv, filter, nil)
}

// readEntries reads the live records under the key filter, sorted by pool
// and PE id, and calls removed (when not nil) with each delete or purge
// marker the bucket still holds.
func (c *Client) readEntries(ctx context.Context, kv jetstream.KeyValue, filter string, removed func(jetstream.KeyValueEntry)) ([]snapEntry, error) {
	var opts []jetstream.WatchOpt
	if removed == nil {
		opts = append(opts, jetstream.IgnoreDeletes())
	}
	w, err := kv.Watch(ctx, filter, opts...)
	if err != nil {
		return nil, fmt.Errorf("read name space: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []snapEntry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("read name space: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("read name space: watcher closed")
			}
			if e == nil { // all current values delivered
				slices.SortFunc(out, func(a, b snapEntry) int {
					return cmp.Or(cmp.Compare(a.rec.Pool, b.rec.Pool), cmp.Compare(a.rec.PEID, b.rec.PEID))
				})
				return out, nil
			}
			if e.Operation() != jetstream.KeyValuePut {
				if removed != nil {
					removed(e)
				}
				continue
			}
			if len(e.Value()) == 0 {
				continue
			}
			var rec events.Record
			if err := events.Decode(e.Value(), &rec); err != nil {
				c.log.Warn("bad record", "key", e.Key(), "err", err)
				continue
			}
			if pool, id, ok := events.SplitKey(e.Key()); ok {
				rec.Pool, rec.PEID = cmp.Or(rec.Pool, pool), cmp.Or(rec.PEID, id)
			}
			out = append(out, snapEntry{rec: rec, rev: e.Revision()})
		}
	}
}

// ErrCompacted ends a watch asked to resume from a revision whose removals
// the bucket no longer holds all of (older than RemovalsKept), or that the
// bucket never reached (it was made anew): resuming would miss removals.
// Start a watch without WithRevision and take its snapshot as the pool's
// members instead (as etcd's ErrCompacted).
var ErrCompacted = errors.New("revision no longer resumable: the name space keeps removals for 1 min")

// resumable checks that a watch can resume after revision rev: every
// removal after it is still in the bucket, that is, every revision after
// rev was written less than removalsHeld ago. A stream does not keep the
// time of a revision whose message is gone (a renewal supersedes the
// record before it), so it takes the latest of these lower bounds of the
// time of rev+1, and refuses when there is none recent enough:
//   - an anchor: a read of the bucket by this process that found its last
//     revision at or below rev, and the moment that read began;
//   - the time of the message at rev, when the bucket still holds it;
//   - the time of the bucket's first message, when that is at or below
//     rev.
//
// The bound returned tells PEs registered since rev from older ones.
func (c *Client) resumable(ctx context.Context, rev uint64) (time.Time, error) {
	bucket := events.Bucket(c.scope)
	began := time.Now()
	st, err := c.js.Stream(ctx, "KV_"+bucket)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return time.Time{}, fmt.Errorf("revision %d: no name space %s: %w", rev, bucket, ErrCompacted)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("name space stream: %w", err)
	}
	state := st.CachedInfo().State
	c.anchor(state.LastSeq, began)
	if rev > state.LastSeq {
		return time.Time{}, fmt.Errorf("revision %d is beyond the name space's last, %d: %w", rev, state.LastSeq, ErrCompacted)
	}
	after := c.anchorOf(rev)
	if m, err := st.GetMsg(ctx, rev); err == nil {
		after = later(after, m.Time)
	}
	if state.FirstSeq <= rev {
		after = later(after, state.FirstTime)
	}
	if rev == state.LastSeq {
		after = later(after, began) // nothing after rev
	}
	horizon := later(time.Now(), state.LastTime).Add(-removalsHeld)
	if after.Before(horizon) {
		return time.Time{}, fmt.Errorf("revision %d (last %d): not known to be recent enough that the removals after it are all still held: %w",
			rev, state.LastSeq, ErrCompacted)
	}
	return after, nil
}

// Anchors: per connection and bucket, revisions the bucket had not passed
// at a known moment (of this host's clock).
type anchorKey struct {
	nc     *nats.Conn
	bucket string
}

type revAnchor struct {
	rev    uint64    // the bucket's last revision was at most rev ...
	before time.Time // ... at this moment: every later one was written after it
}

var (
	anchorsMu sync.Mutex
	anchors   = map[anchorKey][]revAnchor{}
)

// anchor records that the bucket's last revision, read after at, was rev.
func (c *Client) anchor(rev uint64, at time.Time) {
	k := anchorKey{c.nc, events.Bucket(c.scope)}
	anchorsMu.Lock()
	defer anchorsMu.Unlock()
	as := anchors[k]
	// Keep them sorted by revision, the latest moment per revision, for
	// RemovalsKept.
	i, found := slices.BinarySearchFunc(as, rev, func(a revAnchor, r uint64) int { return cmp.Compare(a.rev, r) })
	switch {
	case found:
		as[i].before = later(as[i].before, at)
	default:
		as = slices.Insert(as, i, revAnchor{rev, at})
	}
	if len(as) > maxAnchors {
		as = slices.Delete(as, 0, len(as)-maxAnchors)
	}
	anchors[k] = as
	stale := func(a revAnchor) bool { return time.Since(a.before) > RemovalsKept }
	for k, as := range anchors {
		if as = slices.DeleteFunc(as, stale); len(as) == 0 {
			delete(anchors, k)
		} else {
			anchors[k] = as
		}
	}
}

// maxAnchors bounds the anchors kept per connection and bucket.
const maxAnchors = 256

// anchorOf returns the latest moment after which every revision above rev
// was written, as the anchors tell; zero when they do not.
func (c *Client) anchorOf(rev uint64) time.Time {
	anchorsMu.Lock()
	defer anchorsMu.Unlock()
	var t time.Time
	for _, a := range anchors[anchorKey{c.nc, events.Bucket(c.scope)}] {
		if a.rev <= rev {
			t = later(t, a.before)
		}
	}
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
