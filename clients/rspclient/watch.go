package rspclient

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// Watch streams the members of pool and then its changes: first one op
// "add" (reason "registered") per current PE, read from the name space,
// then every change the name servers announce, without the ones the first
// part already reflects, and the changes found by reading the pool again
// (see Watcher). The channel is closed when the watch ends: ctx ended or
// the connection closed. Read it promptly, as changes queue up in memory.
// Watch is Watcher(ctx, pool, opts...).Changes(), for callers that need
// neither the reason the watch ended nor its revision.
func (c *Client) Watch(ctx context.Context, pool string, opts ...WatchOption) (<-chan events.Change, error) {
	w, err := c.Watcher(ctx, pool, opts...)
	if err != nil {
		return nil, err
	}
	return w.Changes(), nil
}

// WatchOption configures a watch (Client.Watch, Client.Watcher).
type WatchOption func(*watchOptions) error

type watchOptions struct {
	rev uint64 // resume after it; 0: start from the members
}

// WithRevision resumes a watch after revision rev (a Watcher.Revision of
// an earlier watch, or the Revision of a change): instead of the members,
// the watch starts with what changed in the pool after rev, as the name
// servers read it now — for each PE whose record changed, its latest
// state (an "add" for a PE that joined the pool after rev as the answering
// name server knows it, else an "update", renewals included: the bucket
// keeps one revision per PE), and for each PE removed, one "remove" with
// the reason its purge marker gives (the bucket keeps a marker until its
// PE id registers again) — then goes on as any watch. A change may come
// twice (once before the resume, once after); none is missed. A revision
// the name space never reached (it was made anew) is refused with
// ErrCompacted: the caller then starts a watch without WithRevision and
// takes its snapshot as the members. rev 0 means no resumption.
func WithRevision(rev uint64) WatchOption {
	return func(o *watchOptions) error {
		o.rev = rev
		return nil
	}
}

// Watcher is a running watch of one pool, as etcd's watch channel with its
// WatchResponse.Err: Changes delivers, Err tells why it ended, Revision is
// where a later watch resumes (WithRevision).
//
// Beside the change notifications, a watch reads its pool from the name
// space again (a resync) after the connection reconnects, when a name
// server of the scope starts or comes back (its beats tell), and every
// DefaultResync; a failed resync is tried again with backoff (about every
// second) until it succeeds. A resync delivers the difference from what
// the watch delivered before: a "remove" for each PE gone, with the
// reason the bucket's purge marker gives (or "expired" when the name
// servers no longer tell it: more removals than a read answer holds), an "add"
// or "update" for each PE new or changed. Renewals are not changes and
// are never delivered.
type Watcher struct {
	w    *poolWatch
	out  chan events.Change
	done chan struct{}
	err  error // set before done is closed
}

// Watcher starts a watch of pool; the first changes are read within the
// client's timeout. See Watch and WithRevision.
func (c *Client) Watcher(ctx context.Context, pool string, opts ...WatchOption) (*Watcher, error) {
	if err := events.CheckPool(pool); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	var o watchOptions
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
	}
	pw, first, err := c.follow(ctx, pool, o.rev)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", pool, err)
	}
	w := &Watcher{w: pw, out: make(chan events.Change), done: make(chan struct{})}
	go func() {
		// Done closes before Changes: a reader that saw Changes close
		// finds Err set.
		defer close(w.out)
		defer close(w.done)
		defer pw.stop()
		w.err = pw.run(ctx, DefaultResync, first, func(batch []events.Change) bool {
			for i, ch := range batch {
				// Revision moves before the reader gets a read's last
				// change, so a reader that got it sees the revision it
				// brings (run holds the batch's barrier; same goroutine).
				prev := pw.synced.Load()
				if i == len(batch)-1 {
					pw.synced.Store(pw.m.barrier)
				}
				select {
				case w.out <- ch:
				case <-ctx.Done():
					pw.synced.Store(prev)
					return false
				}
			}
			return true
		})
	}()
	return w, nil
}

// Changes delivers the changes; it is closed when the watch ends.
func (w *Watcher) Changes() <-chan events.Change { return w.out }

// Done is closed when the watch has ended (just before Changes is).
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Err is why the watch ended, once Done is closed (nil before): the ctx's
// error, or ErrWatchClosed when the connection (or the subscription)
// closed.
func (w *Watcher) Err() error {
	select {
	case <-w.done:
		return w.err
	default:
		return nil
	}
}

// Revision is the name-space revision the changes delivered so far bring
// the reader to: every change up to it was delivered (as such or through a
// resync). Resume from it with WithRevision. It moves at each delivered
// read of the pool (the first, and each resync); 0 before the first is
// delivered.
func (w *Watcher) Revision() uint64 { return w.w.synced.Load() }

// ErrWatchClosed ends a watch whose connection or change subscription
// closed.
var ErrWatchClosed = errors.New("watch ended: the connection or subscription closed")

// poolWatch follows one pool: its change subscription (q), a merger that
// keeps the member set and drops the changes already reflected, and the
// resync triggers of its client. Watcher and PoolCache are built on it.
type poolWatch struct {
	c      *Client
	pool   string
	log    *slog.Logger
	sub    *nats.Subscription
	q      *queue
	m      *merger // used by one goroutine at a time: follow, then run
	kick   <-chan struct{}
	unkick func()

	synced   atomic.Uint64 // the revision of the last read delivered
	syncedAt atomic.Int64  // when the pool was last read (unix ns)
	failing  atomic.Pointer[error]
}

// follow subscribes to the changes of pool and to its resync triggers, then
// reads the pool, bounded by the client's timeout: first is its members as
// "add" changes or, after rev (rev > 0), what changed since.
func (c *Client) follow(ctx context.Context, pool string, rev uint64) (*poolWatch, []events.Change, error) {
	// 1. Listen to changes first, into a queue, so none falls between the
	//    read and the live stream.
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
		return nil, nil, err
	}
	sub.SetClosedHandler(func(string) { q.close() })
	kick, unkick := c.resyncs()
	w := &poolWatch{c: c, pool: pool, log: c.log.With("pool", pool), sub: sub, q: q, m: &merger{scope: c.scope, pool: pool, known: map[string]peState{}}, kick: kick, unkick: unkick}
	// 2. Once the subscription is in place, read the pool.
	sctx, cancel := c.wait(ctx)
	defer cancel()
	r, err := w.read(sctx, rev)
	if err == nil && rev > 0 && r.upTo < rev {
		err = fmt.Errorf("revision %d: the name servers' view has reached %d only: %w", rev, r.upTo, ErrCompacted)
	}
	if err != nil {
		w.stop()
		return nil, nil, err
	}
	return w, w.m.sync(r, rev), nil
}

// read reads the pool, with the removals after revision removedAfter,
// once the subscription is known to the server.
func (w *poolWatch) read(ctx context.Context, removedAfter uint64) (poolRead, error) {
	if err := w.c.nc.FlushWithContext(ctx); err != nil {
		return poolRead{}, err
	}
	r, err := w.c.readPool(ctx, w.pool, removedAfter)
	if err == nil {
		w.syncedAt.Store(time.Now().UnixNano())
		w.failing.Store(nil)
	}
	return r, err
}

// stop ends the subscription and the resync triggers.
func (w *poolWatch) stop() {
	_ = w.sub.Unsubscribe()
	w.unkick()
}

// run hands first, then every batch of news, to sink (on this goroutine),
// until ctx ends (its error is returned), the subscription closes
// (ErrWatchClosed) or sink returns false (ctx's error). News are the
// changes announced, and the differences a resync finds: it resyncs when
// its client's triggers say so and every period (never when 0), and tries
// a failed resync again with backoff until it succeeds.
func (w *poolWatch) run(ctx context.Context, period time.Duration, first []events.Change, sink func([]events.Change) bool) error {
	if !sink(first) {
		return ctx.Err()
	}
	w.synced.Store(w.m.barrier)
	var tick <-chan time.Time
	if period > 0 {
		t := time.NewTicker(period)
		defer t.Stop()
		tick = t.C
	}
	var (
		items, batch []events.Change
		pending      bool             // a resync is due
		retry        <-chan time.Time // the next attempt after a failure
		failures     int              // failed attempts of the pending resync
		since        time.Time        // when the pending resync became due
		why          = "periodic"     // what made it due, for the log
		retryTimer   *time.Timer
	)
	defer func() {
		if retryTimer != nil {
			retryTimer.Stop()
		}
	}()
	for {
		var closed bool
		items, closed = w.q.drain(items[:0])
		batch = batch[:0]
		for _, ch := range items {
			if ch, keep := w.m.apply(ch); keep {
				batch = append(batch, ch)
			}
		}
		clear(items)
		if len(batch) > 0 && !sink(batch) {
			return ctx.Err()
		}
		if closed {
			return ErrWatchClosed
		}
		if pending && retry == nil {
			actx, cancel := context.WithTimeout(ctx, attemptTimeout(failures, w.c.timeout))
			r, err := w.read(actx, w.m.barrier)
			cancel()
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				failures++
				w.failing.Store(&err)
				if failures == 1 || failures%10 == 0 {
					w.log.Warn("resync failed, trying again", "why", why, "attempts", failures, "err", err)
				}
				retryTimer = time.NewTimer(retryDelay(failures))
				retry = retryTimer.C
			default:
				diff := w.m.sync(r, 0)
				if failures > 0 || len(diff) > 0 {
					w.log.Info("resynced", "why", why, "changes", len(diff), "attempts", failures+1,
						"took", time.Since(since).Round(time.Millisecond))
				}
				pending, failures = false, 0
				if len(diff) > 0 && !sink(diff) {
					return ctx.Err()
				}
				w.synced.Store(w.m.barrier)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.q.wake:
		case <-w.kick:
			if !pending {
				pending, since, why = true, time.Now(), "triggered"
			}
			if retry != nil { // a reconnect or a new name server: try now
				retryTimer.Stop()
				retry = nil
			}
		case <-tick:
			if !pending {
				pending, since, why = true, time.Now(), "periodic"
			}
		case <-retry:
			retry = nil
		}
	}
}

// merger joins reads of a pool with the change stream that was subscribed
// before the first read: it drops the changes a read already reflects, and
// stale ones, keeps the member set up to date, and turns a read into the
// changes it brings (sync).
type merger struct {
	scope   string
	pool    string
	barrier uint64             // changes up to this revision predate the last read
	known   map[string]peState // PE id → its last known state
}

type peState struct {
	rev    uint64          // revision of the last change applied
	member bool            // false after a remove: a tombstone against stale adds
	el     *events.Element // a member's element
}

func newMerger(scope string, barrier uint64) *merger {
	return &merger{scope: scope, barrier: barrier, known: map[string]peState{}}
}

// snapshot records the members of a first read and returns them as "add"
// changes.
func (m *merger) snapshot(snap []snapEntry) []events.Change {
	return m.sync(poolRead{live: snap}, 0)
}

// sync takes a read of the pool and returns what it brings, in PE id order
// within each kind: "add" or "update" for each PE new or changed (a
// renewal, the same element at a later revision, is none), "remove" for
// each member gone, with its marker's reason, or "expired" when the
// bucket holds no marker (or a later one) of it any more. With since > 0
// (a resumption after revision since, which the reader's state reflects),
// PEs unknown to the merger whose revision is not above since are members
// the reader has, and removals above since are delivered; a PE's added
// revision tells adds from updates.
func (m *merger) sync(r poolRead, since uint64) []events.Change {
	var out []events.Change
	upTo := r.upTo
	live := make(map[string]struct{}, len(r.live))
	for _, e := range r.live {
		id := e.rec.PEID
		live[id] = struct{}{}
		upTo = max(upTo, e.rev)
		el := e.rec.Element()
		st, seen := m.known[id]
		switch {
		case seen && st.rev >= e.rev: // no news, or a later change applied
			continue
		case !seen && e.rev <= since, st.member && sameElement(st.el, &el): // held already, or renewed
			m.known[id] = peState{rev: e.rev, member: true, el: cmp.Or(st.el, &el)}
			continue
		}
		op, reason := events.OpAdd, events.ReasonRegistered
		if st.member || (!seen && since > 0 && e.added <= since) {
			op, reason = events.OpUpdate, events.ReasonUpdated
		}
		m.known[id] = peState{rev: e.rev, member: true, el: &el}
		out = append(out, events.Change{Scope: m.scope, Pool: e.rec.Pool, Revision: e.rev, Op: op, PEID: id, Reason: reason, Element: &el})
	}
	pool := m.pool
	if pool == "" && len(r.live) > 0 {
		pool = r.live[0].rec.Pool
	}
	for _, x := range r.removed {
		upTo = max(upTo, x.rev)
		st, seen := m.known[x.id]
		if seen && st.rev >= x.rev {
			continue
		}
		m.known[x.id] = peState{rev: x.rev}
		if st.member || (!seen && since > 0 && x.rev > since) {
			out = append(out, events.Change{Scope: m.scope, Pool: pool, Revision: x.rev, Op: events.OpRemove, PEID: x.id, Reason: x.reason, Element: st.el})
		}
	}
	// Members the bucket holds nothing of any more, though it held them
	// when this read began: removed among more than a read answer holds.
	var gone []string
	for id, st := range m.known {
		if _, ok := live[id]; !ok && st.member && st.rev <= upTo {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone)
	for _, id := range gone {
		st := m.known[id]
		m.known[id] = peState{rev: upTo}
		out = append(out, events.Change{Scope: m.scope, Pool: pool, Revision: upTo, Op: events.OpRemove, PEID: id, Reason: events.ReasonExpired, Element: st.el})
	}
	m.barrier = max(m.barrier, upTo)
	// Tombstones at or below the barrier are no longer needed: the barrier
	// drops what they would.
	maps.DeleteFunc(m.known, func(_ string, st peState) bool { return !st.member && st.rev <= m.barrier })
	return out
}

// sameElement tells whether two elements show the same PE.
func sameElement(a, b *events.Element) bool {
	return a != nil && b != nil && a.PEID == b.PEID && a.Policy == b.Policy &&
		slices.Equal(a.Transports, b.Transports) && maps.Equal(a.Meta, b.Meta)
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
		m.known[ch.PEID] = peState{rev: ch.Revision, member: true, el: ch.Element}
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

// drain appends every queued change to buf and empties the queue; closed
// says the queue is closed (no change will come).
func (q *queue) drain(buf []events.Change) (_ []events.Change, closed bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf, q.items...)
	clear(q.items)
	q.items = q.items[:0]
	return buf, q.closed
}
