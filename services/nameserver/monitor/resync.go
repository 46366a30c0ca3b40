package monitor

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// Keeping open pages in line with the replica's view. The pages learn the
// changes from the change subjects; the ones published while this
// replica's NATS connection was down (or dropped by a slow subscription)
// never reach them, though the view learns them from the bucket. So, while
// pages are open, the monitor keeps a mirror of what the pages were told
// (the view when the first page opened, then every change sent) and
// compares it with the view every reconcileEvery: a PE the view no longer
// holds goes to the pages as a "remove", one the pages lack as an "add",
// one whose element differs as an "update", once the difference has lasted
// reconcileGrace (a change message may arrive a little after the view
// shows its revision, or before). So the pages are back in line within
// about reconcileGrace + 2 reconcileEvery (0.7 s) of the view, after a
// reconnect or anything else.
//
// The view does not keep the reason of a removal; a removal found this way
// goes out with reason "expired" (the bucket's purge marker, when it is
// still there, names the real reason: Rsp-Reason).

const (
	reconcileEvery = 200 * time.Millisecond
	reconcileGrace = 300 * time.Millisecond
)

// mirror is what the pages were told of each pool.
type mirror struct {
	mu    sync.Mutex
	on    bool                          // filled from the view; off while no page is open
	pools map[poolKey]map[string]*shown // pool → PE id
	// odd holds since when each PE has differed from the view.
	odd map[peKey]time.Time
}

type poolKey struct{ scope, pool string }

type peKey struct {
	poolKey
	id string
}

type shown struct {
	rev uint64
	el  events.Element
}

func newMirror() *mirror {
	return &mirror{pools: map[poolKey]map[string]*shown{}, odd: map[peKey]time.Time{}}
}

// sent records a change sent to the pages.
func (mr *mirror) sent(ch events.Change) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if !mr.on {
		return
	}
	k := poolKey{ch.Scope, ch.Pool}
	pes := mr.pools[k]
	switch ch.Op {
	case events.OpRemove:
		if pes[ch.PEID] != nil && pes[ch.PEID].rev < ch.Revision {
			delete(pes, ch.PEID)
			if len(pes) == 0 {
				delete(mr.pools, k)
			}
		}
	case events.OpAdd, events.OpUpdate:
		if ch.Element == nil {
			return
		}
		if pes == nil {
			pes = map[string]*shown{}
			mr.pools[k] = pes
		}
		if old := pes[ch.PEID]; old == nil || old.rev < ch.Revision {
			pes[ch.PEID] = &shown{rev: ch.Revision, el: *ch.Element}
		}
	}
}

// off forgets the mirror: no page is open.
func (mr *mirror) off() {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if mr.on {
		mr.on = false
		clear(mr.pools)
		clear(mr.odd)
	}
}

// viewPool is one pool of a replica's view.
type viewPool struct {
	sum  server.PoolSummary
	recs []events.Record
}

// readView reads the pools of the attached replicas' views.
func (m *Monitor) readView() map[poolKey]viewPool {
	out := map[poolKey]viewPool{}
	for _, s := range m.scopeServers() {
		for _, sum := range s.n.PoolSummaries(s.scope) {
			if sum, recs, ok := s.n.Pool(s.scope, sum.Pool); ok {
				out[poolKey{s.scope, sum.Pool}] = viewPool{sum, recs}
			}
		}
	}
	return out
}

// reconcileLoop brings the pages in line with the view until Close.
func (m *Monitor) reconcileLoop() {
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-m.done:
			return
		case now := <-t.C:
			if m.clientCount() == 0 {
				m.mirror.off()
				continue
			}
			for _, msg := range m.mirror.reconcile(m.readView(), now) {
				m.broadcast("change", msg)
			}
		}
	}
}

// reconcile compares the mirror with the view read at now and returns the
// change messages for the differences that lasted reconcileGrace, which
// it applies to the mirror. The first call after off fills the mirror.
func (mr *mirror) reconcile(view map[poolKey]viewPool, now time.Time) []changeMsg {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if !mr.on {
		for k, vp := range view {
			pes := make(map[string]*shown, len(vp.recs))
			for _, rec := range vp.recs {
				pes[rec.PEID] = &shown{rev: vp.sum.Revision, el: rec.Element()}
			}
			mr.pools[k] = pes
		}
		mr.on = true
		return nil
	}
	var out []changeMsg
	differ := map[peKey]bool{} // differing in this pass, not yet due
	due := func(k peKey) bool {
		since, ok := mr.odd[k]
		if !ok {
			mr.odd[k], since = now, now
		}
		if now.Sub(since) < reconcileGrace {
			differ[k] = true
			return false
		}
		delete(mr.odd, k)
		return true
	}
	msg := func(k peKey, op, reason string, rev uint64, el *events.Element, rec *events.Record, policy string) {
		out = append(out, changeMsg{Time: now.UTC(), Policy: policy, Record: rec,
			Change: events.Change{Scope: k.scope, Pool: k.pool, Revision: rev, Op: op, PEID: k.id, Reason: reason, Element: el}})
	}
	inView := map[peKey]bool{}
	for _, k := range sortedKeys(view) {
		vp := view[k]
		for i := range vp.recs {
			rec := &vp.recs[i]
			pk := peKey{k, rec.PEID}
			inView[pk] = true
			el := rec.Element()
			sh := mr.pools[k][rec.PEID]
			if (sh != nil && sameElement(&sh.el, &el)) || !due(pk) {
				continue
			}
			op, reason := events.OpAdd, events.ReasonRegistered
			if sh != nil {
				op, reason = events.OpUpdate, events.ReasonUpdated
			}
			if mr.pools[k] == nil {
				mr.pools[k] = map[string]*shown{}
			}
			mr.pools[k][rec.PEID] = &shown{rev: vp.sum.Revision, el: el}
			msg(pk, op, reason, vp.sum.Revision, &el, rec, vp.sum.Policy)
		}
	}
	for _, k := range sortedKeys(mr.pools) {
		pes := mr.pools[k]
		for _, id := range slices.Sorted(maps.Keys(pes)) {
			pk := peKey{k, id}
			if inView[pk] || !due(pk) {
				continue
			}
			sh := pes[id]
			delete(pes, id)
			policy, rev := "", sh.rev+1 // the removal's revision is above the PE's
			if vp, ok := view[k]; ok {
				policy, rev = vp.sum.Policy, max(rev, vp.sum.Revision)
			}
			msg(pk, events.OpRemove, events.ReasonExpired, rev, &sh.el, nil, policy)
		}
		if len(pes) == 0 {
			delete(mr.pools, k)
		}
	}
	// A difference that went away by itself is forgotten.
	maps.DeleteFunc(mr.odd, func(k peKey, _ time.Time) bool { return !differ[k] })
	return out
}

func sortedKeys[V any](m map[poolKey]V) []poolKey {
	return slices.SortedFunc(maps.Keys(m), func(a, b poolKey) int {
		return cmp.Or(strings.Compare(a.scope, b.scope), strings.Compare(a.pool, b.pool))
	})
}

// sameElement tells whether two elements show the same PE.
func sameElement(a, b *events.Element) bool {
	return a.PEID == b.PEID && a.Policy == b.Policy && slices.Equal(a.Transports, b.Transports) && maps.Equal(a.Meta, b.Meta)
}
