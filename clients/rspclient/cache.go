package rspclient

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// DefaultResync is how often a PoolCache reads its pool afresh unless
// WithResync says otherwise.
const DefaultResync = 30 * time.Second

// CacheOption configures a PoolCache.
type CacheOption func(*cacheOptions) error

type cacheOptions struct {
	resync time.Duration
}

// WithResync sets how often the cache reads the pool's members from the
// name space again (default DefaultResync); d ≤ 0 turns it off. Change
// notifications are plain NATS messages: those sent while the connection
// is down are lost, and a resync repairs what they would have changed.
func WithResync(d time.Duration) CacheOption {
	return func(o *cacheOptions) error {
		o.resync = max(d, 0)
		return nil
	}
}

// PoolCache is a local copy of every member of one pool, kept current by a
// watch of the pool (Client.Watch), that selects PEs with the pool's policy
// in process, without asking a name server: RFC 5352's ASAP cache. It is
// safe for concurrent use. Make it with Client.Cache.
type PoolCache struct {
	c    *Client
	pool string
	log  *slog.Logger

	// snap is what Pick reads: rebuilt by the writer at every change.
	snap atomic.Pointer[cacheSnap]

	mu      sync.Mutex    // guards the fields below
	members []*cacheEntry // every member of the pool, sorted by PE id
	policy  string        // the pool's policy, "" while it has no member
	picker  policy.Picker // built for policy, kept while it stays
	w       *poolWatch    // the watch in use; replaced at a resync

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

type cacheEntry struct {
	el  events.Element
	rev uint64 // name-space revision of the PE's last add or update
	// failed: reported failed through this cache, so left out of Pick
	// until an add or update newer than the report arrives.
	failed bool
}

// cacheSnap is an immutable view of the pickable members, in PE id order.
type cacheSnap struct {
	policy string
	picker policy.Picker // shared by the snapshots of one policy: it keeps the policy's state
	elems  []events.Element
	cands  []policy.Candidate
}

// Cache fills a local cache of all the members of pool, from a watch of the
// pool (its current members first, then the change stream), and returns
// once the current members are in, within the client's timeout. A pool
// without members is fine: the cache starts empty, its policy unknown until
// a first member arrives. The cache keeps itself current until ctx ends or
// Close is called; give a long-lived cache a ctx without a deadline.
func (c *Client) Cache(ctx context.Context, pool string, opts ...CacheOption) (*PoolCache, error) {
	if err := events.CheckPool(pool); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	o := cacheOptions{resync: DefaultResync}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
	}
	w, err := c.startWatch(ctx, pool)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", pool, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	pc := &PoolCache{c: c, pool: pool, log: c.log.With("pool", pool), w: w, cancel: cancel, done: make(chan struct{})}
	pc.mu.Lock()
	pc.load(w.snap)
	pc.publish()
	pc.mu.Unlock()
	go pc.run(rctx, o.resync)
	return pc, nil
}

// Pool is the cached pool's handle.
func (pc *PoolCache) Pool() string { return pc.pool }

// Pick selects at most n members with the pool's policy, best first, as a
// name server's resolution would (policy.Select, with the hints, such as
// {"zone": "a"}): the same policy code, but its state (a round-robin
// position, ...) is this cache's own. It returns nil when n ≤ 0 or the
// cache is empty. The elements share their Transports and Meta with the
// cache: do not modify them.
func (pc *PoolCache) Pick(n int, hint map[string]string) []events.Element {
	s := pc.snap.Load()
	if n <= 0 || len(s.cands) == 0 {
		return nil
	}
	n = min(n, len(s.cands))
	bp := pickBufs.Get().(*[]int)
	idx := policy.Select(s.picker, (*bp)[:0], s.cands, n, hint)
	out := make([]events.Element, len(idx))
	for k, i := range idx {
		out[k] = s.elems[i]
	}
	*bp = idx[:0]
	pickBufs.Put(bp)
	return out
}

// pickBufs holds the index buffers of Pick, so a selection allocates its
// result only.
var pickBufs = sync.Pool{New: func() any {
	b := make([]int, 0, events.MaxMax)
	return &b
}}

// Members returns the pickable members, sorted by PE id: every member of
// the pool but the ones reported failed through this cache.
func (pc *PoolCache) Members() []events.Element { return slices.Clone(pc.snap.Load().elems) }

// Len is the number of pickable members.
func (pc *PoolCache) Len() int { return len(pc.snap.Load().elems) }

// Policy is the pool's policy as its members registered it, "" while the
// pool has none. A policy this program does not know is picked with
// policy.Default, as a name server would.
func (pc *PoolCache) Policy() string { return pc.snap.Load().policy }

// ReportFailure drops PE peID from the cache at once, so Pick leaves it out
// until an add or update of it newer than this report arrives, and then
// sends the signed failure report (Client.ReportFailure). The PE stays
// dropped even if sending the report fails.
func (pc *PoolCache) ReportFailure(ctx context.Context, peID, reason string) error {
	pc.mu.Lock()
	if i, ok := pc.find(peID); ok && !pc.members[i].failed {
		pc.members[i].failed = true
		pc.publish()
	}
	pc.mu.Unlock()
	return pc.c.ReportFailure(ctx, pc.pool, peID, reason)
}

// Close stops keeping the cache current and waits for its goroutine to
// end. The cache keeps answering from the members it had.
func (pc *PoolCache) Close() {
	pc.closeOnce.Do(pc.cancel)
	<-pc.done
}

// Done is closed once the cache stops following the pool: after Close,
// when the ctx given to Cache ends, or when the connection closes.
func (pc *PoolCache) Done() <-chan struct{} { return pc.done }

// run applies the changes of the watch until ctx ends or its connection
// closes, and resyncs every resync (never when 0).
func (pc *PoolCache) run(ctx context.Context, resync time.Duration) {
	defer close(pc.done)
	defer func() { pc.w.stop() }() // pc.w is only replaced by this goroutine
	var tick <-chan time.Time
	if resync > 0 {
		t := time.NewTicker(resync)
		defer t.Stop()
		tick = t.C
	}
	var batch []events.Change
	for {
		w := pc.w
		var closed bool
		batch, closed = w.q.drain(batch[:0])
		if len(batch) > 0 {
			pc.apply(w, batch)
			clear(batch)
		}
		if closed {
			pc.log.Debug("cache stopped: subscription closed")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.q.wake:
		case <-tick:
			pc.resync(ctx)
		}
	}
}

// apply applies a batch of changes of watch w and publishes the result once.
func (pc *PoolCache) apply(w *poolWatch, batch []events.Change) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	changed := false
	for _, ch := range batch {
		ch, keep := w.m.apply(ch)
		if keep && pc.applyChange(ch) {
			changed = true
		}
	}
	if changed {
		pc.publish()
	}
}

// applyChange applies one change the merger let through, under mu.
func (pc *PoolCache) applyChange(ch events.Change) bool {
	switch ch.Op {
	case events.OpRemove:
		i, ok := pc.find(ch.PEID)
		if !ok {
			return false
		}
		pc.members = slices.Delete(pc.members, i, i+1)
		if len(pc.members) == 0 { // as a name server forgets an empty pool
			pc.policy, pc.picker = "", nil
		}
		return true
	case events.OpAdd, events.OpUpdate:
		if ch.Element == nil {
			pc.log.Warn("ignoring change without element", "op", ch.Op, "pe_id", ch.PEID)
			return false
		}
		e := &cacheEntry{el: *ch.Element, rev: ch.Revision}
		e.el.PEID = cmp.Or(e.el.PEID, ch.PEID)
		if i, ok := pc.find(e.el.PEID); ok {
			pc.members[i] = e // news after the report: no longer failed
		} else {
			pc.members = slices.Insert(pc.members, i, e)
		}
		// Name servers take a policy other than the pool's only from a PE
		// that is its only member, so the latest add or update names it.
		pc.setPolicy(e.el.Policy.Name)
		return true
	}
	return false
}

// load replaces the members with a snapshot (add changes in PE id order),
// under mu. PEs reported failed stay so while they are in the pool: a
// snapshot shows no news about them (renewals change nothing watchers see).
func (pc *PoolCache) load(snap []events.Change) {
	old := pc.members
	pc.members = make([]*cacheEntry, 0, len(snap))
	var latest *cacheEntry
	for _, ch := range snap {
		if ch.Element == nil {
			continue
		}
		e := &cacheEntry{el: *ch.Element, rev: ch.Revision}
		e.el.PEID = cmp.Or(e.el.PEID, ch.PEID)
		if i, ok := slices.BinarySearchFunc(old, e.el.PEID, cmpEntry); ok {
			e.failed = old[i].failed
		}
		pc.members = append(pc.members, e)
		if latest == nil || e.rev > latest.rev {
			latest = e
		}
	}
	slices.SortFunc(pc.members, func(a, b *cacheEntry) int { return cmp.Compare(a.el.PEID, b.el.PEID) })
	if latest == nil {
		pc.policy, pc.picker = "", nil
		return
	}
	pc.setPolicy(latest.el.Policy.Name)
}

// setPolicy makes name the pool's policy, with a new picker if it changed.
func (pc *PoolCache) setPolicy(name string) {
	name = cmp.Or(name, policy.Default)
	if name == pc.policy && pc.picker != nil {
		return
	}
	b, ok := policy.Get(name)
	if !ok {
		pc.log.Warn("unknown pool policy, picking with the default", "policy", name, "default", policy.Default)
		b, _ = policy.Get(policy.Default)
	}
	pc.policy, pc.picker = name, b.Build()
}

// resync reads the pool afresh with a new watch, which then replaces the
// current one. The new watch subscribed before reading, so every change the
// old one has not delivered yet is in its snapshot or in its queue.
func (pc *PoolCache) resync(ctx context.Context) {
	w, err := pc.c.startWatch(ctx, pc.pool)
	if err != nil {
		if ctx.Err() == nil {
			pc.log.Warn("cache resync failed", "err", err)
		}
		return
	}
	pc.mu.Lock()
	old := pc.w
	pc.w = w
	pc.load(w.snap)
	pc.publish()
	pc.mu.Unlock()
	old.stop()
}

// publish builds the snapshot Pick reads from the members, under mu.
func (pc *PoolCache) publish() {
	s := &cacheSnap{policy: pc.policy, picker: pc.picker}
	n := 0
	for _, e := range pc.members {
		if !e.failed {
			n++
		}
	}
	s.elems = make([]events.Element, 0, n)
	s.cands = make([]policy.Candidate, 0, n)
	for _, e := range pc.members {
		if e.failed {
			continue
		}
		s.elems = append(s.elems, e.el)
		s.cands = append(s.cands, policy.CandidateOf(e.el.PEID, e.rev, e.el.Policy, e.el.Meta))
	}
	pc.snap.Store(s)
}

// find returns the index of id in the sorted members, under mu.
func (pc *PoolCache) find(id string) (int, bool) {
	return slices.BinarySearchFunc(pc.members, id, cmpEntry)
}

func cmpEntry(e *cacheEntry, id string) int { return cmp.Compare(e.el.PEID, id) }

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
