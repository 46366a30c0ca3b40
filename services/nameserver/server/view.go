package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// member is one PE of a pool as the view holds it.
type member struct {
	rev uint64
	// added is the revision at which the PE joined the pool, as far as
	// this view knows (the first revision of it the view applied).
	added uint64
	rec   events.Record
	elem  []byte // JSON of rec.Element(), encoded once per change
	// expires is rec.UpdatedAt + lifetime in Unix nanoseconds: the
	// deadline unless a hold moved it later (expiry.go).
	expires int64
}

func newMember(rev, added uint64, rec *events.Record) *member {
	return &member{rev: rev, added: added, rec: *rec, elem: events.Marshal(rec.Element()),
		expires: rec.UpdatedAt.Add(time.Duration(rec.LifetimeMS) * time.Millisecond).UnixNano()}
}

// lifetime of m in nanoseconds.
func (m *member) lifetime() int64 { return m.rec.LifetimeMS * int64(time.Millisecond) }

// overdue tells whether m's lifetime ran out by now, a hold ending at held
// counted (both Unix nanoseconds; now is appliedUpTo, expiry.go), or by the
// checkpoint cp.
func (m *member) overdue(now, held int64, cp *checkpoint) bool {
	return (m.expires <= now && held+m.lifetime() <= now) ||
		(cp != nil && m.expires <= cp.applied && cp.held+m.lifetime() <= cp.applied)
}

// pool is an immutable snapshot of one pool; a change builds a new one, so
// resolutions read it without locks.
type pool struct {
	name    string
	policy  string
	picker  policy.Picker // shared by the snapshots of one pool: it keeps the policy's state
	stats   *poolStats    // shared by the snapshots of one pool
	rev     uint64        // revision of the change that made this snapshot
	members []*member     // sorted by PE id
	cands   []policy.Candidate
	// earliest is the smallest expires of the members: until then no
	// member can be overdue, and resolution checks none.
	earliest int64
}

// poolStats counts what happens to a pool across its snapshots.
type poolStats struct {
	resolutions atomic.Uint64 // answers with PEs of this pool
}

// view is the in-memory name space of one scope, kept current by a watch
// of the scope's bucket.
type view struct {
	scope string
	log   *slog.Logger

	mu       sync.RWMutex
	pools    map[string]*pool
	revision uint64
	// gone keeps the last record of recently removed keys, so an expiry
	// change can still show the element that expired.
	gone map[string]events.Record
	// marks holds, per pool and PE id, the purge marker the bucket keeps
	// for a removed PE (until its id registers again): read answers
	// tell the removals after a revision (reader.go).
	marks map[string]map[string]*mark
	// owned counts the live PEs of each signer (quota.go).
	owned map[string]int
	// changed is closed and replaced at every applied entry.
	changed chan struct{}
	// byConn indexes the live PEs by the NATS connection their record
	// names (events.Conn): the keys of each connection.
	byConn map[events.Conn]map[string]struct{}
	// resyncing holds the keys a restarted watch delivered so far; nil
	// outside a re-sync.
	resyncing map[string]struct{}
	// held is when lifetimes were last held (Unix nanoseconds): no PE's
	// lifetime counts from earlier (expiry.go).
	held atomic.Int64
	// passed is when the last probe of the path of renewals passed (Unix
	// nanoseconds); 0 while it fails (expiry.go).
	passed atomic.Int64
	// applied: every event stored before it has been applied (Unix
	// nanoseconds), as the last passed probe found; no PE is overdue
	// before its deadline has passed it (expiry.go).
	applied atomic.Int64
	// cp is the newest expiry checkpoint known (expiry.go); nil: none.
	cp atomic.Pointer[checkpoint]
}

const maxGone = 4096

func newView(scope string, log *slog.Logger) *view {
	v := &view{scope: scope, log: log, pools: map[string]*pool{}, gone: map[string]events.Record{}, marks: map[string]map[string]*mark{}, owned: map[string]int{}, changed: make(chan struct{}),
		byConn: map[events.Conn]map[string]struct{}{}}
	v.hold(time.Now()) // a replica starts holding (expiry.go)
	return v
}

// run applies the bucket watch to the view until ctx ends. ready is closed
// once the initial state is loaded. The watch is restarted when it ends or
// stalls (see keepWatching), and the view re-synced from its initial
// values.
func (v *view) run(ctx context.Context, kv jetstream.KeyValue, ready chan<- struct{}) error {
	err := keepWatching(ctx, watchSpec{
		what: "bucket " + kv.Bucket(), log: v.log,
		start: func(ctx context.Context) (jetstream.KeyWatcher, error) { return kv.WatchAll(ctx) },
		latest: func(ctx context.Context) (uint64, error) {
			st, err := kv.Status(ctx)
			if err != nil {
				return 0, err
			}
			if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
				return bs.StreamInfo().State.LastSeq, nil
			}
			return 0, nil
		},
		resync: v.beginResync,
		apply:  v.apply,
		synced: v.endResync,
	}, ready)
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", kv.Bucket(), err)
	}
	return nil
}

// beginResync starts noting the keys the restarted watch delivers.
func (v *view) beginResync() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resyncing = map[string]struct{}{}
}

// endResync ends the initial values of a watch: after a restart, the PEs
// the watch did not deliver are gone from the store and leave the view;
// the view now reflects every revision up to upTo.
func (v *view) endResync(upTo uint64) {
	v.mu.Lock()
	seen := v.resyncing
	v.resyncing = nil
	var stale []string
	if seen != nil {
		for name, p := range v.pools {
			for _, m := range p.members {
				if _, ok := seen[events.Key(name, m.rec.PEID)]; !ok {
					stale = append(stale, events.Key(name, m.rec.PEID))
				}
			}
		}
	}
	v.mu.Unlock()
	for _, key := range stale {
		v.remove(key)
		v.log.Info("PE left the view on re-sync: it is no longer in the store", "key", key)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if upTo > v.revision {
		v.revision = upTo
	}
	close(v.changed)
	v.changed = make(chan struct{})
}

func (v *view) apply(e jetstream.KeyValueEntry) {
	var rec *events.Record
	if e.Operation() == jetstream.KeyValuePut {
		rec = new(events.Record)
		if err := json.Unmarshal(e.Value(), rec); err != nil {
			v.log.Warn("ignoring undecodable record", "key", e.Key(), "err", err)
			v.mu.Lock()
			defer v.mu.Unlock()
			v.revision = max(v.revision, e.Revision())
			close(v.changed)
			v.changed = make(chan struct{})
			if v.resyncing != nil {
				v.resyncing[e.Key()] = struct{}{} // left as it was
			}
			return
		}
	}
	v.set(e.Key(), e.Revision(), rec)
}

// remove takes key out of the view (a re-sync found it gone).
func (v *view) remove(key string) { v.set(key, 0, nil) }

// set applies revision rev of key: its record, or nil when the key is
// gone.
func (v *view) set(key string, rev uint64, rec *events.Record) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if rev > v.revision {
		v.revision = rev
	}
	if v.resyncing != nil {
		v.resyncing[key] = struct{}{}
	}
	close(v.changed)
	v.changed = make(chan struct{})
	poolName, id, ok := events.SplitKey(key)
	if !ok {
		return
	}
	old := v.pools[poolName]
	if old != nil {
		if i, found := old.find(id); found {
			v.unindex(key, old.members[i].rec.Conn)
			if signer := old.members[i].rec.Signer; v.owned[signer] <= 1 {
				delete(v.owned, signer)
			} else {
				v.owned[signer]--
			}
		}
	}
	if rec == nil {
		v.mark(poolName, id, rev)
		if old != nil {
			if i, found := old.find(id); found {
				if len(v.gone) >= maxGone {
					clear(v.gone)
				}
				v.gone[key] = old.members[i].rec
			}
		}
		if p := old.without(id, rev); p != nil {
			v.pools[poolName] = p
		} else {
			delete(v.pools, poolName)
		}
		return
	}
	delete(v.gone, key)
	v.unmark(poolName, id)
	v.owned[rec.Signer]++
	added := rev
	if old != nil {
		if i, found := old.find(id); found {
			added = old.members[i].added
		}
	}
	if c := rec.Conn; c != nil {
		keys := v.byConn[*c]
		if keys == nil {
			keys = map[string]struct{}{}
			v.byConn[*c] = keys
		}
		keys[key] = struct{}{}
	}
	v.pools[poolName] = old.with(poolName, newMember(rev, added, rec))
}

// unindex drops key from the index of conn. The caller holds v.mu.
func (v *view) unindex(key string, c *events.Conn) {
	if c == nil {
		return
	}
	if keys := v.byConn[*c]; keys != nil {
		delete(keys, key)
		if len(keys) == 0 {
			delete(v.byConn, *c)
		}
	}
}

// onConn returns the keys of the live PEs whose record names connection c.
func (v *view) onConn(c events.Conn) []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	keys := make([]string, 0, len(v.byConn[c]))
	for k := range v.byConn[c] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// member returns the record of key and its revision if the PE is in the
// view.
func (v *view) member(key string) (events.Record, uint64, bool) {
	poolName, id, _ := events.SplitKey(key)
	v.mu.RLock()
	defer v.mu.RUnlock()
	if p := v.pools[poolName]; p != nil {
		if i, found := p.find(id); found {
			return p.members[i].rec, p.members[i].rev, true
		}
	}
	return events.Record{}, 0, false
}

// live returns the record of key if the PE is in the view.
func (v *view) live(key string) (events.Record, bool) {
	rec, _, ok := v.member(key)
	return rec, ok
}

// find returns the index of id in the sorted members.
func (p *pool) find(id string) (int, bool) {
	return slices.BinarySearchFunc(p.members, id, func(m *member, id string) int {
		return cmpString(m.rec.PEID, id)
	})
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// with returns a copy of p (nil: a new pool) with m added or replaced.
func (p *pool) with(name string, m *member) *pool {
	np := &pool{name: name, rev: m.rev}
	if p != nil {
		np.policy, np.picker, np.stats = p.policy, p.picker, p.stats
		np.members = slices.Clone(p.members)
	} else {
		np.stats = &poolStats{}
	}
	// The first PE sets the pool's policy; the only PE may change it.
	onlySelf := len(np.members) == 1 && np.members[0].rec.PEID == m.rec.PEID
	if np.picker == nil || (onlySelf && np.policy != m.rec.Policy.Name) {
		// A record written past the registrar (by hand, by an older
		// version) may name a policy this replica lacks: the pool then
		// uses, and answers name, the default. Only known names reach
		// the answer, which resolve writes without escaping.
		b, ok := policy.Get(m.rec.Policy.Name)
		if !ok {
			b, _ = policy.Get(policy.Default)
		}
		np.policy, np.picker = b.Name(), b.Build()
	}
	if i, found := np.find(m.rec.PEID); found {
		np.members[i] = m
	} else {
		np.members = slices.Insert(np.members, i, m)
	}
	np.cands, np.earliest = candidates(np.members)
	return np
}

// without returns a copy of p without id (at revision rev), or nil when
// nothing is left.
func (p *pool) without(id string, rev uint64) *pool {
	if p == nil {
		return nil
	}
	i, found := p.find(id)
	if !found {
		return p
	}
	if len(p.members) == 1 {
		return nil
	}
	np := &pool{name: p.name, policy: p.policy, picker: p.picker, stats: p.stats, rev: max(rev, p.rev)}
	np.members = slices.Delete(slices.Clone(p.members), i, i+1)
	np.cands, np.earliest = candidates(np.members)
	return np
}

// candidates returns the policy's view of ms and their earliest expires.
func candidates(ms []*member) ([]policy.Candidate, int64) {
	c := make([]policy.Candidate, len(ms))
	earliest := int64(math.MaxInt64)
	for i, m := range ms {
		c[i] = policy.CandidateOf(m.rec.PEID, m.rev, m.rec.Policy, m.rec.Meta)
		earliest = min(earliest, m.expires)
	}
	return c, earliest
}

// hold makes every lifetime count from t at the earliest.
func (v *view) hold(t time.Time) {
	n := t.UnixNano()
	for {
		old := v.held.Load()
		if n <= old || v.held.CompareAndSwap(old, n) {
			return
		}
	}
}

// heldTime is when lifetimes were last held.
func (v *view) heldTime() time.Time { return time.Unix(0, v.held.Load()) }

// overdue returns the keys of the PEs whose lifetime ran out by upTo.
func (v *view) overdue(upTo time.Time) []string {
	t, held, cp := upTo.UnixNano(), v.held.Load(), v.cp.Load()
	if cp != nil {
		t = max(t, cp.applied)
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	var keys []string
	for name, p := range v.pools {
		if p.earliest > t {
			continue
		}
		for _, m := range p.members {
			if m.overdue(upTo.UnixNano(), held, cp) {
				keys = append(keys, events.Key(name, m.rec.PEID))
			}
		}
	}
	return keys
}

// waitFor waits until the view has applied revision rev, at most d. The
// registrar uses it so that a PE told "accepted" resolves at once.
func (v *view) waitFor(rev uint64, d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		v.mu.RLock()
		done, changed := v.revision >= rev, v.changed
		v.mu.RUnlock()
		if done {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

func (v *view) pool(name string) (*pool, uint64) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.pools[name], v.revision
}

// poolPolicy returns the policy of pool, ignoring PE id self (a PE that is
// the only member may change it); "" when the pool has no other member.
func (v *view) poolPolicy(name, self string) string {
	p, _ := v.pool(name)
	if p == nil {
		return ""
	}
	for _, m := range p.members {
		if m.rec.PEID != self {
			return p.policy
		}
	}
	return ""
}

// last returns the record of key, live or recently removed.
func (v *view) last(key string) (events.Record, bool) {
	poolName, id, _ := events.SplitKey(key)
	v.mu.RLock()
	defer v.mu.RUnlock()
	if p := v.pools[poolName]; p != nil {
		if i, found := p.find(id); found {
			return p.members[i].rec, true
		}
	}
	r, ok := v.gone[key]
	return r, ok
}

// resolve writes the answer for pool to b (reset first); picks is scratch
// space for the policy's picks (capacity events.MaxMax+1 spares
// allocations).
func (v *view) resolve(poolName string, q *events.ResolveRequest, picks []int, b *bytes.Buffer) *events.Error {
	p, rev := v.pool(poolName)
	if p == nil {
		return &events.Error{Code: events.CodeNotFound, Message: "no pool " + poolName + " in scope " + v.scope}
	}
	members, cands := p.members, p.cands
	now, cp := v.applied.Load(), v.cp.Load()
	if now >= p.earliest || (cp != nil && cp.applied >= p.earliest) {
		// Some lifetime may have run out, not yet swept: leave it out.
		held := v.held.Load()
		members, cands = filtered(members, cands, func(m *member) bool { return !m.overdue(now, held, cp) })
		if len(members) == 0 {
			return &events.Error{Code: events.CodeNotFound, Message: "no PE of pool " + poolName + " is within its lifetime"}
		}
	}
	if len(q.Exclude) > 0 {
		members, cands = filtered(members, cands, func(m *member) bool { return !slices.Contains(q.Exclude, m.rec.PEID) })
		if len(members) == 0 {
			return &events.Error{Code: events.CodeNotFound, Message: "every PE of pool " + poolName + " is excluded"}
		}
	}
	chosen := picks[:0]
	want := q.Max
	aff := -1
	if q.Affinity != "" {
		for i, m := range members {
			if m.rec.PEID == q.Affinity {
				aff = i
				chosen = append(chosen, i)
				break
			}
		}
	}
	chosen = policy.Select(p.picker, chosen, cands, min(want+len(chosen), len(cands)), q.Hint)
	p.stats.resolutions.Add(1)

	b.Reset()
	b.WriteString(`{"scope":"`)
	b.WriteString(v.scope)
	b.WriteString(`","pool":"`)
	b.WriteString(poolName)
	b.WriteString(`","policy":"`)
	b.WriteString(p.policy)
	b.WriteString(`","revision":`)
	b.Write(strconv.AppendUint(b.AvailableBuffer(), rev, 10))
	b.WriteString(`,"elements":[`)
	n := 0
	for k, i := range chosen {
		if n == want || (k > 0 && i == aff) {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.Write(members[i].elem)
		n++
	}
	b.WriteString("]}")
	return nil
}

// filtered returns the members that keep, with their candidates.
func filtered(ms []*member, cs []policy.Candidate, keep func(*member) bool) ([]*member, []policy.Candidate) {
	var om []*member
	var oc []policy.Candidate
	for i, m := range ms {
		if keep(m) {
			om = append(om, m)
			oc = append(oc, cs[i])
		}
	}
	return om, oc
}

// PoolSummary is a pool as one replica's view holds it.
type PoolSummary struct {
	Pool   string
	Policy string
	// Size is the number of PEs.
	Size int
	// Revision is the bucket revision of the last change of the pool;
	// it moves at every registration, renewal and removal of its PEs.
	Revision uint64
	// Resolutions answered with PEs of this pool by this replica since
	// the pool last appeared.
	Resolutions uint64
}

func (p *pool) summary() PoolSummary {
	return PoolSummary{Pool: p.name, Policy: p.policy, Size: len(p.members), Revision: p.rev, Resolutions: p.stats.resolutions.Load()}
}

// summaries lists the pools, sorted by name.
func (v *view) summaries() []PoolSummary {
	v.mu.RLock()
	out := make([]PoolSummary, 0, len(v.pools))
	for _, p := range v.pools {
		out = append(out, p.summary())
	}
	v.mu.RUnlock()
	slices.SortFunc(out, func(a, b PoolSummary) int { return cmpString(a.Pool, b.Pool) })
	return out
}

// records returns the summary and the PE records of pool, sorted by PE id.
func (v *view) records(name string) (PoolSummary, []events.Record, bool) {
	p, _ := v.pool(name)
	if p == nil {
		return PoolSummary{}, nil, false
	}
	recs := make([]events.Record, len(p.members))
	for i, m := range p.members {
		recs[i] = m.rec
	}
	return p.summary(), recs, true
}

// ownedBy is the number of live PEs whose records name signer.
func (v *view) ownedBy(signer string) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.owned[signer]
}
