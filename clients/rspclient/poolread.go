package rspclient

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Reading a pool from the scope's name-space bucket (rsp_<scope>, stream
// KV_rsp_<scope>): its live records, and the purge markers of the PEs
// removed lately, with their removal reasons.

// headerReason names the removal reason on a purge marker in the bucket
// (Rsp-Reason: deregistered, expired, failed or disconnected), so that a
// reader that missed the change message still learns why a PE went.
const headerReason = "Rsp-Reason"

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
	if st, err := kv.Status(ctx); err == nil {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
			r.upTo = bs.StreamInfo().State.LastSeq
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
	switch r := h.Get(headerReason); r {
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
// removal after it is still in the bucket. It returns the time of rev (an
// upper bound: the first message the bucket holds from rev on), which
// tells PEs registered since then from older ones.
func (c *Client) resumable(ctx context.Context, rev uint64) (time.Time, error) {
	st, err := c.js.Stream(ctx, "KV_"+events.Bucket(c.scope))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return time.Time{}, fmt.Errorf("revision %d: no name space %s: %w", rev, events.Bucket(c.scope), ErrCompacted)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("name space stream: %w", err)
	}
	state := st.CachedInfo().State
	if rev > state.LastSeq {
		return time.Time{}, fmt.Errorf("revision %d is beyond the name space's last, %d: %w", rev, state.LastSeq, ErrCompacted)
	}
	// Removals from the first message stored at horizon on are still held.
	horizon := later(time.Now(), state.LastTime).Add(-removalsHeld)
	first, _, err := c.firstFrom(ctx, "KV_"+events.Bucket(c.scope), horizon)
	if err != nil {
		return time.Time{}, err
	}
	if first == 0 {
		first = state.LastSeq + 1 // nothing since the horizon
	}
	if rev+1 < first {
		return time.Time{}, fmt.Errorf("revision %d: removals are held from revision %d on: %w", rev, first, ErrCompacted)
	}
	var at time.Time
	if m, err := st.GetMsg(ctx, max(rev, 1), jetstream.WithGetMsgSubject("$KV."+events.Bucket(c.scope)+".>")); err == nil {
		at = m.Time
	}
	return at, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// firstFrom returns the sequence and time of the first message the stream
// holds stored at t or later; 0 when there is none.
func (c *Client) firstFrom(ctx context.Context, stream string, t time.Time) (uint64, time.Time, error) {
	req, _ := json.Marshal(struct {
		StartTime time.Time `json:"start_time"`
	}{t.UTC()})
	msg, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("name space stream: %w", err)
	}
	var resp struct {
		Message *struct {
			Seq  uint64    `json:"seq"`
			Time time.Time `json:"time"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, time.Time{}, fmt.Errorf("name space stream: %w", err)
	}
	switch {
	case resp.Error != nil && resp.Error.Code == 404:
		return 0, time.Time{}, nil
	case resp.Error != nil:
		return 0, time.Time{}, fmt.Errorf("name space stream: %s", resp.Error.Description)
	case resp.Message == nil:
		return 0, time.Time{}, errors.New("name space stream: empty answer")
	}
	return resp.Message.Seq, resp.Message.Time, nil
}
