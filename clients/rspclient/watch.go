package rspclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Watch streams the members of pool and then its changes: first one op
// "add" (reason "registered") per current PE, read from the name space,
// then every change the name servers announce, without the ones the first
// part already reflects. The channel is closed when ctx ends (or the
// connection closes); read it promptly, as changes queue up in memory.
func (c *Client) Watch(ctx context.Context, pool string) (<-chan events.Change, error) {
	if err := events.CheckPool(pool); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	w, err := c.startWatch(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", pool, err)
	}
	// Forward the snapshot, then the queued and live changes.
	out := make(chan events.Change)
	go func() {
		defer close(out)
		defer w.stop()
		for _, ch := range w.snap {
			select {
			case out <- ch:
			case <-ctx.Done():
				return
			}
		}
		for {
			ch, ok := w.q.pop(ctx)
			if !ok {
				return
			}
			ch, keep := w.m.apply(ch)
			if !keep {
				continue
			}
			select {
			case out <- ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// poolWatch is a watch of one pool whose snapshot has been read: snap holds
// the current members as "add" changes, q the changes announced since the
// subscription, which go through m (m.apply) to drop those snap already
// reflects. Watch and Cache are built on it.
type poolWatch struct {
	sub  *nats.Subscription
	q    *queue
	m    *merger
	snap []events.Change
}

// stop ends the subscription.
func (w *poolWatch) stop() { _ = w.sub.Unsubscribe() }

// startWatch subscribes to the changes of pool and then reads its members,
// bounded by the client's timeout.
func (c *Client) startWatch(ctx context.Context, pool string) (*poolWatch, error) {
	// 1. Listen to changes first, into a queue, so none falls between the
	//    snapshot and the live stream.
	q := newQueue()
	sub, err := c.nc.Subscribe(events.Subject(c.scope, events.KindChanges, pool), func(m *nats.Msg) {
		var ch events.Change
		if err := events.Decode(m.Data, &ch); err != nil {
			c.log.Warn("bad change", "subject", m.Subject, "err", err)
			return
		}
		q.push(ch)
	})
	if err != nil {
		return nil, err
	}
	sub.SetClosedHandler(func(string) { q.close() })
	// 2. Once the subscription is in place, read the current members.
	sctx, cancel := c.wait(ctx)
	err = c.nc.FlushWithContext(sctx)
	var snap []snapEntry
	var barrier uint64
	if err == nil {
		snap, barrier, err = c.snapshot(sctx, pool)
	}
	cancel()
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	m := newMerger(c.scope, barrier)
	return &poolWatch{sub: sub, q: q, m: m, snap: m.snapshot(snap)}, nil
}

// snapshot returns the records of pool in the name space, each with its
// revision, and a barrier: every change with a revision up to it happened
// before the snapshot was read, so the snapshot already reflects it.
func (c *Client) snapshot(ctx context.Context, pool string) ([]snapEntry, uint64, error) {
	kv, err := c.js.KeyValue(ctx, events.Bucket(c.scope))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, 0, nil // no name server made the scope yet: no members
	}
	if err != nil {
		return nil, 0, fmt.Errorf("name space %s: %w", events.Bucket(c.scope), err)
	}
	var barrier uint64
	if st, err := kv.Status(ctx); err == nil {
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
			barrier = bs.StreamInfo().State.LastSeq
		}
	}
	entries, err := c.readAll(ctx, kv, events.Key(pool, "*"))
	if err != nil {
		return nil, 0, err
	}
	snap := make([]snapEntry, 0, len(entries))
	for _, e := range entries {
		snap = append(snap, snapEntry{rec: e.rec, rev: e.rev})
	}
	return snap, barrier, nil
}

type snapEntry struct {
	rec events.Record
	rev uint64
}

// readAll reads the live records under the key filter, sorted by pool and
// PE id.
func (c *Client) readAll(ctx context.Context, kv jetstream.KeyValue, filter string) ([]snapEntry, error) {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
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
			if e.Operation() != jetstream.KeyValuePut || len(e.Value()) == 0 {
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

// Pools lists every PE record in the scope's name space, sorted by pool and
// PE id.
func (c *Client) Pools(ctx context.Context) ([]events.Record, error) {
	ctx, cancel := c.wait(ctx)
	defer cancel()
	kv, err := c.js.KeyValue(ctx, events.Bucket(c.scope))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pools: name space %s: %w", events.Bucket(c.scope), err)
	}
	entries, err := c.readAll(ctx, kv, jetstream.AllKeys)
	if err != nil {
		return nil, fmt.Errorf("pools: %w", err)
	}
	recs := make([]events.Record, len(entries))
	for i, e := range entries {
		recs[i] = e.rec
	}
	return recs, nil
}

// merger joins a snapshot of a pool with the change stream that was
// subscribed before the snapshot was read: it drops the changes the
// snapshot already reflects, and stale ones, and keeps the member set up to
// date.
type merger struct {
	scope   string
	barrier uint64             // changes up to this revision predate the snapshot
	known   map[string]peState // PE id → its last known state
}

type peState struct {
	rev    uint64 // revision of the last change applied
	member bool   // false after a remove: a tombstone against stale adds
}

func newMerger(scope string, barrier uint64) *merger {
	return &merger{scope: scope, barrier: barrier, known: map[string]peState{}}
}

// snapshot records the current members and returns them as "add" changes.
func (m *merger) snapshot(snap []snapEntry) []events.Change {
	out := make([]events.Change, 0, len(snap))
	for _, e := range snap {
		el := e.rec.Element()
		m.known[e.rec.PEID] = peState{rev: e.rev, member: true}
		// A change up to any revision the snapshot holds happened before
		// the snapshot was read.
		m.barrier = max(m.barrier, e.rev)
		out = append(out, events.Change{
			Scope: m.scope, Pool: e.rec.Pool, Revision: e.rev, Op: events.OpAdd, PEID: e.rec.PEID,
			Reason: events.ReasonRegistered, Element: &el,
		})
	}
	return out
}

// apply says whether ch is news, and tracks the member set.
func (m *merger) apply(ch events.Change) (events.Change, bool) {
	if ch.Revision <= m.barrier {
		return ch, false
	}
	st, seen := m.known[ch.PEID]
	if seen && st.rev >= ch.Revision {
		return ch, false
	}
	switch ch.Op {
	case events.OpRemove:
		m.known[ch.PEID] = peState{rev: ch.Revision}
		if !st.member {
			return ch, false
		}
	case events.OpAdd, events.OpUpdate:
		m.known[ch.PEID] = peState{rev: ch.Revision, member: true}
	default:
		return ch, false
	}
	return ch, true
}

// queue is an unbounded FIFO of changes between a NATS callback and the
// watch goroutine, so a slow reader never makes the subscription drop.
type queue struct {
	mu     sync.Mutex
	items  []events.Change
	closed bool
	wake   chan struct{}
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) push(ch events.Change) {
	q.mu.Lock()
	q.items = append(q.items, ch)
	q.mu.Unlock()
	q.signal()
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop returns the next change, waiting for one; false once ctx ends or the
// queue is closed and empty.
func (q *queue) pop(ctx context.Context) (events.Change, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			ch := q.items[0]
			q.items[0] = events.Change{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return ch, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return events.Change{}, false
		}
		select {
		case <-ctx.Done():
			return events.Change{}, false
		case <-q.wake:
		}
	}
}
