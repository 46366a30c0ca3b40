package rspclient

import (
	"cmp"
	"context"
	"errors"
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

// WithResync sets the period of the cache's routine resync, a read of the
// pool's members from the name space (default DefaultResync); d ≤ 0 turns
// it off. Resyncs after reconnects and name-server restarts happen
// anyway (see Watcher).
func WithResync(d time.Duration) CacheOption {
	return func(o *cacheOptions) error {
		o.resync = max(d, 0)
		return nil
	}
}

// PoolCache is a local copy of every member of one pool, kept current by a
// watch of the pool (Client.Watcher: the change notifications, and resyncs
// after reconnects, name-server restarts and every resync period), that
// selects PEs with the pool's policy in process, without asking a name
// server: RFC 5352's ASAP cache. It is safe for concurrent use. Make it
// with Client.Cache.
//
// A cache does not see renewals (they make no change notification): a PE
// leaves it when a name server announces its removal (deregistered,
// expired, failed, disconnected) or when a resync finds it gone from the
// name space. While a resync fails (the client is cut off from NATS, or
// JetStream does not answer), the cache keeps serving the members it has
// and tries again with backoff, about every second, never giving up;
// SyncState tells since when it is behind. That is what the name space
// itself does meanwhile: name servers hold every PE's lifetime while
// renewals cannot be stored, so a PE the cache still holds is one the
// name space still holds; a PE that really died is caught by the PU's
// failover (ReportFailure drops it at once), and by the resync that
// succeeds once the store answers again.
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
	w       *poolWatch    // the watch that keeps the cache current

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
	w, first, err := c.follow(ctx, pool, 0)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", pool, err)
	}
	rctx, cancel := context.WithCancel(ctx)
	pc := &PoolCache{c: c, pool: pool, log: c.log.With("pool", pool), w: w, cancel: cancel, done: make(chan struct{})}
	// In revision order: the latest add names the pool's policy.
	slices.SortFunc(first, func(a, b events.Change) int { return cmp.Compare(a.Revision, b.Revision) })
	pc.apply(first)
	pc.publishIfEmpty()
	go func() {
		defer close(pc.done)
		defer w.stop()
		err := w.run(rctx, o.resync, nil, func(batch []events.Change) bool {
			pc.apply(batch)
			return true
		})
		if errors.Is(err, ErrWatchClosed) {
			pc.log.Debug("cache stopped: subscription closed")
		}
	}()
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

// apply applies a batch of news (changes the merger let through) and
// publishes the result once.
func (pc *PoolCache) apply(batch []events.Change) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	changed := false
	for _, ch := range batch {
		if pc.applyChange(ch) {
			changed = true
		}
	}
	if changed {
		pc.publish()
	}
}

// publishIfEmpty publishes the empty cache when nothing was published yet.
func (pc *PoolCache) publishIfEmpty() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.snap.Load() == nil {
		pc.publish()
	}
}

// SyncState tells how current the cache is: synced is when it last read
// its pool from the name space (at the start, then at each resync), and
// err the error of the last attempt when a resync is due and failing
// (nil otherwise). Meanwhile the cache serves the members it has, kept
// current by the change notifications it still receives.
func (pc *PoolCache) SyncState() (synced time.Time, err error) {
	if e := pc.w.failing.Load(); e != nil {
		err = *e
	}
	return time.Unix(0, pc.w.syncedAt.Load()), err
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
